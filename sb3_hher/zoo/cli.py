"""
``python -m sb3_hher.zoo <script> [zoo flags]`` (also installed as ``sb3-hher-zoo``): rl-zoo3's scripts with
sb3-hher's algorithms registered and gymnasium-robotics' envs available. Every flag goes to zoo unchanged::

    python -m sb3_hher.zoo train --algo her_ddpg --env FetchPush-v4
    python -m sb3_hher.zoo enjoy --algo her_ddpg --env FetchPush-v4 -f logs/ --no-render
    python -m sb3_hher.zoo plot_train --algo her_ddpg --env FetchPush-v4 -f logs/ -y success
"""

from __future__ import annotations

import importlib
import runpy
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

PROG = "python -m sb3_hher.zoo"

# Zoo scripts that are functions (rl_zoo3/cli.py's table, plus the plots) ...
FUNCTION_SCRIPTS = {
    "train": ("rl_zoo3.train", "train"),
    "enjoy": ("rl_zoo3.enjoy", "enjoy"),
    "plot_train": ("rl_zoo3.plots", "plot_train"),
    "plot_from_file": ("rl_zoo3.plots", "plot_from_file"),
    "all_plots": ("rl_zoo3.plots", "all_plots"),
}
# ... and those that only run as ``python -m rl_zoo3.<name>``.
MODULE_SCRIPTS = ("record_video", "record_training", "benchmark", "push_to_hub", "load_from_hub")
SCRIPTS = (*FUNCTION_SCRIPTS, *MODULE_SCRIPTS)


def _usage() -> str:
    return (
        f"usage: {PROG} {{{','.join(SCRIPTS)}}} [rl-zoo3 flags ...]\n\n"
        "Runs rl-zoo3's script with sb3-hher's algorithms (her_ddpg, her_td3, her_tqc, hher) registered and\n"
        "gymnasium-robotics' envs (Fetch, PointMaze, ...) available. Flags are rl-zoo3's, unchanged:\n"
        f"`{PROG} train --help` lists them."
    )


def _through_sb3_hher(command: Any) -> Any:
    """
    Rewrite a zoo script's child command so that it runs with sb3-hher registered: zoo's ``benchmark`` calls
    ``python enjoy.py ...`` and ``record_training`` calls ``python -m rl_zoo3.record_video ...``.
    """
    if not isinstance(command, list | tuple) or len(command) < 2 or command[0] != "python":
        return command
    command = list(command)
    if command[1] == "enjoy.py":
        return [sys.executable, "-m", "sb3_hher.zoo", "enjoy", *command[2:]]
    if command[1] == "-m" and len(command) > 2 and command[2].startswith("rl_zoo3."):
        script = command[2].removeprefix("rl_zoo3.")
        if script in SCRIPTS:
            return [sys.executable, "-m", "sb3_hher.zoo", script, *command[3:]]
    return command


@contextmanager
def _zoo_children_through_sb3_hher() -> Iterator[None]:
    original_call = subprocess.call

    def call(command: Any, *args: Any, **kwargs: Any) -> int:
        return original_call(_through_sb3_hher(command), *args, **kwargs)

    subprocess.call = call  # type: ignore[assignment]
    try:
        yield
    finally:
        subprocess.call = original_call


def prepare() -> None:
    """Register gymnasium-robotics' envs (zoo does not import them) and sb3-hher's algorithms."""
    from sb3_hher.common.goal_env import import_robotics
    from sb3_hher.zoo.registration import register

    import_robotics()
    register()


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run an rl-zoo3 script with sb3-hher registered.

    :param argv: ``[script, *zoo_flags]``; defaults to ``sys.argv[1:]``
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    script, flags = args[0], args[1:]
    if script not in SCRIPTS:
        print(_usage(), file=sys.stderr)
        raise SystemExit(f"{PROG}: unknown script {script!r}, choose one of {', '.join(SCRIPTS)}")

    prepare()
    # Zoo's scripts parse sys.argv themselves.
    sys.argv = [f"{PROG} {script}", *flags]
    with _zoo_children_through_sb3_hher():
        if script in FUNCTION_SCRIPTS:
            module_name, function_name = FUNCTION_SCRIPTS[script]
            getattr(importlib.import_module(module_name), function_name)()
        else:
            runpy.run_module(f"rl_zoo3.{script}", run_name="__main__", alter_sys=True)
