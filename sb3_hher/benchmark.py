"""
Side-by-side benchmark: sb3-hher against vanilla SB3 (``DDPG``/``TD3`` + ``HerReplayBuffer``), same seeds,
budgets, networks and update schedule, evaluated on separate deterministic test episodes.

    python -m sb3_hher.benchmark --env FetchPush-v4 --algos her_ddpg ddpg --preset fetch-one-env \\
        --seeds 0 1 2 --total-timesteps 300000 --eval-freq 10000 --n-eval-episodes 50 --n-jobs 2 \\
        --out docs/benchmarks/fetchpush

Each (algorithm, seed) run is a separate process (``--n-jobs`` at a time, ``--threads`` torch threads each).
A run checkpoints exactly (model, replay buffer, random and env states: ``sb3_hher.common.checkpoint``) after every
evaluation, under ``<out>/checkpoints`` (git-ignored): rerunning the same command resumes every unfinished run
as if it had never stopped. Each checkpoint also holds the replay buffer's actions (``replay_actions.npz``), so a
checkpoint folder carried to another machine without its large ``replay_buffer.pkl`` still resumes: the buffer is
rebuilt by replaying the actions on a fresh env. HHER runs log their decisions (``record_decisions=True``), and their
``replay_actions.npz`` holds those: the level buffers are rebuilt by replaying the hierarchy's decisions.
Results go to ``<out>/runs/<algo>_seed<k>.csv`` (one row per evaluation), then ``results.csv``,
``learning_curve.png`` and ``results.md`` in ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

# Success is read at the last step of each test episode (REFERENCE: "deterministic test success at the
# episode's last step").
CSV_COLUMNS = ["algo", "seed", "timesteps", "success_rate", "mean_reward", "train_time_s", "steps_per_s"]


@dataclass
class JobSpec:
    """One (algorithm, seed) run of a benchmark."""

    algo: str
    seed: int
    env_id: str
    preset: str
    total_timesteps: int
    eval_freq: int
    n_eval_episodes: int
    n_envs: int
    threads: int
    out: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.algo}_seed{self.seed}"


def _algorithm_classes() -> dict[str, tuple[type, bool]]:
    """Benchmark names -> (class, is sb3-hher)."""
    from sb3_contrib import TQC
    from stable_baselines3 import DDPG, TD3

    from sb3_hher import HHER, HerDDPG, HerTD3, HerTQC

    return {
        "her_ddpg": (HerDDPG, True),
        "her_td3": (HerTD3, True),
        "her_tqc": (HerTQC, True),
        "hher": (HHER, True),
        "ddpg": (DDPG, False),
        "td3": (TD3, False),
        "tqc": (TQC, False),
    }


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def evaluate_success(model: Any, env: Any, n_episodes: int) -> tuple[float, float]:
    """
    Deterministic test episodes; success read from the info of each episode's last step.

    :param model: Any SB3 model
    :param env: A VecEnv to test on (not the training env)
    :param n_episodes: Number of test episodes
    :return: ``(success_rate, mean_episode_reward)``
    """
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_hher.common.goal_env import get_success

    successes: list[float] = []

    def record_success(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["done"]:
            success = get_success(locals_["info"])
            if success is not None:
                successes.append(success)

    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=True, callback=record_success)
    # A float, not per-episode lists: return_episode_rewards is left False.
    return (float(np.mean(successes)) if successes else float("nan")), float(cast(float, mean_reward))


def _steps_per_round(env: Any, n_envs: int) -> int:
    """
    :param env: The training VecEnv
    :param n_envs: Its number of envs
    :return: Env steps of one episode of every env when episodes have a fixed length (a time limit), else 1
    """
    spec = env.get_attr("spec")[0]
    max_steps = getattr(spec, "max_episode_steps", None)
    return int(max_steps) * n_envs if max_steps else 1


def _make_model(spec: JobSpec, env: Any) -> Any:
    from sb3_hher.common.goal_env import check_goal_env
    from sb3_hher.her.presets import get_preset, vanilla_kwargs, vanilla_tqc_kwargs

    cls, is_ours = _algorithm_classes()[spec.algo]
    # Presets are flat-agent settings; HHER takes its own defaults plus the command's overrides.
    overrides = {key: _schedule_or_value(value) for key, value in spec.overrides.items()}
    kwargs = {**({} if spec.algo == "hher" else get_preset(spec.preset)), **overrides}
    # The whole run fits in the buffer: the budget rounded up to whole episodes of all envs, as the runner's chunks are
    # (a buffer that never wraps keeps its checkpoints portable: replay actions need every step from the first).
    round_to = _steps_per_round(env, spec.n_envs)
    kwargs.setdefault("buffer_size", max(-(-spec.total_timesteps // round_to) * round_to, 1000))
    if spec.algo == "hher" and kwargs.get("n_levels", 2) > 1:
        # Portable checkpoints of a hierarchy replay its logged decisions (sb3_hher.hher.decisions).
        kwargs.setdefault("record_decisions", True)
    if not is_ours:
        goal_spec = check_goal_env(env)
        if spec.algo == "tqc":
            kwargs = vanilla_tqc_kwargs(kwargs, goal_spec.max_episode_steps)
        else:
            kwargs = vanilla_kwargs(kwargs, int(np.prod(env.action_space.shape)), goal_spec.max_episode_steps)
    return cls("MultiInputPolicy", env, seed=spec.seed, verbose=0, **kwargs)


def _exit_with_parent() -> None:
    """In a worker process: exit when the parent (the runner) dies, so stopping the runner stops its runs."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_job(spec: JobSpec) -> str:
    """
    Train one (algorithm, seed), evaluating every ``eval_freq`` steps; resumes from its checkpoint if any.

    :param spec: What to run
    :return: Path of the run's CSV
    """
    import pandas as pd
    import torch as th
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_hher.common.checkpoint import (
        CheckpointError,
        checkpoint_exists,
        get_env_states,
        load_checkpoint,
        save_checkpoint,
        set_env_states,
    )
    from sb3_hher.common.goal_env import import_robotics

    th.set_num_threads(spec.threads)
    if mp.parent_process() is not None:
        _exit_with_parent()
    import_robotics()
    cls, _ = _algorithm_classes()[spec.algo]
    out = Path(spec.out)
    ckpt = out / "checkpoints" / spec.name
    csv_path = out / "runs" / f"{spec.name}.csv"
    ckpt.mkdir(parents=True, exist_ok=True)
    csv_path.parent.mkdir(parents=True, exist_ok=True)

    env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed)
    eval_env = make_vec_env(spec.env_id, n_envs=1, seed=spec.seed + 100_000)
    eval_state = ckpt / "eval_env_state.pkl"
    if checkpoint_exists(ckpt) and csv_path.exists():
        # A checkpoint carried without its pickled replay buffer rebuilds it from the saved actions on this env.
        replay_env = make_vec_env(spec.env_id, n_envs=spec.n_envs, seed=spec.seed)
        model: Any = load_checkpoint(cls, ckpt, env, device="cpu", replay_env=replay_env)
        replay_env.close()
        if eval_state.exists():
            with open(eval_state, "rb") as file:
                set_env_states(eval_env, pickle.load(file))
        # Rows written after the last complete checkpoint (a run killed in between) are dropped.
        rows = [row for row in pd.read_csv(csv_path).values.tolist() if row[2] <= model.num_timesteps]
        train_time = float(rows[-1][5])
        print(f"[{spec.name}] resuming at {model.num_timesteps} steps", flush=True)
    else:
        model = _make_model(spec, env)
        rows, train_time = [], 0.0
        success, reward = evaluate_success(model, eval_env, spec.n_eval_episodes)
        rows.append([spec.algo, spec.seed, 0, success, reward, 0.0, float("nan")])

    # Exact checkpoints need every env at an episode boundary: with fixed-length episodes (a time limit, no
    # termination) chunks are rounded up to whole episodes of all envs (evaluations at 50,400 rather than 50,000
    # with 600-step episodes). Envs whose episodes end early fall back to an inexact checkpoint below.
    round_to = _steps_per_round(env, spec.n_envs)
    while model.num_timesteps < spec.total_timesteps:
        chunk = min(spec.eval_freq, spec.total_timesteps - model.num_timesteps)
        chunk = -(-(model.num_timesteps + chunk) // round_to) * round_to - model.num_timesteps
        start_steps, start = model.num_timesteps, time.perf_counter()
        model.learn(chunk, reset_num_timesteps=False, callback=_whole_run_progress(spec.total_timesteps))
        elapsed = time.perf_counter() - start
        train_time += elapsed
        success, reward = evaluate_success(model, eval_env, spec.n_eval_episodes)
        steps_per_s = (model.num_timesteps - start_steps) / elapsed
        rows.append([spec.algo, spec.seed, model.num_timesteps, success, reward, train_time, steps_per_s])
        print(
            f"[{spec.name}] {model.num_timesteps}/{spec.total_timesteps} steps  success={success:.2f}  "
            f"{steps_per_s:.1f} steps/s  train {train_time / 60:.1f} min",
            flush=True,
        )
        _write_csv(csv_path, rows)
        # Exact checkpoint (model, buffer, random and env states; sb3_hher.common.checkpoint): rerunning the command
        # continues the run as if it had never stopped.
        _atomic_write_bytes(eval_state, pickle.dumps(get_env_states(eval_env)))
        try:
            # Flat HER buffers store their actions; HHER (one buffer per level) its logged decisions.
            portable = model.replay_buffer is not None or bool(getattr(model, "record_decisions", False))
            save_checkpoint(model, ckpt, replay_actions=portable)
        except CheckpointError as error:
            # An episode ended early somewhere: resuming will start fresh episodes instead of continuing these.
            print(f"[{spec.name}] inexact checkpoint ({error})", flush=True)
            save_checkpoint(model, ckpt, exact=False)
    _write_csv(csv_path, rows)
    env.close()
    eval_env.close()
    return str(csv_path)


def _whole_run_progress(total_timesteps: int) -> Any:
    """
    A callback that makes SB3's remaining progress (which drives ``learning_rate`` and ``random_eps`` schedules) run
    over the whole benchmark budget: each ``learn(chunk, reset_num_timesteps=False)`` would otherwise restart it
    for its chunk alone.

    :param total_timesteps: The run's budget
    :return: The callback
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class WholeRunProgress(BaseCallback):
        def _on_training_start(self) -> None:
            self.model._total_timesteps = total_timesteps
            self.model._update_current_progress_remaining(self.model.num_timesteps, total_timesteps)

        def _on_step(self) -> bool:
            return True

    return WholeRunProgress()


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    import pandas as pd

    tmp = path.with_suffix(".csv.tmp")
    pd.DataFrame(rows, columns=CSV_COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def _first_crossing(frame: Any, threshold: float) -> float:
    reached = frame[frame["success_rate"] >= threshold]
    return float(reached["timesteps"].iloc[0]) if len(reached) else float("nan")


def _plot_success(ax: Any, group: Any, label: str) -> None:
    """Mean test success over seeds, with the min-max band, of one algorithm's rows."""
    curve = group.pivot_table(index="timesteps", columns="seed", values="success_rate")
    ax.plot(curve.index, curve.mean(axis=1), label=f"{label} ({curve.shape[1]} seeds)")
    ax.fill_between(curve.index, curve.min(axis=1), curve.max(axis=1), alpha=0.2)


def _finish_plot(fig: Any, ax: Any, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    ax.set_xlabel("env steps")
    ax.set_ylabel("test success rate (deterministic)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(folders: dict[str, str | Path], out_png: str | Path, title: str, at_steps: list[int]) -> str:
    """
    Put the runs of several benchmark folders (e.g. with and without demonstrations) in one plot and one table.

    :param folders: Label -> benchmark output folder; each folder's algorithms appear as ``<label> <algo>``
    :param out_png: Where to write the plot
    :param title: Plot title
    :param at_steps: Env steps at which the table gives test success (mean ± std over the seeds that reached them)
    :return: The markdown table
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    header = " | ".join(f"{steps / 1000:g}k" for steps in at_steps)
    lines = [f"| run | seeds | {header} |", "|---|---|" + "---|" * len(at_steps)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, folder in folders.items():
        paths = sorted((Path(folder) / "runs").glob("*.csv"))
        if not paths:
            raise FileNotFoundError(f"No run results under {Path(folder) / 'runs'}")
        results = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
        for algo, group in results.groupby("algo", sort=False):
            name = f"{label} {algo}"
            _plot_success(ax, group, name)
            cells = []
            for steps in at_steps:
                values = group[group["timesteps"] == steps]["success_rate"].to_numpy()
                cells.append(f"{values.mean():.2f} ± {values.std():.2f} ({len(values)})" if len(values) else "-")
            lines.append(f"| {name} | {group['seed'].nunique()} | " + " | ".join(cells) + " |")
    _finish_plot(fig, ax, title, Path(out_png))
    return "\n".join(lines)


def summarize(out: str | Path, env_id: str = "", note: str = "") -> str:
    """
    Aggregate ``<out>/runs/*.csv`` into ``results.csv``, ``learning_curve.png`` and ``results.md``.

    ``results.md`` is rewritten whenever a run of the folder finishes; what people write about the runs belongs in
    ``<out>/notes.md``, which is copied under the table every time.

    :param out: Benchmark output folder
    :param env_id: Env id for titles
    :param note: Extra text (command, commit) written under the table, after ``notes.md`` unless that quotes it
    :return: The markdown table
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    out = Path(out)
    frames = [pd.read_csv(path) for path in sorted((out / "runs").glob("*.csv"))]
    if not frames:
        raise FileNotFoundError(f"No run results under {out / 'runs'}")
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(out / "results.csv", index=False)

    lines = [
        f"### {env_id}".rstrip(),
        "",
        "| algo | seeds | steps | success at these steps (mean ± std) | steps to 0.5 | steps to 0.9 "
        "| train time (min) | env steps/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    further: list[str] = []
    for algo, group in results.groupby("algo", sort=False):
        seeds = sorted(group["seed"].unique())
        per_seed = [group[group["seed"] == seed].sort_values("timesteps") for seed in seeds]
        last = [frame.iloc[-1] for frame in per_seed]
        # Seeds are compared at the last step all of them reached; seeds that went further are listed under the table.
        steps = int(min(row["timesteps"] for row in last))
        at_common = [frame[frame["timesteps"] <= steps].iloc[-1] for frame in per_seed]
        finals = np.array([row["success_rate"] for row in at_common])
        further.extend(
            f"{algo} seed {seed}: {row['success_rate']:.2f} at {int(row['timesteps'])}"
            for seed, row in zip(seeds, last, strict=True)
            if int(row["timesteps"]) > steps
        )

        def crossing(threshold: float, per_seed: list = per_seed) -> str:
            values = [_first_crossing(frame, threshold) for frame in per_seed]
            reached = [value for value in values if not np.isnan(value)]
            if not reached:
                return "not reached"
            mean = float(np.mean(reached))
            text = f"{mean / 1000:.0f}k" if mean >= 10_000 else f"{mean / 1000:.1f}k"
            return text if len(reached) == len(values) else f"{text} ({len(reached)}/{len(values)} seeds)"

        # Training time to the table's step; throughput over each seed's whole run.
        train_min = np.mean([row["train_time_s"] for row in at_common]) / 60
        # Overall training throughput: env steps over training wall time (evaluation and checkpoints excluded).
        speed = np.mean([row["timesteps"] / row["train_time_s"] for row in last if row["train_time_s"] > 0])
        lines.append(
            f"| {algo} | {len(seeds)} | {steps} | {finals.mean():.2f} ± {finals.std():.2f} | {crossing(0.5)} | "
            f"{crossing(0.9)} | {train_min:.1f} | {speed:.1f} |"
        )
        _plot_success(ax, group, str(algo))
    _finish_plot(fig, ax, f"{env_id}: mean and min-max over seeds", out / "learning_curve.png")
    if further:
        lines += ["", "Seeds that went further than the step of the table: " + "; ".join(further) + "."]
    table = "\n".join(lines)
    notes_file = out / "notes.md"
    notes = notes_file.read_text().strip() if notes_file.exists() else ""
    # The runner's command note is left out where the notes already quote it.
    parts = [table, *([notes] if notes else []), *([note] if note and note not in notes else [])]
    (out / "results.md").write_text("\n\n".join(parts) + "\n")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="FetchReach-v4", help="Gymnasium env id")
    parser.add_argument("--algos", nargs="+", default=["her_ddpg", "ddpg"], choices=sorted(_algorithm_classes()))
    parser.add_argument("--preset", default="baselines", help="sb3_hher.her.presets name")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="hyperparameter overrides (python literals)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--total-timesteps", type=int, default=5000)
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--n-eval-episodes", type=int, default=50)
    parser.add_argument("--n-envs", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default="benchmark-results")
    return parser.parse_args(argv)


def _schedule_or_value(value: Any) -> Any:
    """
    ``--set`` values are python literals, kept as text otherwise (so that ``config.json`` stores them); the text
    ``LinearSchedule(start, end, end_fraction)`` becomes SB3's schedule, with positional arguments
    (``random_eps=LinearSchedule(1.0,0.3,0.3)``) or keyword ones as SB3's own repr writes them
    (``LinearSchedule(start=1.0, end=0.3, end_fraction=0.3)``).

    :param value: A parsed override
    :return: The value to pass to the algorithm
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        if text.startswith("LinearSchedule(") and text.endswith(")"):
            import ast

            from stable_baselines3.common.utils import LinearSchedule

            error = ValueError(f"Cannot read {value!r} as LinearSchedule(start, end, end_fraction) with number arguments")
            try:
                call = ast.parse(text, mode="eval").body
                args = [ast.literal_eval(arg) for arg in getattr(call, "args", [])]
                kwargs = {str(keyword.arg): ast.literal_eval(keyword.value) for keyword in getattr(call, "keywords", [])}
            except (SyntaxError, ValueError) as parse_error:
                raise error from parse_error
            numbers = [*args, *kwargs.values()]
            if not all(isinstance(number, int | float) and not isinstance(number, bool) for number in numbers):
                raise error
            try:
                return LinearSchedule(*args, **kwargs)
            except TypeError as call_error:
                raise error from call_error
    return value


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import ast

    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


# Settings every run of one output folder must share: resuming a checkpoint with other ones would mix configurations.
SHARED_SETTINGS = ("env", "preset", "overrides", "eval_freq", "n_eval_episodes", "n_envs")


def _check_same_settings(config_path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """
    Refuse to reuse an output folder with other settings; more seeds, more algorithms or a larger budget are fine.

    :param config_path: The folder's ``config.json``
    :param config: The settings of this invocation
    :return: The settings to record (seeds and algorithms of both invocations)
    """
    if not config_path.exists():
        return config
    previous = json.loads(config_path.read_text())
    # Compare as stored: JSON turns tuples into lists.
    changed = [key for key in SHARED_SETTINGS if key in previous and previous[key] != json.loads(json.dumps(config[key]))]
    if changed:
        details = ", ".join(f"{key}: {previous[key]!r} -> {config[key]!r}" for key in changed)
        raise ValueError(
            f"{config_path.parent} holds runs made with other settings ({details}): use another --out, or the "
            "same settings to resume them"
        )
    merged = dict(config)
    for key in ("seeds", "algos"):
        merged[key] = list(dict.fromkeys([*previous.get(key, []), *config[key]]))
    return merged


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = _parse_overrides(args.set)
    config = _check_same_settings(out / "config.json", {**vars(args), "overrides": overrides})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    specs = [
        JobSpec(
            algo=algo,
            seed=seed,
            env_id=args.env,
            preset=args.preset,
            total_timesteps=args.total_timesteps,
            eval_freq=args.eval_freq,
            n_eval_episodes=args.n_eval_episodes,
            n_envs=args.n_envs,
            threads=args.threads,
            out=str(out),
            overrides=overrides,
        )
        for seed in args.seeds
        for algo in args.algos
    ]
    if args.n_jobs > 1:
        with mp.get_context("spawn").Pool(args.n_jobs) as pool:
            pool.map(run_job, specs, chunksize=1)
    else:
        for spec in specs:
            run_job(spec)
    command = "python -m sb3_hher.benchmark " + " ".join(sys.argv[1:] if argv is None else argv)
    print(summarize(out, args.env, note=f"Command: `{command}`"))


if __name__ == "__main__":
    main()
