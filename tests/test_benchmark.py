"""The benchmark runner: outputs, exact resume of an output folder, refusal to mix settings in one folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sb3_hher import benchmark

TINY = ["--env", "FetchReach-v4", "--seeds", "0", "--eval-freq", "100", "--n-eval-episodes", "2", "--set", "buffer_size=5000"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as file:
        return list(csv.DictReader(file))


def test_runner_outputs_resume_and_settings_guard(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    benchmark.main([*TINY, "--algos", "her_ddpg", "ddpg", "--total-timesteps", "200", "--out", str(out)])
    for algo in ("her_ddpg", "ddpg"):
        run = rows(out / "runs" / f"{algo}_seed0.csv")
        assert [int(row["timesteps"]) for row in run] == [0, 100, 200]
        assert all(0.0 <= float(row["success_rate"]) <= 1.0 for row in run)
    for name in ("results.csv", "results.md", "learning_curve.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| her_ddpg | 1 | 200 |" in table and "| ddpg | 1 | 200 |" in table

    # A larger budget continues the runs from their checkpoints: the first rows are kept, not recomputed.
    before = rows(out / "runs" / "her_ddpg_seed0.csv")
    benchmark.main([*TINY, "--algos", "her_ddpg", "--total-timesteps", "300", "--out", str(out)])
    after = rows(out / "runs" / "her_ddpg_seed0.csv")
    assert after[:3] == before and [int(row["timesteps"]) for row in after] == [0, 100, 200, 300]

    # Other hyperparameters in the same folder would resume checkpoints made with different ones: refused.
    with pytest.raises(ValueError, match=r"other settings.*overrides"):
        benchmark.main([*TINY, "batch_size=64", "--algos", "her_ddpg", "--total-timesteps", "300", "--out", str(out)])


def test_settings_guard_compares_as_stored(tmp_path: Path) -> None:
    # Tuples come back from config.json as lists: the same command must still be accepted.
    config = {"env": "X", "preset": "p", "overrides": {"train_freq": (2, "episode")}, "eval_freq": 1, "n_eval_episodes": 1}
    config.update(n_envs=1, seeds=[0], algos=["her_ddpg"])
    path = tmp_path / "config.json"
    path.write_text(benchmark.json.dumps(config))
    merged = benchmark._check_same_settings(path, {**config, "seeds": [1]})
    assert merged["seeds"] == [0, 1]


def test_evaluations_rounded_to_whole_episodes_for_exact_checkpoints(tmp_path: Path) -> None:
    # FetchReach episodes are 50 steps: an evaluation every 120 steps happens at episode ends (150, 250), where the
    # checkpoint can hold the simulator state (an exact checkpoint would be refused mid-episode).
    import pickle

    out = tmp_path / "bench"
    args = ["--env", "FetchReach-v4", "--seeds", "0", "--eval-freq", "120", "--n-eval-episodes", "2"]
    benchmark.main([*args, "--set", "buffer_size=5000", "train_freq=10", "gradient_steps=1", "--algos", "her_ddpg",
                    "--total-timesteps", "240", "--out", str(out)])  # fmt: skip
    assert [int(row["timesteps"]) for row in rows(out / "runs" / "her_ddpg_seed0.csv")] == [0, 150, 250]
    with open(out / "checkpoints" / "her_ddpg_seed0" / "state.pkl", "rb") as file:
        assert pickle.load(file)["env_states"] is not None


def test_linear_schedule_overrides():
    from stable_baselines3.common.utils import LinearSchedule

    from sb3_hher.benchmark import _parse_overrides, _schedule_or_value

    overrides = _parse_overrides(["random_eps=LinearSchedule(1.0, 0.3, 0.5)", "tau=0.01"])
    assert overrides == {"random_eps": "LinearSchedule(1.0, 0.3, 0.5)", "tau": 0.01}  # as config.json stores them
    schedule = _schedule_or_value(overrides["random_eps"])
    assert schedule(1.0) == 1.0 and schedule(0.5) == pytest.approx(0.3) and schedule(0.0) == pytest.approx(0.3)
    assert _schedule_or_value("auto") == "auto"
    # SB3's own repr, as a user copies it from a log, reads the same.
    keyword = _schedule_or_value(repr(LinearSchedule(1.0, 0.3, 0.5)))
    assert [keyword(p) for p in (1.0, 0.5, 0.0)] == [schedule(p) for p in (1.0, 0.5, 0.0)]
    with pytest.raises(ValueError, match="LinearSchedule"):
        _schedule_or_value("LinearSchedule(1.0, 'a', 0.5)")


def test_schedules_follow_the_whole_budget_across_chunks():
    """The runner learns in chunks (one per evaluation); SB3's remaining progress must still run over the budget."""
    from conftest import SMALL_KWARGS, make_point_env
    from stable_baselines3.common.utils import LinearSchedule

    from sb3_hher import HerDDPG

    model = HerDDPG("MultiInputPolicy", make_point_env(), random_eps=LinearSchedule(1.0, 0.0, 1.0), seed=0, **SMALL_KWARGS)
    for chunk in range(1, 4):
        model.learn(20, reset_num_timesteps=False, callback=benchmark._whole_run_progress(80))
        assert model.num_timesteps == 20 * chunk
        assert model._current_progress_remaining == pytest.approx(1.0 - 20 * chunk / 80, abs=0.02)
        assert model.random_eps_at(model._current_progress_remaining) == pytest.approx(1.0 - 20 * chunk / 80, abs=0.02)


