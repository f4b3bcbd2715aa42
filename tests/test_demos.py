"""Demonstrations: scripted Fetch controllers, the two file layouts, env checks, and buffer-ready transitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher.common.goal_env import make_goal_env
from sb3_hher.demos import (
    Demonstrations,
    ScriptedController,
    generate_demonstrations,
    load_demonstrations,
    make_controller,
    save_demonstrations,
)
from sb3_hher.demos.__main__ import main

# FetchPush-v4 / FetchPickAndPlace-v4 shapes.
OBS_DIM, GOAL_DIM, ACT_DIM = 25, 3, 4


def random_demos(n_episodes: int = 3, n_steps: int = 5, obs_dim: int = OBS_DIM, seed: int = 0) -> Demonstrations:
    rng = np.random.default_rng(seed)
    return Demonstrations(
        observation=rng.normal(size=(n_episodes, n_steps + 1, obs_dim)),
        achieved_goal=rng.normal(size=(n_episodes, n_steps + 1, GOAL_DIM)),
        desired_goal=rng.normal(size=(n_episodes, n_steps + 1, GOAL_DIM)),
        action=rng.uniform(-1, 1, size=(n_episodes, n_steps, ACT_DIM)).astype(np.float32),
        is_success=rng.integers(0, 2, size=(n_episodes, n_steps)).astype(np.float32),
        env_id="FetchPush-v4",
    )


def assert_same(a: Demonstrations, b: Demonstrations) -> None:
    for key in ("observation", "achieved_goal", "desired_goal", "action", "is_success"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


@pytest.fixture(scope="module")
def push_env() -> Iterator[gym.Env]:
    env = make_goal_env("FetchPush-v4")
    yield env
    env.close()


def test_round_trip_own_format(tmp_path: Path) -> None:
    demos = random_demos()
    path = tmp_path / "demos.npz"
    save_demonstrations(path, demos, env_id="FetchPush-v4")
    with np.load(path, allow_pickle=False) as data:  # our format needs no pickle
        assert int(data["format_version"]) == 1
        assert str(data["env_id"]) == "FetchPush-v4"
        assert data["observation"].shape == (3, 6, OBS_DIM)
    loaded = load_demonstrations(path)
    assert_same(demos, loaded)
    assert loaded.env_id == "FetchPush-v4"
    assert (loaded.n_episodes, loaded.episode_length) == (3, 5)
    # Written as named, without np.savez's ".npz" suffix added.
    save_demonstrations(tmp_path / "plain", demos)
    assert (tmp_path / "plain").exists()
    assert_same(demos, load_demonstrations(tmp_path / "plain"))


def test_load_hand_made_baselines_file(tmp_path: Path, push_env: gym.Env) -> None:
    # As baselines' fetch_data_generation.py writes it: lists of T + 1 obs dicts, T actions (unclipped),
    # T info dicts per episode, saved with np.savez_compressed(acs=..., obs=..., info=...).
    rng = np.random.default_rng(1)
    n_episodes, n_steps = 2, 4
    observations, actions, infos = [], [], []
    for _ in range(n_episodes):
        observations.append(
            [
                {
                    "observation": rng.normal(size=OBS_DIM),
                    "achieved_goal": rng.normal(size=GOAL_DIM),
                    "desired_goal": rng.normal(size=GOAL_DIM),
                }
                for _ in range(n_steps + 1)
            ]
        )
        actions.append([[0.1, -0.2, 3.0, 0.05] for _ in range(n_steps)])
        infos.append([{"is_success": np.float32(t == n_steps - 1)} for t in range(n_steps)])
    obs_array = np.empty((n_episodes, n_steps + 1), dtype=object)
    info_array = np.empty((n_episodes, n_steps), dtype=object)
    for episode in range(n_episodes):
        for t in range(n_steps + 1):
            obs_array[episode, t] = observations[episode][t]
        for t in range(n_steps):
            info_array[episode, t] = infos[episode][t]
    path = tmp_path / "data_fetch_random_2.npz"
    np.savez_compressed(path, acs=np.array(actions), obs=obs_array, info=info_array)

    demos = load_demonstrations(path)
    assert demos.observation.shape == (n_episodes, n_steps + 1, OBS_DIM)
    assert demos.desired_goal.shape == (n_episodes, n_steps + 1, GOAL_DIM)
    assert demos.action.shape == (n_episodes, n_steps, ACT_DIM)
    np.testing.assert_allclose(demos.observation[1, 3], observations[1][3]["observation"])
    np.testing.assert_allclose(demos.achieved_goal[0, 4], observations[0][4]["achieved_goal"])
    np.testing.assert_array_equal(demos.is_success[:, -1], [1.0, 1.0])
    assert demos.success_rate == 1.0
    assert demos.action[0, 0, 2] == pytest.approx(3.0)
    # With the env: checked, and the actions clipped as the env clips them.
    clipped = load_demonstrations(path, env=push_env)
    assert clipped.action[0, 0, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(clipped.action[0, 0, :2], [0.1, -0.2], rtol=1e-6)


def test_baselines_layout_round_trip(tmp_path: Path) -> None:
    demos = random_demos()
    path = tmp_path / "baselines.npz"
    save_demonstrations(path, demos, format="baselines")
    with np.load(path, allow_pickle=True) as data:
        assert set(data.files) == {"obs", "acs", "info"}
        assert isinstance(data["obs"][0][0], dict)
    assert_same(demos, load_demonstrations(path))


def test_wrong_shape_file_raises_clear_error(tmp_path: Path, push_env: gym.Env) -> None:
    path = tmp_path / "wrong.npz"
    save_demonstrations(path, random_demos(obs_dim=10))
    with pytest.raises(ValueError, match=r"'observation': expected per-step shape \(25,\).*got \(10,\)") as error:
        load_demonstrations(path, env=push_env)
    assert "wrong.npz" in str(error.value)
    assert "'action'" not in str(error.value)  # only the mismatching key is named
    # The same through a VecEnv.
    vec_env = DummyVecEnv([lambda: make_goal_env("FetchPush-v4")])
    with pytest.raises(ValueError, match=r"'observation': expected per-step shape \(25,\)"):
        load_demonstrations(path, env=vec_env)
    vec_env.close()


def test_invalid_files_and_arrays(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, states=np.zeros(3))
    with pytest.raises(ValueError, match="unknown layout with keys"):
        load_demonstrations(path)
    demos = random_demos()
    with pytest.raises(ValueError, match=r"'observation' has shape \(3, 5, 25\), expected \(3, 6, dim\)"):
        Demonstrations(demos.observation[:, :-1], demos.achieved_goal, demos.desired_goal, demos.action, demos.is_success)
    with pytest.raises(ValueError, match="Cannot select 4 episodes out of 3"):
        demos.select(4)
    assert demos.select(2).n_episodes == 2
    with pytest.raises(ValueError, match="No scripted controller for 'FetchSlide-v4'"):
        make_controller("FetchSlide-v4")


@pytest.mark.parametrize("env_id", ["FetchPickAndPlace-v4", "FetchPush-v4"])
def test_controller_success_rate(env_id: str) -> None:
    # Measured: PickAndPlace 100% (100 episodes, seeds 0 and 1; 500, seed 2), Push 100% (100, seeds 0 and 1)
    # and 99.8% (500, seed 2). 10 episodes here to stay fast.
    demos, stats = generate_demonstrations(env_id, 10, seed=0, only_successful=False)
    assert stats.episodes == demos.n_episodes == 10
    assert stats.success_rate >= 0.8
    assert demos.success_rate == stats.success_rate
    assert np.all(np.abs(demos.action) <= 1.0)


def test_generation_is_deterministic_and_keeps_successes() -> None:
    first, _ = generate_demonstrations("FetchPickAndPlace-v4", 2, seed=3)
    second, _ = generate_demonstrations("FetchPickAndPlace-v4", 2, seed=3)
    assert_same(first, second)
    assert first.success_rate == 1.0
    other, _ = generate_demonstrations("FetchPickAndPlace-v4", 2, seed=4)
    assert not np.array_equal(first.desired_goal, other.desired_goal)


class IdleController(ScriptedController):
    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return np.zeros(4, dtype=np.float32)


def test_generation_gives_up_after_max_attempts() -> None:
    with pytest.raises(RuntimeError, match="Only 0 of 2 successful episodes after 3 attempts"):
        generate_demonstrations("FetchPickAndPlace-v4", 2, max_attempts=3, controller=IdleController())


def test_episodes_feed_a_replay_buffer() -> None:
    demos, _ = generate_demonstrations("FetchPush-v4", 2, seed=0)
    vec_env = DummyVecEnv([lambda: make_goal_env("FetchPush-v4")])
    episodes = list(demos.iter_episodes(vec_env))
    assert len(episodes) == 2
    episode = episodes[0]
    n_steps = demos.episode_length
    assert episode.obs["observation"].shape == (n_steps, OBS_DIM)
    np.testing.assert_array_equal(episode.next_obs["achieved_goal"], demos.achieved_goal[0, 1:])
    distance = np.linalg.norm(demos.achieved_goal[0, 1:] - demos.desired_goal[0, 1:], axis=-1)
    np.testing.assert_array_equal(episode.reward, -(distance > 0.05).astype(np.float32))
    assert episode.reward[-1] == 0.0  # successful demonstration
    np.testing.assert_array_equal(episode.done, np.arange(n_steps) == n_steps - 1)
    assert episode.infos[-1]["TimeLimit.truncated"] and episode.infos[-1]["is_success"] == 1.0
    # The same rewards from an unwrapped gym env.
    np.testing.assert_array_equal(next(demos.iter_episodes(vec_env.envs[0])).reward, episode.reward)

    assert isinstance(vec_env.observation_space, gym.spaces.Dict)
    buffer = HerReplayBuffer(
        1_000, vec_env.observation_space, vec_env.action_space, env=vec_env, n_sampled_goal=4, goal_selection_strategy="future"
    )
    for demo_episode in episodes:
        for step in demo_episode.buffer_steps():
            buffer.add(*step)
    assert buffer.size() == 2 * n_steps
    samples = buffer.sample(16)
    assert samples.actions.shape == (16, ACT_DIM)
    assert not samples.dones.any()  # time limits do not stop bootstrapping
    vec_env.close()


def test_cli_writes_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demos.npz"
    main(["generate", "--env", "FetchPickAndPlace-v4", "--n-episodes", "3", "--out", str(out), "--seed", "1"])
    printed = capsys.readouterr().out
    assert "Controller success rate on FetchPickAndPlace-v4" in printed
    env = make_goal_env("FetchPickAndPlace-v4")
    demos = load_demonstrations(out, env=env)
    env.close()
    assert demos.n_episodes == 3
    assert demos.episode_length == 50
    assert demos.env_id == "FetchPickAndPlace-v4"
    assert demos.success_rate == 1.0
