"""``python -m sb3_hher.zoo <script> [rl-zoo3 flags]``: see ``sb3_hher.zoo.cli``."""

from sb3_hher.zoo.cli import main

if __name__ == "__main__":
    main()
