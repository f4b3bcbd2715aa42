"""rl-zoo3 integration: registration, configs, and zoo's own scripts run through ``python -m sb3_hher.zoo``.

The end-to-end tests run zoo in subprocesses, as a user does, with budgets of a few hundred FetchReach-v4 steps
(one torch thread each); they check the plumbing, not learning.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

import sb3_hher
from sb3_hher.benchmark import CSV_COLUMNS
from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.goal_env import import_robotics, make_goal_env
from sb3_hher.her.presets import get_preset, vanilla_kwargs, vanilla_tqc_kwargs
from sb3_hher.zoo import cli
from sb3_hher.zoo.hyperparams_opt import (
    EXAMPLE_HHER_PARAMS,
    NET_ARCHS,
    adapt_to_constructor,
    constructor_takes,
    convert_her_params,
    convert_her_tqc_params,
    sample_her_params,
    sample_her_tqc_params,
)
from sb3_hher.zoo.registration import PACKAGE_HYPERPARAMS, find_config, register, zoo_algorithms
from sb3_hher.zoo.results import zoo_runs_to_csv

pytest.importorskip("rl_zoo3")

REPOSITORY = Path(__file__).resolve().parents[1]
REPOSITORY_HYPERPARAMS = REPOSITORY / "hyperparams"

OUR_ALGOS = ["her_ddpg", "her_td3", "her_tqc", "hher"]
FLAT_ALGOS = ["her_ddpg", "her_td3"]
# Zoo's keys that are not constructor arguments of the algorithm.
ZOO_ONLY_KEYS = {"n_timesteps", "policy", "monitor_kwargs", "env_wrapper", "noise_type", "noise_std"}
# Fetch entries built on the one-env preset.
ONE_ENV_FETCH = ["FetchPush-v4", "FetchPickAndPlace-v4", "FetchSlide-v4"]


def load_config(algo: str) -> dict[str, dict[str, Any]]:
    with open(REPOSITORY_HYPERPARAMS / f"{algo}.yml") as file:
        return yaml.safe_load(file)


def run_zoo(args: list[str], cwd: Path, timeout: float = 150) -> str:
    """Run ``python -m sb3_hher.zoo <args>`` with one torch thread; return its output, fail with it on error."""
    result = subprocess.run(
        [sys.executable, "-m", "sb3_hher.zoo", *args],
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# Cheap learning settings for the end-to-end runs (zoo's -params syntax).
TINY_PARAMS = ["-params", "gradient_steps:2", "batch_size:32", "policy_kwargs:dict(net_arch=[32, 32])"]
TINY_HHER_PARAMS = ["-params", "gradient_steps:2", "batch_size:32"]
TRAIN_FLAGS = ["--env", "FetchReach-v4", "--num-threads", "1", "-f", "logs"]


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="module")
def trained(zoo_dir: Path) -> dict[str, str]:
    """Zoo ``train`` output per algorithm, trained on first use (so enjoy reuses the train test's run)."""
    return {}


def train_once(algo: str, zoo_dir: Path, trained: dict[str, str]) -> str:
    if algo not in trained:
        params = TINY_HHER_PARAMS if algo == "hher" else TINY_PARAMS
        flags = [*TRAIN_FLAGS, "--seed", "0", "-n", "300", "--eval-freq", "200", "--eval-episodes", "2", *params]
        trained[algo] = run_zoo(["train", "--algo", algo, *flags], zoo_dir)
    return trained[algo]


# ---------------------------------------------------------------------------------------------------------------
# Registration


def test_register_is_idempotent() -> None:
    import rl_zoo3
    import rl_zoo3.enjoy
    import rl_zoo3.exp_manager
    import rl_zoo3.hyperparams_opt
    import rl_zoo3.train
    from sb3_contrib import TQC
    from stable_baselines3 import TD3

    from sb3_hher.zoo.callbacks import SuccessTrialEvalCallback
    from sb3_hher.zoo.exp_manager import HindsightExperimentManager

    register()
    algos_before = dict(rl_zoo3.ALGOS)
    samplers_before = dict(rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER)
    get_saved_before = rl_zoo3.enjoy.get_saved_hyperparams
    register()

    assert rl_zoo3.ALGOS == algos_before
    assert rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER == samplers_before
    assert rl_zoo3.enjoy.get_saved_hyperparams is get_saved_before
    # Wrapped once: the wrapper's inner function is zoo's own.
    assert not hasattr(get_saved_before.__wrapped__, "__wrapped__")
    assert not hasattr(samplers_before["td3"].__wrapped__, "__wrapped__")

    for module in (rl_zoo3, rl_zoo3.train, rl_zoo3.exp_manager, rl_zoo3.enjoy):
        assert module.ALGOS["her_ddpg"] is sb3_hher.HerDDPG
        assert module.ALGOS["her_td3"] is sb3_hher.HerTD3
        assert module.ALGOS["her_tqc"] is sb3_hher.HerTQC
        assert module.ALGOS["hher"] is sb3_hher.HHER
    # Zoo's own algorithms are untouched.
    assert rl_zoo3.ALGOS["td3"] is TD3 and rl_zoo3.ALGOS["tqc"] is TQC
    for name in OUR_ALGOS:
        assert name in rl_zoo3.exp_manager.HYPERPARAMS_SAMPLER and name in rl_zoo3.exp_manager.HYPERPARAMS_CONVERTER
    assert rl_zoo3.train.ExperimentManager is HindsightExperimentManager
    assert rl_zoo3.exp_manager.TrialEvalCallback is SuccessTrialEvalCallback
    assert rl_zoo3.exp_manager.HindsightReplayBuffer is HindsightReplayBuffer


def test_sampler_and_converter_agree() -> None:
    params = {
        "learning_rate": 5e-4,
        "batch_size": 512,
        "net_arch": "3x128",
        "train_freq": 50,
        "updates_per_step": 0.4,
        "tau": 0.01,
        "clip_return": "none",
        "n_sampled_goal": 6,
        "noise_eps": 0.1,
        "random_eps": 0.2,
    }
    sampled = sample_her_params(optuna.trial.FixedTrial(params), 4, 1, {"her_kwargs": {}})
    assert sampled == convert_her_params(params)
    assert sampled["gradient_steps"] == 20 and sampled["target_update_interval"] == 20
    assert sampled["clip_return"] is None
    assert sampled["policy_kwargs"] == {"net_arch": NET_ARCHS["3x128"]}
    # Every sampled value is a constructor argument of both algorithms.
    for algorithm in (sb3_hher.HerDDPG, sb3_hher.HerTD3):
        algorithm("MultiInputPolicy", make_goal_env("FetchReach-v4"), buffer_size=1000, **sampled)

    # replay_buffer_kwargs win over the constructor argument, so a config's value there is tuned too.
    with_kwargs = sample_her_params(
        optuna.trial.FixedTrial(params), 4, 1, {"her_kwargs": {"n_sampled_goal": 4, "goal_selection_strategy": "final"}}
    )
    assert with_kwargs["replay_buffer_kwargs"] == {"n_sampled_goal": 6, "goal_selection_strategy": "final"}


def test_her_tqc_sampler_and_converter_agree() -> None:
    params = {
        "learning_rate": 5e-4,
        "batch_size": 128,
        "net_arch": "3x64",
        "train_freq": 4,
        "updates_per_step": 0.5,
        "tau": 0.01,
        "clip_return": "auto",
        "n_sampled_goal": 3,
        "top_quantiles_to_drop_per_net": 3,
        "random_eps": 0.1,
    }
    sampled = sample_her_tqc_params(optuna.trial.FixedTrial(params), 4, 1, {"her_kwargs": {}})
    assert sampled == convert_her_tqc_params(params)
    # TQC moves its target critics after every gradient step: no derived target_update_interval.
    assert sampled["gradient_steps"] == 2 and "target_update_interval" not in sampled
    model = sb3_hher.HerTQC("MultiInputPolicy", make_goal_env("FetchReach-v4"), buffer_size=1000, **sampled)
    assert model.top_quantiles_to_drop_per_net == 3 and model.policy.net_arch == NET_ARCHS["3x64"]


def test_hher_arguments_adapt_to_its_constructor() -> None:
    class Hierarchy:
        """A constructor with HHER's names for exploration and no target_update_interval."""

        def __init__(
            self,
            learning_rate: float,
            batch_size: int,
            train_freq: int,
            gradient_steps: int,
            tau: float,
            n_sampled_goal: int,
            action_noise_std: float,
            random_action_prob: float,
            subgoal_horizon: int,
            subgoal_test_prob: float,
        ) -> None:
            pass

    hyperparams = adapt_to_constructor(convert_her_params(EXAMPLE_HHER_PARAMS), Hierarchy)
    assert constructor_takes(Hierarchy, hyperparams)
    assert hyperparams["action_noise_std"] == EXAMPLE_HHER_PARAMS["noise_eps"]
    assert hyperparams["random_action_prob"] == EXAMPLE_HHER_PARAMS["random_eps"]
    assert hyperparams["subgoal_horizon"] == 10 and "target_update_interval" not in hyperparams
    # The flat learners keep their own names.
    assert adapt_to_constructor(convert_her_params(EXAMPLE_HHER_PARAMS), sb3_hher.HerDDPG)["noise_eps"] == 0.2


def test_zoo_samplers_recognise_hindsight_buffer() -> None:
    import rl_zoo3.hyperparams_opt

    from sb3_hher.zoo.exp_manager import CURRENT_REPLAY_BUFFER_CLASS

    register()
    params = {
        "one_minus_gamma": 0.02,
        "batch_size_pow": 8,
        "learning_rate": 1e-3,
        "train_freq": 4,
        "tau": 0.01,
        "noise_type": "normal",
        "noise_std": 0.2,
        "net_arch": "medium",
        "n_sampled_goal": 3,
        "goal_selection_strategy": "future",
    }
    sampler = rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER["td3"]
    # Zoo computes the flag with `replay_buffer_class == HerReplayBuffer`, False for a subclass.
    zoo_args = {"using_her_replay_buffer": False, "her_kwargs": {}}
    assert "replay_buffer_kwargs" not in sampler(optuna.trial.FixedTrial(params), 4, 1, dict(zoo_args))
    token = CURRENT_REPLAY_BUFFER_CLASS.set(HindsightReplayBuffer)
    try:
        sampled = sampler(optuna.trial.FixedTrial(params), 4, 1, dict(zoo_args))
    finally:
        CURRENT_REPLAY_BUFFER_CLASS.reset(token)
    assert sampled["replay_buffer_kwargs"] == {"n_sampled_goal": 3, "goal_selection_strategy": "future"}


# ---------------------------------------------------------------------------------------------------------------
# Configs


@pytest.mark.parametrize("algo", FLAT_ALGOS)
def test_configs_follow_presets(algo: str) -> None:
    config = load_config(algo)
    reach = config.pop("FetchReach-v4")
    her_ddpg = load_config("her_ddpg")
    tuned_reach = her_ddpg.pop("FetchReach-v4")
    assert config == her_ddpg, "her_td3.yml and her_ddpg.yml hold the same settings (FetchReach aside)"
    assert reach["n_timesteps"] <= 10_000
    if algo == "her_td3":
        assert set(reach) <= ZOO_ONLY_KEYS, "HerTD3 on FetchReach uses the baselines defaults"
    else:
        # HerDDPG's FetchReach entry is the best trial of the committed tuning study, converted as zoo converts it.
        with open(REPOSITORY / "docs" / "tuning" / "fetchreach-v4" / "best.json") as file:
            best = json.load(file)["kwargs"]
        tuned = {key: value for key, value in tuned_reach.items() if key not in ZOO_ONLY_KEYS}
        tuned["policy_kwargs"] = eval(tuned["policy_kwargs"])
        assert tuned.keys() == best.keys()
        for key, value in best.items():
            assert tuned[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    preset = get_preset("fetch-one-env")
    for env_id in ONE_ENV_FETCH:
        entry = config[env_id]
        assert {key: entry[key] for key in preset} == preset
        assert eval(entry["policy_kwargs"]) == {"net_arch": [256, 256, 256]}
    assert config["FetchPush-v4"]["n_timesteps"] == 300_000


@pytest.mark.parametrize(("vanilla", "ours"), [("ddpg", "her_ddpg"), ("td3", "her_td3")])
def test_vanilla_configs_match_ours(vanilla: str, ours: str) -> None:
    """Each vanilla entry is presets.vanilla_kwargs of our entry: the comparison the benchmark runner makes."""
    import_robotics()
    vanilla_config, our_config = load_config(vanilla), load_config(ours)
    assert set(vanilla_config) == set(our_config)
    for env_id, entry in vanilla_config.items():
        ours_entry = our_config[env_id]
        her_kwargs = {key: value for key, value in ours_entry.items() if key not in ZOO_ONLY_KEYS}
        if isinstance(her_kwargs.get("policy_kwargs"), str):
            her_kwargs["policy_kwargs"] = eval(her_kwargs["policy_kwargs"])
        env = gym.make(env_id)
        n_actions = int(np.prod(env.action_space.shape))
        expected = vanilla_kwargs(her_kwargs, n_actions, env.spec.max_episode_steps)
        env.close()

        noise = expected.pop("action_noise")
        assert entry["noise_type"] == "normal" and entry["noise_std"] == pytest.approx(float(noise._sigma[0]))
        assert entry["replay_buffer_class"] == expected.pop("replay_buffer_class").__name__
        assert eval(entry["replay_buffer_kwargs"]) == expected.pop("replay_buffer_kwargs")
        assert eval(entry["policy_kwargs"]) == expected.pop("policy_kwargs")
        train_freq = entry["train_freq"]
        assert (tuple(train_freq) if isinstance(train_freq, list) else train_freq) == expected.pop("train_freq")
        assert entry["gamma"] == pytest.approx(expected.pop("gamma"))
        for key, value in expected.items():
            assert entry[key] == value, (env_id, key)
        for key in ("n_timesteps", "policy", "monitor_kwargs", "env_wrapper"):
            assert entry.get(key) == ours_entry.get(key), (env_id, key)


def test_her_tqc_config_follows_preset() -> None:
    config = load_config("her_tqc")
    assert set(config["FetchReach-v4"]) <= ZOO_ONLY_KEYS, "HerTQC on FetchReach uses its defaults"
    preset = get_preset("tqc-one-env")
    for env_id in ONE_ENV_FETCH:
        entry = config[env_id]
        assert {key: entry[key] for key in preset} == preset
        assert eval(entry["policy_kwargs"]) == {"net_arch": [256, 256, 256]}
    assert config["FetchPush-v4"]["n_timesteps"] == 300_000


def test_vanilla_tqc_config_matches_ours() -> None:
    """tqc.yml is presets.vanilla_tqc_kwargs of her_tqc.yml: the comparison the benchmark runner makes."""
    import_robotics()
    vanilla_config, our_config = load_config("tqc"), load_config("her_tqc")
    assert set(vanilla_config) == set(our_config)
    for env_id, entry in vanilla_config.items():
        ours_entry = our_config[env_id]
        her_kwargs = {key: value for key, value in ours_entry.items() if key not in ZOO_ONLY_KEYS}
        if isinstance(her_kwargs.get("policy_kwargs"), str):
            her_kwargs["policy_kwargs"] = eval(her_kwargs["policy_kwargs"])
        env = gym.make(env_id)
        expected = vanilla_tqc_kwargs(her_kwargs, env.spec.max_episode_steps)
        env.close()
        assert entry["replay_buffer_class"] == expected.pop("replay_buffer_class").__name__
        assert eval(entry["replay_buffer_kwargs"]) == expected.pop("replay_buffer_kwargs")
        assert eval(entry["policy_kwargs"]) == expected.pop("policy_kwargs")
        assert entry["gamma"] == pytest.approx(expected.pop("gamma"))
        for key, value in expected.items():
            assert entry[key] == value, (env_id, key)
        for key in ("n_timesteps", "policy", "monitor_kwargs"):
            assert entry.get(key) == ours_entry.get(key), (env_id, key)


def test_hher_config_entries_build() -> None:
    """Every hher.yml entry's algorithm settings are HHER constructor arguments that build a model on its env."""
    import_robotics()
    config = load_config("hher")
    for env_id, entry in config.items():
        kwargs = {key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS}
        env = gym.make(env_id)
        model = sb3_hher.HHER(entry["policy"], env, **kwargs)
        for key, value in kwargs.items():
            if key in ("hold_goal", "gradient_steps", "gamma", "learning_starts"):
                assert getattr(model, key) == value, (env_id, key)
        env.close()
    assert config["FetchPush-v4"]["hold_goal"] is True


def test_find_config() -> None:
    assert find_config("her_ddpg", "FetchPush-v4") == REPOSITORY_HYPERPARAMS / "her_ddpg.yml"
    # Zoo's algorithms read sb3-hher's file only on the ids it configures.
    assert find_config("td3", "FetchPush-v4") == REPOSITORY_HYPERPARAMS / "td3.yml"
    assert find_config("td3", "Pendulum-v1") is None
    assert find_config("tqc", "FetchPush-v4") == REPOSITORY_HYPERPARAMS / "tqc.yml"
    assert find_config("tqc", "Pendulum-v1") is None
    assert find_config("sac", "FetchPush-v4") is None


def test_is_success_wrapper_on_pointmaze() -> None:
    from sb3_hher.zoo.wrappers import IsSuccessInfo

    import_robotics()
    env = IsSuccessInfo(gym.make("PointMaze_UMaze-v3"))
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["is_success"] == float(info["success"])
    env.close()


# ---------------------------------------------------------------------------------------------------------------
# Command line


def test_cli_usage_and_unknown_script(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--help"])
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["not_a_script"])


def test_cli_routes_zoo_children_through_sb3_hher() -> None:
    assert cli._through_sb3_hher(["python", "enjoy.py", "--algo", "her_ddpg"]) == [
        sys.executable,
        "-m",
        "sb3_hher.zoo",
        "enjoy",
        "--algo",
        "her_ddpg",
    ]
    assert cli._through_sb3_hher(["python", "-m", "rl_zoo3.record_video", "-n", "10"])[2:5] == [
        "sb3_hher.zoo",
        "record_video",
        "-n",
    ]
    assert cli._through_sb3_hher(["ffmpeg", "-i", "x"]) == ["ffmpeg", "-i", "x"]


def test_package_hyperparams_are_the_repository_folder() -> None:
    """In a source checkout the package reaches the top-level configs through its symlink (no second copy)."""
    assert PACKAGE_HYPERPARAMS.resolve() == REPOSITORY_HYPERPARAMS.resolve()
    assert sorted(path.name for path in PACKAGE_HYPERPARAMS.glob("*.yml")) == sorted(
        path.name for path in REPOSITORY_HYPERPARAMS.glob("*.yml")
    )


def test_wheel_ships_the_zoo_configs(tmp_path: Path) -> None:
    """A wheel carries every zoo config as package data, where ``hyperparams_dirs`` looks for them once installed."""
    import shutil
    import zipfile

    # Build from a copy of what the wheel is made of, so that the checkout gets no build/ or egg-info folders.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPOSITORY / name, source / name)
    shutil.copytree(REPOSITORY / "hyperparams", source / "hyperparams")
    shutil.copytree(REPOSITORY / "sb3_hher", source / "sb3_hher", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    command += ["-w", str(tmp_path)]
    subprocess.run(command, check=True, cwd=tmp_path, timeout=150)
    (wheel,) = tmp_path.glob("sb3_hher-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in REPOSITORY_HYPERPARAMS.glob("*.yml"):
        assert f"sb3_hher/hyperparams/{path.name}" in names


def test_console_script_declared() -> None:
    import tomllib

    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["sb3-hher-zoo"] == "sb3_hher.zoo.cli:main"


# ---------------------------------------------------------------------------------------------------------------
# End to end: zoo's scripts in subprocesses


@pytest.mark.parametrize("algo", OUR_ALGOS)
def test_zoo_train(algo: str, zoo_dir: Path, trained: dict[str, str]) -> None:
    output = train_once(algo, zoo_dir, trained)
    assert f"Loading hyperparameters from: {REPOSITORY_HYPERPARAMS / f'{algo}.yml'}" in output
    run_dir = zoo_dir / "logs" / algo / "FetchReach-v4_1"
    assert (run_dir / "FetchReach-v4.zip").is_file()
    assert (run_dir / "evaluations.npz").is_file()
    # Zoo's success logging (monitor column read by plot_train -y success).
    assert "is_success" in (run_dir / "0.monitor.csv").read_text().splitlines()[1]
    model = zoo_algorithms()[algo].load(run_dir / "FetchReach-v4.zip", env=_fetch_env())
    assert model.num_timesteps == 300
    # The evaluations in the benchmark runner's format (examples/zoo_vs_runner.py).
    (csv,) = zoo_runs_to_csv(zoo_dir / "logs" / algo, "FetchReach-v4", algo, zoo_dir / "as_runner" / algo)
    frame = pd.read_csv(csv)
    evaluations = np.load(run_dir / "evaluations.npz")
    assert list(frame.columns) == CSV_COLUMNS and list(frame["timesteps"]) == list(evaluations["timesteps"])
    np.testing.assert_allclose(frame["success_rate"], evaluations["successes"].mean(axis=1))


def _fetch_env() -> gym.Env:
    import_robotics()
    return gym.make("FetchReach-v4")


@pytest.mark.parametrize("algo", OUR_ALGOS)
def test_zoo_enjoy_loads_trained_agent(algo: str, zoo_dir: Path, trained: dict[str, str]) -> None:
    train_once(algo, zoo_dir, trained)
    output = run_zoo(
        ["enjoy", "--algo", algo, "--env", "FetchReach-v4", "-f", "logs", "--no-render", "-n", "100", "--num-threads", "1"],
        zoo_dir,
    )
    assert f"Loading logs/{algo}/FetchReach-v4_1/FetchReach-v4.zip" in output
    assert "Success rate:" in output
    assert output.count("Episode Length 50") == 2


OPTIMIZE_FLAGS = [
    "--algo",
    "her_ddpg",
    *TRAIN_FLAGS,
    "-optimize",
    "--n-evaluations",
    "2",
    "--eval-episodes",
    "2",
    "--sampler",
    "random",
    "--no-optim-plots",
]


def test_zoo_optimize_two_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optimize.db'}"
    run_zoo(
        ["train", *OPTIMIZE_FLAGS, "--seed", "0", "-n", "150", "--n-trials", "2", "--storage", storage, "--study-name", "two"],
        tmp_path,
    )
    study = optuna.load_study(study_name="two", storage=storage)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        # Ranked on test success (a rate), not on the Fetch reward (in [-50, 0]).
        assert 0.0 <= trial.value <= 1.0
        assert set(trial.params) >= {"clip_return", "n_sampled_goal", "noise_eps", "random_eps", "train_freq", "net_arch"}

    # Zoo reloads a trial's configuration through our converter (it ignores --trial-id 0).
    reload_flags = "--seed 0 -n 100 --eval-freq -1 --study-name two --trial-id 1".split()
    run_zoo(["train", "--algo", "her_ddpg", *TRAIN_FLAGS, *reload_flags, "--storage", storage], tmp_path)
    # The tuning run made FetchReach-v4_1 (empty), the reloaded trial trained in FetchReach-v4_2.
    with open(tmp_path / "logs" / "her_ddpg" / "FetchReach-v4_2" / "FetchReach-v4" / "config.yml") as file:
        saved = yaml.load(file, Loader=yaml.UnsafeLoader)
    assert saved["learning_rate"] == study.trials[1].params["learning_rate"]
    assert saved["policy_kwargs"]["net_arch"] == NET_ARCHS[study.trials[1].params["net_arch"]]


def test_two_workers_tune_one_study(tmp_path: Path) -> None:
    """Two zoo processes share one Optuna study through a journal file: every trial of both is recorded."""
    journal = tmp_path / "study.log"
    flags = ["train", *OPTIMIZE_FLAGS, "-n", "120", "--n-trials", "2", "--storage", str(journal), "--study-name", "shared"]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "sb3_hher.zoo", *flags, "--seed", str(seed)],
            cwd=tmp_path,
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [worker.communicate(timeout=150)[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-4000:]

    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(backend))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(study.trials) == 4
    assert sorted(trial.number for trial in study.trials) == [0, 1, 2, 3]
    assert all(trial.state in finished for trial in study.trials)


@pytest.mark.parametrize(
    ("algo", "env_id", "config"),
    [
        # Zoo's own algorithm and config still work once sb3-hher is registered ...
        ("td3", "Pendulum-v1", "rl_zoo3/hyperparams/td3.yml"),
        # ... and zoo's algorithm reads sb3-hher's vanilla config on the ids sb3-hher configures.
        ("ddpg", "FetchReach-v4", str(REPOSITORY_HYPERPARAMS / "ddpg.yml")),
    ],
)
def test_zoo_algorithms_after_register(algo: str, env_id: str, config: str, tmp_path: Path) -> None:
    flags = "-n 150 --seed 0 --num-threads 1 -f logs --eval-freq -1 -params gradient_steps:2 learning_starts:50".split()
    output = run_zoo(["train", "--algo", algo, "--env", env_id, *flags], tmp_path)
    assert config in output
    assert (tmp_path / "logs" / algo / f"{env_id}_1" / f"{env_id}.zip").is_file()


# ---------------------------------------------------------------------------------------------------------------
# Demonstrations config (hyperparams/her_ddpg_demos.yml, read with -conf)

DEMOS_CONFIG = REPOSITORY_HYPERPARAMS / "her_ddpg_demos.yml"


def test_demos_config_is_the_benchmarked_one() -> None:
    with open(DEMOS_CONFIG) as file:
        entry = yaml.safe_load(file)["FetchPickAndPlace-v4"]
    with open(REPOSITORY / "docs" / "benchmarks" / "fetchpickandplace-v4-demos" / "config.json") as file:
        benchmark = json.load(file)
    expected = {**get_preset(benchmark["preset"]), **benchmark["overrides"]}
    ours = {key: value for key, value in entry.items() if key not in ZOO_ONLY_KEYS}
    assert eval(ours.pop("policy_kwargs")) == {"net_arch": [256, 256, 256]}
    # The demo file lives where zoo runs (the benchmark's copy sits next to its results).
    assert ours.pop("demo_file") == "demos/FetchPickAndPlace-v4.npz"
    expected.pop("demo_file")
    assert ours == expected


def test_zoo_train_with_demonstrations(tmp_path: Path) -> None:
    demos = tmp_path / "demos" / "FetchPickAndPlace-v4.npz"
    command = ["generate", "--env", "FetchPickAndPlace-v4", "--n-episodes", "2", "--out", str(demos)]
    generate = subprocess.run(
        [sys.executable, "-m", "sb3_hher.demos", *command],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generate.returncode == 0, generate.stderr[-4000:]
    flags = ["--env", "FetchPickAndPlace-v4", "--num-threads", "1", "-f", "logs", "--seed", "0", "-n", "200"]
    flags += ["-conf", str(DEMOS_CONFIG), "--eval-freq", "-1", *TINY_PARAMS, "learning_starts:60", "demo_batch_size:8"]
    output = run_zoo(["train", "--algo", "her_ddpg", *flags], tmp_path)
    assert f"Loading hyperparameters from: {DEMOS_CONFIG}" in output
    run_dir = tmp_path / "logs" / "her_ddpg" / "FetchPickAndPlace-v4_1"
    model = zoo_algorithms()["her_ddpg"].load(run_dir / "FetchPickAndPlace-v4.zip")
    assert model.bc_loss and model.q_filter and model.demo_batch_size == 8
    assert model.demo_file == "demos/FetchPickAndPlace-v4.npz"