def test_run_carried_without_pickled_buffer_resumes_identically(tmp_path: Path) -> None:
    # A checkpoint folder carried to another machine without replay_buffer.pkl (as committed to git) resumes from
    # the saved actions to the same model as the folder that kept its pickled buffer.
    import shutil

    import torch as th

    from sb3_hher import HerDDPG

    kept, carried = tmp_path / "kept", tmp_path / "carried"
    benchmark.main([*TINY, "--algos", "her_ddpg", "--total-timesteps", "200", "--out", str(kept)])
    shutil.copytree(kept, carried)
    (carried / "checkpoints" / "her_ddpg_seed0" / "replay_buffer.pkl").unlink()
    for out in (kept, carried):
        benchmark.main([*TINY, "--algos", "her_ddpg", "--total-timesteps", "300", "--out", str(out)])
    columns = ("timesteps", "success_rate", "mean_reward")
    kept_rows, carried_rows = rows(kept / "runs" / "her_ddpg_seed0.csv"), rows(carried / "runs" / "her_ddpg_seed0.csv")
    assert [[row[c] for c in columns] for row in kept_rows] == [[row[c] for c in columns] for row in carried_rows]
    models = [HerDDPG.load(out / "checkpoints" / "her_ddpg_seed0" / "model.zip") for out in (kept, carried)]
    state_a, state_b = (model.policy.state_dict() for model in models)
    assert all(th.equal(state_a[key], state_b[key]) for key in state_a)


def test_compare_folders_table_and_plot(tmp_path: Path) -> None:
    import pandas as pd

    columns = benchmark.CSV_COLUMNS
    for folder, algo, values in (("a", "her_ddpg", (0.1, 0.9)), ("b", "her_ddpg", (0.0, 0.2)), ("b", "ddpg", (0.0, 0.1))):
        for seed in (0, 1):
            runs = tmp_path / folder / "runs"
            runs.mkdir(parents=True, exist_ok=True)
            pairs = zip((100, 200), values, strict=True)
            frame = [[algo, seed, steps, value + 0.1 * seed, -1.0, 1.0, 1.0] for steps, value in pairs]
            pd.DataFrame(frame, columns=columns).to_csv(runs / f"{algo}_seed{seed}.csv", index=False)
    table = benchmark.compare({"demos": tmp_path / "a", "no demos": tmp_path / "b"}, tmp_path / "c.png", "t", [200, 300])
    lines = table.splitlines()
    assert lines[0] == "| run | seeds | 0.2k | 0.3k |"
    assert sorted(lines[2:]) == [
        "| demos her_ddpg | 2 | 0.95 ± 0.05 (2) | - |",
        "| no demos ddpg | 2 | 0.15 ± 0.05 (2) | - |",
        "| no demos her_ddpg | 2 | 0.25 ± 0.05 (2) | - |",
    ]
    assert (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="No run results"):
        benchmark.compare({"x": tmp_path / "missing"}, tmp_path / "d.png", "t", [100])


