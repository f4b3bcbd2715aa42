"""
Command line for demonstrations::

    python -m sb3_hher.demos generate --env FetchPickAndPlace-v4 --n-episodes 100 --out demos.npz [--seed 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sb3_hher.demos.controllers import CONTROLLERS, generate_demonstrations
from sb3_hher.demos.io import FORMATS, save_demonstrations


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sb3_hher.demos", description=__doc__.split("::")[0].strip())
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser(
        "generate",
        help="record episodes of a scripted controller",
        description=f"Record episodes of the scripted controller for a task ({', '.join(CONTROLLERS)}; any version).",
    )
    generate.add_argument("--env", required=True, help="gymnasium id, e.g. FetchPickAndPlace-v4")
    generate.add_argument("--n-episodes", type=int, default=100, help="episodes to write (default: 100)")
    generate.add_argument("--out", required=True, help="output .npz file")
    generate.add_argument("--seed", type=int, default=0, help="seed of the env's first reset (default: 0)")
    generate.add_argument(
        "--only-successful",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write only successful episodes, playing until there are --n-episodes of them (default: on)",
    )
    generate.add_argument(
        "--format", choices=FORMATS, default="sb3_hher", help="file layout (default: sb3_hher; baselines: obs/acs/info)"
    )
    generate.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the command line.

    :param argv: Arguments (default: ``sys.argv[1:]``)
    """
    args = _parser().parse_args(argv)
    demos, stats = generate_demonstrations(
        args.env,
        args.n_episodes,
        seed=args.seed,
        only_successful=args.only_successful,
        progress_bar=not args.no_progress_bar,
    )
    save_demonstrations(args.out, demos, env_id=args.env, format=args.format)
    print(
        f"Controller success rate on {args.env}: {stats.success_rate:.1%} "
        f"({stats.successes} of {stats.episodes} episodes, seed {args.seed})"
    )
    print(f"Wrote {demos.n_episodes} episodes of {demos.episode_length} steps to {args.out}")


if __name__ == "__main__":
    main()
