"""Energy-Based Prioritization (``episode_priority="energy"``): trajectory energy and the sampling it drives."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import SMALL_KWARGS, make_point_env
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher import HerDDPG
from sb3_hher.common.buffers import HindsightReplayBuffer, trajectory_energy

DT = 0.04


def test_energy_of_an_object_at_rest_is_zero():
    positions = np.tile([1.3, 0.7, 0.42], (51, 1))
    assert trajectory_energy(positions, dt=DT, clip=0.5) == 0.0


def test_energy_of_a_push_at_constant_speed_counts_the_acceleration_once():
    # Moves 4 mm per step along x from the first step on: E_t = v^2 / 2 for every t >= 1, one increase.
    positions = np.zeros((11, 3))
    positions[:, 0] = 0.004 * np.arange(11)
    speed = 0.004 / DT
    assert trajectory_energy(positions, dt=DT, clip=0.5) == pytest.approx(0.5 * speed**2)


def test_energy_of_a_lift_adds_the_potential_term_and_ignores_decreases():
    height = 0.01
    positions = np.zeros((6, 3))
    positions[1:, 2] = height  # lifted during step 1, then held
    expected = 0.5 * (height / DT) ** 2 + 9.81 * height  # E_1; E_2 = g h is a decrease, clipped to 0
    assert trajectory_energy(positions, dt=DT, clip=0.5) == pytest.approx(expected)
    # Each step's increase is clipped: a violent first step counts at most `clip`.
    positions[1:, 2] = 1.0
    assert trajectory_energy(positions, dt=DT, clip=0.5) == pytest.approx(0.5)


def test_energy_of_planar_goals_is_kinetic_only():
    positions = np.zeros((3, 2))
    positions[1:, 1] = 0.1  # moves in step 1 only: E_1 = v^2 / 2, E_2 = 0
    assert trajectory_energy(positions, dt=1.0, clip=10.0) == pytest.approx(0.5 * 0.1**2)


def _energy_buffer(**kwargs) -> tuple[HindsightReplayBuffer, DummyVecEnv]:
    env = DummyVecEnv([make_point_env])
    buffer = HindsightReplayBuffer(
        1_000, env.observation_space, env.action_space, env=env, n_sampled_goal=4, episode_priority="energy", **kwargs
    )
    return buffer, env


def _store_episode(buffer: HindsightReplayBuffer, achieved: np.ndarray, marker: float) -> None:
    """One episode whose achieved goals are ``achieved[0..T]`` and whose observations carry ``marker``."""
    length = len(achieved) - 1
    for t in range(length):
        obs = {
            "observation": np.full((1, 4), marker, dtype=np.float32),
            "achieved_goal": achieved[t][None].astype(np.float32),
            "desired_goal": np.full((1, 2), 0.9, dtype=np.float32),
        }
        next_obs = {**obs, "achieved_goal": achieved[t + 1][None].astype(np.float32)}
        done = np.array([t == length - 1])
        infos = [{"TimeLimit.truncated": bool(done[0])}]
        buffer.add(obs, next_obs, np.zeros((1, 2), dtype=np.float32), np.array([-1.0]), done, infos)


def test_episodes_are_drawn_in_proportion_to_their_energy():
    buffer, _ = _energy_buffer(energy_dt=1.0, energy_clip=10.0)
    still = np.zeros((11, 2))
    slow, fast = np.zeros((11, 2)), np.zeros((11, 2))
    slow[1:, 0], fast[1:, 0] = 0.1, 0.2  # one jump each: energies 0.005 and 0.02
    for marker, achieved in ((0.0, still), (1.0, slow), (2.0, fast), (3.0, still)):
        _store_episode(buffer, achieved, marker)
    np.random.seed(0)
    markers = buffer.sample(4_000).observations["observation"][:, 0].numpy()
    assert set(np.unique(markers)) == {1.0, 2.0}  # episodes where nothing moved are never replayed
    assert np.mean(markers == 2.0) == pytest.approx(0.8, abs=0.03)  # 0.02 / (0.005 + 0.02)


def test_sampling_stays_uniform_while_no_episode_has_energy():
    buffer, _ = _energy_buffer(energy_dt=1.0)
    still = np.zeros((11, 2))
    for marker in (0.0, 1.0):
        _store_episode(buffer, still, marker)
    np.random.seed(0)
    markers = buffer.sample(2_000).observations["observation"][:, 0].numpy()
    assert np.mean(markers == 1.0) == pytest.approx(0.5, abs=0.05)


def test_priorities_survive_pickling_and_sampling_resumes_identically():
    buffer, env = _energy_buffer(energy_dt=1.0)
    moving = np.zeros((11, 2))
    moving[:, 0] = np.linspace(0.0, 0.5, 11)
    _store_episode(buffer, np.zeros((11, 2)), 0.0)
    _store_episode(buffer, moving, 1.0)
    restored = pickle.loads(pickle.dumps(buffer))
    restored.set_env(env)
    np.testing.assert_array_equal(restored.transition_priority, buffer.transition_priority)
    np.random.seed(3)
    first = buffer.sample(64).observations["observation"].numpy()
    np.random.seed(3)
    second = restored.sample(64).observations["observation"].numpy()
    np.testing.assert_array_equal(first, second)


def test_energy_priority_errors():
    env = DummyVecEnv([make_point_env])
    space, actions = env.observation_space, env.action_space
    with pytest.raises(ValueError, match="episode_priority must be one of"):
        HindsightReplayBuffer(100, space, actions, env=env, episode_priority="td_error")
    with pytest.raises(ValueError, match="energy_clip must be > 0"):
        HindsightReplayBuffer(100, space, actions, env=env, episode_priority="energy", energy_clip=0.0)
    with pytest.raises(ValueError, match="energy_dt must be > 0"):
        HindsightReplayBuffer(100, space, actions, env=env, episode_priority="energy", energy_dt=-1.0)
    # The point env has no `dt`: the error says what to pass.
    with pytest.raises(ValueError, match="pass energy_dt"):
        HindsightReplayBuffer(100, space, actions, env=env, episode_priority="energy")


def test_her_ddpg_trains_with_energy_priority():
    model = HerDDPG(
        "MultiInputPolicy",
        make_point_env(),
        replay_buffer_kwargs={"episode_priority": "energy", "energy_dt": 1.0},
        seed=0,
        **SMALL_KWARGS,
    )
    model.learn(100)
    buffer = model.replay_buffer
    assert isinstance(buffer, HindsightReplayBuffer) and buffer.episode_priority == "energy"
    stored = buffer.transition_priority.ravel()[buffer.valid_indices()]
    # The point moves in every episode, so every stored transition has a positive weight.
    assert len(stored) >= 90 and np.all(stored > 0)


@pytest.mark.parametrize("seed", range(5))
def test_weights_match_the_episodes_in_place_through_wrap_around(seed):
    """Small buffer, 2 envs, random episode lengths, many overwrites: every sampleable slot's weight is the energy of
    the episode occupying it divided by that episode's length."""
    rng = np.random.default_rng(seed)
    env = DummyVecEnv([make_point_env, make_point_env])
    buffer = HindsightReplayBuffer(
        40,
        env.observation_space,
        env.action_space,
        env=env,
        n_envs=2,
        episode_priority="energy",
        energy_dt=1.0,
        energy_clip=10.0,
    )
    running = np.zeros(2, dtype=int)  # current episode lengths, kept below the 20 slots per env
    for _ in range(200):
        achieved = rng.normal(size=(2, 2)).astype(np.float32)
        obs = {
            "observation": np.zeros((2, 4), dtype=np.float32),
            "achieved_goal": achieved,
            "desired_goal": np.zeros((2, 2), dtype=np.float32),
        }
        next_obs = {**obs, "achieved_goal": achieved + rng.normal(scale=0.1, size=(2, 2)).astype(np.float32)}
        running += 1
        dones = (rng.random(2) < 0.25) | (running >= 15)
        running[dones] = 0
        infos = [{"TimeLimit.truncated": bool(done)} for done in dones]
        buffer.add(obs, next_obs, np.zeros((2, 2), dtype=np.float32), np.full(2, -1.0), dones, infos)
    valid = buffer.valid_indices()
    assert len(valid) > 0
    for flat in valid:
        pos, env_idx = np.unravel_index(flat, buffer.ep_length.shape)
        start, length = buffer.ep_start[pos, env_idx], buffer.ep_length[pos, env_idx]
        indices = (start + np.arange(length)) % buffer.buffer_size
        achieved = np.concatenate(
            (
                buffer.observations["achieved_goal"][indices, env_idx],
                buffer.next_observations["achieved_goal"][indices[-1:], env_idx],
            )
        )
        expected = trajectory_energy(achieved, dt=1.0, clip=10.0) / length
        assert buffer.transition_priority[pos, env_idx] == pytest.approx(expected)
    buffer.sample(8)  # builds the cumulative weights the draws use
    np.testing.assert_allclose(buffer._priority_cdf, np.cumsum(buffer.transition_priority.ravel()[valid]))


