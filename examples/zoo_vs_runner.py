"""
Zoo-trained runs beside benchmark-runner runs of the same configuration: one table and one plot.

rl-zoo3 writes each run's test evaluations to ``<log>/<algo>/<env>_<id>/evaluations.npz`` (``successes`` holds one
flag per test episode) and its seed to ``<env>_<id>/<env>/args.yml``; this script turns them into runner CSVs under
``<out>/zoo/runs`` and compares them with a runner folder through ``sb3_hher.benchmark.compare``::

    python examples/zoo_vs_runner.py --zoo-log logs/her_ddpg --env FetchPush-v4 --runner runner-out \\
        --at 10000 20000 30000 --out docs/benchmarks/zoo-vs-runner-fetchpush-v4-demos
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from sb3_hher.benchmark import compare
from sb3_hher.zoo.results import zoo_runs_to_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo-log", type=Path, required=True, help="zoo's <log>/<algo> folder")
    parser.add_argument("--env", required=True)
    parser.add_argument("--runner", type=Path, required=True, help="benchmark runner output folder")
    parser.add_argument("--at", nargs="+", type=int, required=True, help="env steps for the table")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    algo = args.zoo_log.name
    zoo_runs_to_csv(args.zoo_log, args.env, algo, args.out / "zoo")
    runner_copy = args.out / "runner" / "runs"
    runner_copy.mkdir(parents=True, exist_ok=True)
    for path in sorted((args.runner / "runs").glob("*.csv")):
        shutil.copy(path, runner_copy / path.name)
    table = compare(
        {"zoo": args.out / "zoo", "runner": args.out / "runner"},
        args.out / "learning_curve.png",
        f"{args.env}: zoo train vs benchmark runner, same config",
        args.at,
    )
    (args.out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
