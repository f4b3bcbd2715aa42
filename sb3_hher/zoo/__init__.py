"""
rl-zoo3 integration: ``register()`` adds sb3-hher's algorithms (``her_ddpg``, ``her_td3``, ``her_tqc``,
``hher``) to rl-zoo3,
``python -m sb3_hher.zoo <script> [zoo flags]`` runs zoo's scripts with them. Nothing else in sb3-hher imports
this package, and importing it does not import rl-zoo3 (``register()`` does).
"""

from sb3_hher.zoo.registration import find_config, register, zoo_algorithms

__all__ = ["find_config", "register", "zoo_algorithms"]