def test_env_without_dt_is_refused_when_set_after_an_envless_construction():
    env = DummyVecEnv([make_point_env])
    buffer = HindsightReplayBuffer(100, env.observation_space, env.action_space, env=None, episode_priority="energy")
    with pytest.raises(ValueError, match="pass energy_dt"):
        buffer.set_env(env)


def _load_example(name: str):
    """Import ``examples/<name>.py`` (the examples folder is not a package)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_object_moves_example_reads_a_saved_buffer(tmp_path):
    module = _load_example("object_moves")

    buffer, _ = _energy_buffer(energy_dt=1.0)
    moving = np.zeros((11, 2))
    moving[6:, 1] = 0.03  # moves 3 cm at step 6, then stays
    _store_episode(buffer, np.zeros((11, 2)), 0.0)
    _store_episode(buffer, moving, 1.0)
    path = tmp_path / "replay_buffer.pkl"
    path.write_bytes(pickle.dumps(buffer))
    np.testing.assert_allclose(module.object_moves(str(path)), [0.0, 0.03], atol=1e-7)


def test_failure_kinds_put_each_failure_in_one_kind():
    module = _load_example("greedy_object_moves")
    # Episodes: success; reached and left (and fell); fell; not moved; short of the goal; success that had fallen.
    success = np.array([True, False, False, False, False, True])
    reached = np.array([True, True, False, False, False, True])
    fell = np.array([False, True, True, False, False, True])
    moved = np.array([True, True, True, False, True, True])
    kinds = module.failure_kinds(success, reached, fell, moved)
    assert {kind: np.flatnonzero(mask).tolist() for kind, mask in kinds.items()} == {
        "left the goal": [1],
        "object off the table": [2],
        "not moved": [3],
        "short of the goal": [4],
    }
    result = {
        "success": success,
        "reached_episodes": reached,
        "fell_episodes": fell,
        "moved_episodes": moved,
        "start_distance": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.3]),
    }
    assert module.failure_summary(result) == (
        "failures 4: left the goal 1, object off the table 1, not moved 1, short of the goal 1; median start goal "
        "distance of failures 0.350 m, of successes 0.200 m"
    )


def test_greedy_object_moves_example_counts_rollouts():
    from sb3_hher import HerDDPG
    from sb3_hher.common.goal_env import make_goal_env

    module = _load_example("greedy_object_moves")

    env = make_goal_env("FetchPush-v4")
    model = HerDDPG("MultiInputPolicy", env, buffer_size=1000, seed=0)

    class Still:
        """A policy that never acts: the object cannot move and the gripper stays where it starts."""

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros(env.action_space.shape, dtype=np.float32), state

    still = module.greedy_object_moves(Still(), env, n_episodes=2, seed=3)
    assert still["moved"] == 0 and len(still["closest"]) == 2 and np.all(still["closest"] > 0)
    # The object never moves: it ends as far from the goal as it started, and cannot have reached and left it.
    starts = [env.reset(seed=seed)[0] for seed in (3, 4)]
    np.testing.assert_allclose(
        still["final_distance"], [np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]) for obs in starts], atol=1e-6
    )
    assert still["left_goal"] == 0 and still["fell"] == 0
    np.testing.assert_allclose(still["start_distance"], still["final_distance"], atol=1e-6)
    # Every failure of a policy that never acts is an object that did not move.
    n_failed = int((~still["success"]).sum())
    assert not still["moved_episodes"].any() and not still["fell_episodes"].any()
    assert module.failure_summary(still).startswith(
        f"failures {n_failed}: left the goal 0, object off the table 0, not moved {n_failed}, short of the goal 0;"
    )
    result = module.greedy_object_moves(model, env, n_episodes=2, seed=3)
    assert 0 <= result["moved"] <= 2 and 0 <= result["successes"] + result["left_goal"] <= 2