@pytest.mark.parametrize(("total", "n_envs", "expected"), [(2010, 1, 2050), (2000, 1, 2000), (2010, 2, 2100), (300, 1, 1000)])
def test_runner_buffer_holds_the_whole_rounded_budget(total: int, n_envs: int, expected: int) -> None:
    """The last chunk runs to whole episodes: the buffer the runner sizes must hold those steps, so it never wraps."""
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_hher.common.goal_env import import_robotics

    import_robotics()
    spec = benchmark.JobSpec("her_ddpg", 0, "FetchReach-v4", "baselines", total, 1000, 1, n_envs, 1, "unused")
    env = make_vec_env("FetchReach-v4", n_envs=n_envs, seed=0)
    try:
        model = benchmark._make_model(spec, env)
        assert model.buffer_size == expected
        assert model.replay_buffer.buffer_size * n_envs == expected
    finally:
        env.close()


def test_summary_compares_seeds_at_the_step_all_reached(tmp_path: Path) -> None:
    """A seed that ran further is read at the common step in the table and listed with its last value under it."""
    import pandas as pd

    runs = tmp_path / "runs"
    runs.mkdir()
    curves = {0: [(100, 0.2, 60.0), (200, 0.4, 120.0)], 1: [(100, 0.6, 60.0), (200, 0.8, 120.0), (300, 1.0, 180.0)]}
    for seed, points in curves.items():
        frame = [["her_ddpg", seed, steps, value, -1.0, time, steps / time] for steps, value, time in points]
        pd.DataFrame(frame, columns=benchmark.CSV_COLUMNS).to_csv(runs / f"her_ddpg_seed{seed}.csv", index=False)
    table = benchmark.summarize(tmp_path, "t")
    # Mean 0.6 +- 0.2 at 200 steps (not 0.7 with seed 1's value at 300), 2 minutes of training to that step; the
    # crossings read whole runs, with the share of seeds that got there.
    assert "| her_ddpg | 2 | 200 | 0.60 ± 0.20 | 0.1k (1/2 seeds) | 0.3k (1/2 seeds) | 2.0 | 1.7 |" in table
    assert table.splitlines()[-1] == "Seeds that went further than the step of the table: her_ddpg seed 1: 1.00 at 300."
    assert (tmp_path / "results.md").read_text() == table + "\n"


def test_summary_keeps_the_folder_notes(tmp_path: Path) -> None:
    """Hand-written notes.md survives the rewrite of results.md that every finished run triggers."""
    import pandas as pd

    (tmp_path / "runs").mkdir()
    frame = [["her_ddpg", 0, 100, 0.5, -1.0, 60.0, 1.7]]
    pd.DataFrame(frame, columns=benchmark.CSV_COLUMNS).to_csv(tmp_path / "runs" / "her_ddpg_seed0.csv", index=False)
    (tmp_path / "notes.md").write_text("Seed 0 ran alone.\n")
    table = benchmark.summarize(tmp_path, "t", note="Command: `x`")
    assert (tmp_path / "results.md").read_text() == f"{table}\n\nSeed 0 ran alone.\n\nCommand: `x`\n"
    (tmp_path / "notes.md").write_text("Seed 0 ran alone.\n\nCommand: `x`\n")
    benchmark.summarize(tmp_path, "t", note="Command: `x`")
    assert (tmp_path / "results.md").read_text() == f"{table}\n\nSeed 0 ran alone.\n\nCommand: `x`\n"


def test_hher_runs_resume_from_their_portable_checkpoint(tmp_path: Path) -> None:
    # The runner logs HHER's decisions, so a checkpoint carried without its pickled level buffers resumes.
    out = tmp_path / "bench"
    args = [*TINY, "--algos", "hher", "--out", str(out)]
    benchmark.main([*args, "--total-timesteps", "100"])
    checkpoint = out / "checkpoints" / "hher_seed0"
    assert (checkpoint / "replay_actions.npz").is_file()
    (checkpoint / "replay_buffer.pkl").unlink()
    before = rows(out / "runs" / "hher_seed0.csv")
    benchmark.main([*args, "--total-timesteps", "200"])
    after = rows(out / "runs" / "hher_seed0.csv")
    assert after[:2] == before and [int(row["timesteps"]) for row in after] == [0, 100, 200]
