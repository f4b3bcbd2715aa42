"""rl-zoo3 results in the benchmark runner's format, to compare zoo-trained runs with runner runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sb3_hher.benchmark import CSV_COLUMNS


def zoo_runs_to_csv(zoo_log: Path, env_id: str, algo: str, out: Path) -> list[Path]:
    """
    :param zoo_log: Zoo's folder of one algorithm (``<log>/<algo>``)
    :param env_id: Env id of the runs
    :param algo: Name to give the runs in the CSVs
    :param out: Folder for the CSVs (``<out>/runs``)
    :return: The CSVs written, one per zoo run
    """
    (out / "runs").mkdir(parents=True, exist_ok=True)
    written = []
    for run in sorted(zoo_log.glob(f"{env_id}_*")):
        evaluations = run / "evaluations.npz"
        if not evaluations.is_file():
            continue
        with open(run / env_id / "args.yml") as file:
            seed = int(dict(yaml.load(file, Loader=yaml.UnsafeLoader))["seed"])  # zoo writes an OrderedDict
        with np.load(evaluations) as data:
            rows = [
                [algo, seed, int(steps), float(np.mean(successes)), float(np.mean(rewards)), float("nan"), float("nan")]
                for steps, successes, rewards in zip(data["timesteps"], data["successes"], data["results"], strict=True)
            ]
        path = out / "runs" / f"{algo}_seed{seed}.csv"
        pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(path, index=False)
        written.append(path)
    if not written:
        raise FileNotFoundError(f"No zoo run of {env_id} with evaluations.npz under {zoo_log}")
    return written
