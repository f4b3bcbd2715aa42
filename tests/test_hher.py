"""Tests of HHER (Hierarchical HER): transitions, bounds, flat equivalence, save/load, predict with state, learning."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from sb3_hher.common.goal_env import make_goal_env
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from sb3_hher.common.subgoals import SubgoalSpace
from sb3_hher.her import HerDDPG, HerTD3
from sb3_hher.hher import HHER, HierarchyState, LevelReplayBuffer
from sb3_hher.hher.hher import _LevelLogger

th.set_num_threads(1)

SMALL_NET = {"net_arch": [32, 32]}


class PointGoalEnv(gym.Env):
    """
    A point in ``[-1, 1]^dim`` moved by ``step_size * action``; deterministic given its start and goal.

    Rewards follow Fetch (``{-1, 0}``, ``info["is_success"]``) or PointMaze (``{0, 1}``, ``info["success"]``).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        dim: int = 2,
        step_size: float = 0.2,
        threshold: float = 0.1,
        start: np.ndarray | None = None,
        goal: np.ndarray | None = None,
        reward_style: str = "fetch",
    ) -> None:
        self.dim = dim
        self.step_size = step_size
        self.threshold = threshold
        self.fixed_start = None if start is None else np.asarray(start, dtype=np.float64)
        self.fixed_goal = None if goal is None else np.asarray(goal, dtype=np.float64)
        self.reward_style = reward_style
        box = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float64)
        self.observation_space = spaces.Dict({"observation": box, "achieved_goal": box, "desired_goal": box})
        self.action_space = spaces.Box(-1.0, 1.0, shape=(dim,), dtype=np.float32)
        self.position = np.zeros(dim)
        self.goal = np.zeros(dim)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"observation": self.position.copy(), "achieved_goal": self.position.copy(), "desired_goal": self.goal.copy()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        uniform = self.np_random.uniform(-0.9, 0.9, size=(2, self.dim))
        self.position = uniform[0] if self.fixed_start is None else self.fixed_start.copy()
        self.goal = uniform[1] if self.fixed_goal is None else self.fixed_goal.copy()
        return self._obs(), {}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        reached = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1) <= self.threshold
        if self.reward_style == "fetch":
            return reached.astype(np.float64) - 1.0
        return reached.astype(np.float64)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        self.position = np.clip(self.position + self.step_size * np.asarray(action, dtype=np.float64), -1.0, 1.0)
        reward = float(self.compute_reward(self.position, self.goal, None))
        success = bool(np.linalg.norm(self.position - self.goal) <= self.threshold)
        info = {"is_success": success} if self.reward_style == "fetch" else {"success": success}
        return self._obs(), reward, False, False, info


def make_point_env(max_steps: int = 20, **kwargs: Any) -> gym.Env:
    return TimeLimit(PointGoalEnv(**kwargs), max_episode_steps=max_steps)


def small_hher(env: Any, **kwargs: Any) -> HHER:
    settings: dict[str, Any] = {
        "buffer_size": 5_000,
        "batch_size": 32,
        "gradient_steps": 4,
        "learning_starts": 0,
        "train_freq": (1, "episode"),
        "policy_kwargs": SMALL_NET,
        "seed": 0,
    }
    settings.update(kwargs)
    return HHER("MultiInputPolicy", env, **settings)


class Script:
    """Replaces HHER's exploration with scripted scaled actions per level (one list per level, consumed in order)."""

    def __init__(self, model: HHER, actions: dict[int, list[float]]) -> None:
        self.actions = {level: list(values) for level, values in actions.items()}
        self.calls: list[tuple[int, float]] = []
        model._explore = self  # type: ignore[method-assign]

    def __call__(self, level: int, level_observation: dict[str, np.ndarray], envs: np.ndarray, warmup: bool) -> np.ndarray:
        value = self.actions[level].pop(0) if len(self.actions[level]) > 1 else self.actions[level][0]
        self.calls.append((level, value))
        return np.full((len(envs), 1), value, dtype=np.float32)


def stored(buffer: LevelReplayBuffer) -> dict[str, np.ndarray]:
    n = buffer.pos
    return {
        "x": buffer.observations["observation"][:n, 0, 0],
        "next_x": buffer.next_observations["observation"][:n, 0, 0],
        "achieved": buffer.next_observations["achieved_goal"][:n, 0],
        "goal": buffer.observations["desired_goal"][:n, 0],
        "action": buffer.actions[:n, 0, 0],
        "reward": buffer.rewards[:n, 0],
        "done": buffer.dones[:n, 0],
        "timeout": buffer.timeouts[:n, 0],
        "ep_length": buffer.ep_length[:n, 0],
    }


# ----------------------------------------------------------------------------- transition kinds


def scripted_episode(subgoal_test_prob: float) -> HHER:
    """
    One episode of 6 steps on a line, H = 3, start 0, env goal 0.8, level 0 always pushes +1 (+0.2 a step):

    - attempt 1: subgoal 1.0, reached 0.2, 0.4, 0.6 -> missed after H actions (hindsight action 0.6);
    - attempt 2: subgoal 0.8, reached after one action (the env goal too: top-level reward 0);
    - attempt 3: subgoal -1.0, two actions (1.0, 1.0) before the env's time limit -> missed, not exhausted.
    """
    env = make_point_env(max_steps=6, dim=1, start=[0.0], goal=[0.8])
    model = small_hher(env, subgoal_horizon=3, subgoal_test_prob=subgoal_test_prob, gradient_steps=0)
    Script(model, {1: [1.0, 0.8, -1.0], 0: [1.0]})
    model.learn(total_timesteps=6)
    return model


@pytest.mark.parametrize("subgoal_test_prob", [0.0, 1.0])
def test_hindsight_action_transitions(subgoal_test_prob: float) -> None:
    model = scripted_episode(subgoal_test_prob)
    assert model.subgoal_horizon == 3 and model.subgoal_penalty == -3.0
    top = stored(model.levels[1].replay_buffer)
    # One upper-level transition per attempt; the proposed subgoal when reached, the reached one otherwise.
    np.testing.assert_allclose(top["x"], [0.0, 0.6, 0.8], atol=1e-6)
    np.testing.assert_allclose(top["next_x"], [0.6, 0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(top["action"], [0.6, 0.8, 1.0], atol=1e-6)
    # Top-level reward is HAC's {-1, 0}, read from the env's goal: 0 only where the env goal (0.8) is achieved.
    np.testing.assert_allclose(top["reward"], [-1.0, 0.0, -1.0])
    # One episode of the top level: the env episode, truncated by the time limit (bootstrapped).
    np.testing.assert_array_equal(top["done"], [0, 0, 1])
    np.testing.assert_array_equal(top["timeout"], [0, 0, 1])
    np.testing.assert_array_equal(top["ep_length"], [3, 3, 3])


def test_lower_level_attempts_are_episodes() -> None:
    model = scripted_episode(0.3)
    low = stored(model.levels[0].replay_buffer)
    np.testing.assert_allclose(low["x"], [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-6)
    np.testing.assert_allclose(low["goal"][:, 0], [1.0, 1.0, 1.0, 0.8, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(low["action"], np.ones(6))
    # Subgoal reward {-1, 0}: only the step reaching the subgoal 0.8 earns 0.
    np.testing.assert_allclose(low["reward"], [-1, -1, -1, 0, -1, -1])
    # Attempts of at most H = 3 actions, each its own HER episode, ended by a truncation (bootstrapped).
    np.testing.assert_array_equal(low["ep_length"], [3, 3, 3, 1, 2, 2])
    np.testing.assert_array_equal(low["done"], [0, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(low["timeout"], low["done"])


@pytest.mark.parametrize("subgoal_test_prob", [0.0, 1.0])
def test_subgoal_test_penalty_transitions(subgoal_test_prob: float) -> None:
    model = scripted_episode(subgoal_test_prob)
    buffer = model.levels[1].replay_buffer
    assert isinstance(buffer, LevelReplayBuffer)
    if subgoal_test_prob == 0.0:
        assert buffer.n_penalty == 0
        return
    # Only attempt 1 ran out of its H actions under a test: attempt 2 reached its subgoal, attempt 3 was cut by the
    # env's time limit.
    assert buffer.n_penalty == 1
    np.testing.assert_allclose(buffer.penalty_actions[0], [1.0])
    assert buffer.penalty_rewards[0] == -3.0
    np.testing.assert_allclose(buffer.penalty_observations["observation"][0], [0.0])
    np.testing.assert_allclose(buffer.penalty_next_observations["observation"][0], [0.6], atol=1e-6)
    # Mixed in at HAC's weight: 1 penalty against 3 transitions x (1 + n_sampled_goal) copies.
    assert buffer.penalty_fraction() == pytest.approx(1 / (1 + 3 * 5))
    np.random.seed(0)
    batch = buffer.sample(2_000)
    rewards, dones, actions = batch.rewards.numpy()[:, 0], batch.dones.numpy()[:, 0], batch.actions.numpy()[:, 0]
    penalty_rows = rewards == -3.0
    assert 0.03 < penalty_rows.mean() < 0.10
    # Penalty rows: terminal (discount 0), the original subgoal, the original goal: never relabelled.
    assert np.all(dones[penalty_rows] == 1.0)
    np.testing.assert_allclose(actions[penalty_rows], 1.0)
    np.testing.assert_allclose(batch.observations["desired_goal"].numpy()[penalty_rows], 0.8, atol=1e-6)
    # Every other row is an episode transition (bootstrapped through the time limit) with a {-1, 0} reward.
    assert np.all(dones[~penalty_rows] == 0.0)
    assert set(np.unique(rewards[~penalty_rows])) <= {-1.0, 0.0}


@pytest.mark.parametrize("goal_threshold", [None, 0.1])
def test_lower_level_returns_control_at_the_env_goal(goal_threshold: float | None) -> None:
    """
    Start 0, env goal 0.4, H = 3, subgoals 1.0, level 0 pushes +0.2 a step, every subgoal tested. With
    ``goal_threshold`` the first attempt ends at 0.4, where the env goal is achieved (not exhausted: no penalty);
    without, it runs its H actions to 0.6 and earns the penalty.
    """
    env = make_point_env(max_steps=4, dim=1, start=[0.0], goal=[0.4])
    model = small_hher(env, subgoal_horizon=3, subgoal_test_prob=1.0, gradient_steps=0, goal_threshold=goal_threshold)
    assert model.policy.goal_threshold == goal_threshold
    Script(model, {1: [1.0], 0: [1.0]})
    model.learn(total_timesteps=4)
    top, low = stored(model.levels[1].replay_buffer), stored(model.levels[0].replay_buffer)
    buffer = model.levels[1].replay_buffer
    if goal_threshold is None:
        np.testing.assert_allclose(top["next_x"], [0.6, 0.8], atol=1e-6)
        np.testing.assert_array_equal(low["ep_length"], [3, 3, 3, 1])
        assert buffer.n_penalty == 1
    else:
        np.testing.assert_allclose(top["next_x"], [0.4, 0.8], atol=1e-6)
        np.testing.assert_allclose(top["reward"], [0.0, -1.0])
        np.testing.assert_array_equal(low["ep_length"], [2, 2, 2, 2])
        assert buffer.n_penalty == 0

    # predict does the same: at the env goal, the level above proposes a new subgoal although level 0 has actions left.
    at_goal = {"observation": np.array([[0.4]]), "achieved_goal": np.array([[0.4]]), "desired_goal": np.array([[0.45]])}
    busy = HierarchyState(np.array([[[1.0]]], dtype=np.float32), np.array([[2]]))
    _, after = model.predict(at_goal, state=busy)
    np.testing.assert_array_equal(after.steps_left, [[1]] if goal_threshold is None else [[2]])


def test_hold_goal_keeps_the_hierarchy_on_the_env_goal(tmp_path: Any) -> None:
    """
    Start 0, env goal 0.4, H = 3, the top level proposes 1.0, level 0 pushes +0.2 a step. At 0.4 the env goal is
    achieved, level 0's attempt ends, and with ``hold_goal`` the top level's next subgoal is the current state (0.4),
    in training and in ``predict``; without, it is the actor's proposal.
    """
    env = make_point_env(max_steps=4, dim=1, start=[0.0], goal=[0.4])
    model = small_hher(env, subgoal_horizon=3, gradient_steps=0, goal_threshold=0.1, hold_goal=True)
    Script(model, {1: [1.0], 0: [1.0]})
    model.learn(total_timesteps=4)
    low = stored(model.levels[0].replay_buffer)
    np.testing.assert_allclose(low["goal"][:, 0], [1.0, 1.0, 0.4, 0.4], atol=1e-6)
    np.testing.assert_allclose(model._diagnostics["rollout/goal_hold_fraction"], [0.0, 1.0])

    at_goal = {"observation": np.array([[0.4]]), "achieved_goal": np.array([[0.4]]), "desired_goal": np.array([[0.45]])}
    away = {"observation": np.array([[0.0]]), "achieved_goal": np.array([[0.0]]), "desired_goal": np.array([[0.45]])}
    busy = HierarchyState(np.array([[[1.0]]], dtype=np.float32), np.array([[2]]))
    _, held = model.predict(at_goal, state=busy.copy())
    np.testing.assert_allclose(held.subgoals[0, 0], [0.4], atol=1e-6)
    # Off the goal the actor proposes as usual.
    _, proposed = model.predict(away, state=None)
    actor = model.policy.unscale_level_action(1, model.policy.level_actions(1, away))
    np.testing.assert_allclose(proposed.subgoals[0], actor, atol=1e-6)

    # Saved with the model; switched off, predict proposes the actor's subgoal at the goal too.
    model.save(tmp_path / "model.zip")
    loaded = HHER.load(tmp_path / "model.zip")
    assert loaded.hold_goal and loaded.policy.hold_goal
    loaded.policy.hold_goal = False
    _, free = loaded.predict(at_goal, state=busy.copy())
    actor = loaded.policy.unscale_level_action(1, loaded.policy.level_actions(1, at_goal))
    np.testing.assert_allclose(free.subgoals[0], actor, atol=1e-6)


def test_hold_goal_errors() -> None:
    with pytest.raises(ValueError, match=r"hold_goal needs a hierarchy \(n_levels >= 2\)"):
        small_hher(make_point_env(), n_levels=1, hold_goal=True)
    with pytest.raises(ValueError, match="hold_goal needs a goal_threshold"):
        small_hher(make_point_env(), goal_threshold=None, hold_goal=True)


def test_goal_threshold_resolution(tmp_path: Any) -> None:
    # "auto": Fetch's distance_threshold; nothing for an env that does not expose one.
    fetch = HHER("MultiInputPolicy", make_goal_env("FetchPush-v4"), buffer_size=1_000)
    assert fetch.goal_threshold == 0.05 and fetch.policy.goal_threshold == 0.05
    assert small_hher(make_point_env()).goal_threshold is None
    # A distance the env's reward disagrees with is refused; a bad value too.
    with pytest.raises(ValueError, match=r"goal_threshold=0\.3 cannot tell"):
        small_hher(make_point_env(), goal_threshold=0.3)
    with pytest.raises(ValueError, match="goal_threshold must be"):
        small_hher(make_point_env(), goal_threshold=-1.0)
    # Saved with the model, used without an env.
    model = small_hher(make_point_env(), goal_threshold=0.1)
    model.save(tmp_path / "model.zip")
    assert HHER.load(tmp_path / "model.zip").policy.goal_threshold == 0.1


def test_hindsight_goal_relabelling_at_every_level() -> None:
    model = scripted_episode(1.0)
    np.random.seed(1)
    for level in range(2):
        buffer = model.levels[level].replay_buffer
        batch = buffer.sample(1_000)
        achieved = batch.next_observations["achieved_goal"].numpy()
        goals = batch.observations["desired_goal"].numpy()
        np.testing.assert_array_equal(goals, batch.next_observations["desired_goal"].numpy())
        episode_rows = batch.dones.numpy()[:, 0] == 0.0
        if level == 0:
            expected = model.subgoal_space.compute_reward(achieved, goals)
        else:
            expected = model._top_level_reward(achieved, goals)
        rewards = batch.rewards.numpy()[:, 0]
        # Relabelled or not, the reward is the level's reward for the goal it is paired with (penalties aside).
        np.testing.assert_allclose(rewards[episode_rows | (level == 0)], expected[episode_rows | (level == 0)])
        x = np.round(batch.observations["observation"].numpy()[:, 0], 4)
        if level == 0:
            # Subgoal of each attempt, by the position it was pursued from.
            original = np.where(x < 0.5, 1.0, np.where(x < 0.7, 0.8, -1.0))
        else:
            original = np.full(len(x), 0.8)
        relabelled = np.abs(goals[:, 0] - original) > 1e-4
        assert relabelled[episode_rows].mean() > 0.4, f"level {level}: HER should relabel most goals (k = 4)"
        # Relabelled goals are states achieved in the same attempt.
        all_achieved = np.asarray(buffer.next_observations["achieved_goal"][: buffer.pos, 0, 0], dtype=np.float64)
        distances = np.abs(goals[relabelled, 0].astype(np.float64)[:, None] - all_achieved[None, :])
        assert np.all(distances.min(axis=1) < 1e-5)


def test_lower_levels_act_greedily_under_a_subgoal_test() -> None:
    model = small_hher(make_point_env(), learning_starts=0)
    model.learn(total_timesteps=40)
    rollout = model._rollout
    assert rollout is not None
    observation = model.policy.level_observation(0, model._last_obs, rollout.state.subgoals)
    greedy_actions = model.policy.level_actions(0, observation)
    rollout.greedy[0] = True
    np.testing.assert_allclose(model._explore(0, observation, np.arange(1), warmup=False), greedy_actions, atol=1e-6)
    rollout.greedy[0] = False
    np.random.seed(0)
    noisy = np.stack([model._explore(0, observation, np.arange(1), warmup=False) for _ in range(20)])
    assert np.abs(noisy - greedy_actions).max() > 1e-3


def test_pointmaze_style_rewards_and_success() -> None:
    """A {0, 1} env with info["success"]: the top level still learns from {-1, 0} rewards and success is logged."""
    env = make_point_env(max_steps=6, dim=1, start=[0.0], goal=[0.8], reward_style="maze")
    model = small_hher(env, subgoal_horizon=3, gradient_steps=0)
    Script(model, {1: [1.0, 0.8, -1.0], 0: [1.0]})
    model.learn(total_timesteps=6)
    np.testing.assert_allclose(stored(model.levels[1].replay_buffer)["reward"], [-1.0, 0.0, -1.0])
    assert model.levels[1].return_bounds == (-3.0, 0.0)
    assert list(model.ep_success_buffer) == [0.0]


# ----------------------------------------------------------------------------- bounds


def test_subgoals_always_inside_bounds() -> None:
    space = SubgoalSpace(low=[-0.5, -0.2], high=[0.3, 0.4], thresholds=0.05, source="achieved_goal")
    model = small_hher(
        make_vec_env(make_point_env, n_envs=2, seed=0),
        subgoal_space=space,
        subgoal_horizon=4,
        random_subgoal_prob=0.5,
        subgoal_noise_std=2.0,
        learning_starts=50,
    )
    proposed: list[np.ndarray] = []
    original = model.policy.act

    def recording_act(observation: dict, state: HierarchyState, select: Any = None) -> np.ndarray:
        scaled = original(observation, state, select)
        proposed.append(state.subgoals.copy())
        return scaled

    model.policy.act = recording_act  # type: ignore[method-assign]
    model.learn(total_timesteps=300)
    subgoals = np.concatenate([p.reshape(-1, 2) for p in proposed])
    # (float32 rounding of the bounds aside)
    assert np.all(space.contains(subgoals, atol=1e-6))
    # Huge noise pushes many subgoals onto the bounds: they are clipped there, and logged.
    assert np.mean(model._diagnostics["rollout/level_1/subgoal_at_bounds_fraction"]) > 0.3
    # The upper level's stored actions (hindsight actions included) stay in [-1, 1], i.e. inside the bounds.
    actions = model.levels[1].replay_buffer.actions[: model.levels[1].replay_buffer.pos]
    assert np.all(np.abs(actions) <= 1.0 + 1e-6)
    # An actor driven far outside its normal inputs still proposes subgoals inside the bounds.
    rng = np.random.default_rng(0)
    far = {key: rng.normal(0, 100, size=(64, 2)) for key in ("observation", "achieved_goal", "desired_goal")}
    scaled = model.policy.level_actions(1, far)
    assert np.all(space.contains(model.policy.unscale_level_action(1, scaled), atol=1e-6))


# ----------------------------------------------------------------------------- n_levels = 1


@pytest.mark.parametrize("learner", ["ddpg", "td3"])
def test_one_level_is_the_flat_learner(learner: str) -> None:
    kwargs: dict[str, Any] = {
        "buffer_size": 2_000,
        "batch_size": 32,
        "gradient_steps": 5,
        "learning_starts": 50,
        "policy_kwargs": SMALL_NET,
        "seed": 3,
    }
    flat_class = HerDDPG if learner == "ddpg" else HerTD3
    flat = flat_class("MultiInputPolicy", make_point_env(), **kwargs)
    flat.learn(total_timesteps=200)
    hher = HHER("MultiInputPolicy", make_point_env(), n_levels=1, level_learners=learner, **kwargs)
    hher.learn(total_timesteps=200)
    assert hher.num_timesteps == flat.num_timesteps == 200
    flat_params = flat.policy.state_dict()
    hher_params = hher.levels[0].policy.state_dict()
    assert flat_params.keys() == hher_params.keys()
    for key, value in flat_params.items():
        assert th.equal(value, hher_params[key]), key
    obs = {key: np.zeros((3, 2)) for key in ("observation", "achieved_goal", "desired_goal")}
    np.testing.assert_array_equal(flat.predict(obs)[0], hher.predict(obs)[0])


# ----------------------------------------------------------------------------- save / load


def assert_same_parameters(first: HHER, second: HHER) -> None:
    params, loaded = first.get_parameters(), second.get_parameters()
    assert params.keys() == loaded.keys()
    for name, state_dict in params.items():
        other = loaded[name]
        if name == "policy":
            assert state_dict.keys() == other.keys()
            for key, value in state_dict.items():
                assert th.equal(value, other[key]), key
        else:  # optimizers
            assert len(state_dict["state"]) == len(other["state"]), name
            for index, values in state_dict["state"].items():
                for key, value in values.items():
                    assert th.equal(th.as_tensor(value), th.as_tensor(other["state"][index][key])), (name, key)


def test_save_load_round_trip(tmp_path: Any) -> None:
    env = make_point_env()
    model = small_hher(env, level_learners=["ddpg", "td3"], level_kwargs=[{"action_l2": 0.5}, {"policy_delay": 3}])
    model.learn(total_timesteps=200)
    assert model.policy.level_policy(1).normalizer.obs.count.item() > 0
    path = tmp_path / "hher.zip"
    model.save(path)

    loaded = HHER.load(path, env=make_point_env())
    assert_same_parameters(model, loaded)
    # Normaliser statistics of every level are part of the policy's state.
    for level in range(2):
        for name in ("mean", "var", "count"):
            assert th.equal(
                getattr(model.policy.level_policy(level).normalizer.obs, name),
                getattr(loaded.policy.level_policy(level).normalizer.obs, name),
            )
    assert loaded.subgoal_horizon == model.subgoal_horizon
    assert loaded.subgoal_penalty == model.subgoal_penalty
    np.testing.assert_array_equal(loaded.subgoal_space.low, model.subgoal_space.low)
    assert [type(level) for level in loaded.levels] == [HerDDPG, HerTD3]
    assert loaded.levels[0].action_l2 == 0.5 and loaded.levels[1].policy_delay == 3
    assert [level._n_updates for level in loaded.levels] == [level._n_updates for level in model.levels]
    assert [level.return_bounds for level in loaded.levels] == [level.return_bounds for level in model.levels]

    rng = np.random.default_rng(0)
    obs = {key: rng.uniform(-1, 1, size=(5, 2)) for key in ("observation", "achieved_goal", "desired_goal")}
    actions, state = model.predict(obs)
    loaded_actions, loaded_state = loaded.predict(obs)
    np.testing.assert_allclose(actions, loaded_actions, atol=1e-6)
    np.testing.assert_allclose(state.subgoals, loaded_state.subgoals, atol=1e-6)

    # Loaded without an env it predicts; with set_env it trains on.
    envless = HHER.load(path)
    np.testing.assert_allclose(envless.predict(obs)[0], actions, atol=1e-6)
    envless.set_env(make_point_env())
    envless.learn(total_timesteps=40)
    loaded.learn(total_timesteps=40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 240


def test_replay_buffer_round_trip(tmp_path: Any) -> None:
    model = small_hher(make_point_env(max_steps=6, dim=1, start=[0.0], goal=[0.8]), subgoal_horizon=3, subgoal_test_prob=1.0)
    Script(model, {1: [1.0, 0.8, -1.0], 0: [1.0]})
    model.learn(total_timesteps=6)
    model.save_replay_buffer(tmp_path / "buffers.pkl")
    fresh = small_hher(make_point_env(max_steps=6, dim=1, start=[0.0], goal=[0.8]), subgoal_horizon=3)
    fresh.load_replay_buffer(tmp_path / "buffers.pkl")
    for old, new in zip(model.levels, fresh.levels, strict=True):
        assert new.replay_buffer.pos == old.replay_buffer.pos
        assert new.replay_buffer.n_penalty == old.replay_buffer.n_penalty
        # Buffers pickle their stored rows only and unpickle to the allocated capacity, contents unchanged.
        for name in ("penalty_observations", "penalty_next_observations", "observations", "next_observations"):
            for key, array in getattr(old.replay_buffer, name).items():
                np.testing.assert_array_equal(getattr(new.replay_buffer, name)[key], array)
        for name in ("penalty_actions", "penalty_rewards", "actions", "ep_length"):
            np.testing.assert_array_equal(getattr(new.replay_buffer, name), getattr(old.replay_buffer, name))
    fresh.levels[1].replay_buffer.sample(16)
    fresh.learn(total_timesteps=12)


# ----------------------------------------------------------------------------- predict with state


def test_predict_with_state() -> None:
    model = small_hher(make_point_env(), subgoal_horizon=3)
    policy = model.policy
    obs = {
        "observation": np.array([[0.0, 0.0], [0.5, 0.5]]),
        "achieved_goal": np.array([[0.0, 0.0], [0.5, 0.5]]),
        "desired_goal": np.array([[0.9, 0.9], [-0.9, -0.9]]),
    }
    actions, state = model.predict(obs)
    assert actions.shape == (2, 2) and isinstance(state, HierarchyState)
    assert state.subgoals.shape == (1, 2, 2) and np.all(state.steps_left == 2)
    expected = policy.unscale_level_action(1, policy.level_actions(1, policy.level_observation(1, obs, state.subgoals)))
    np.testing.assert_allclose(state.subgoals[0], expected)

    # Active subgoals persist while level 0 has actions left; then the level above proposes a new one.
    far = HierarchyState(np.array([[[0.8, -0.8], [-0.8, 0.8]]], dtype=np.float32), np.array([[2, 1]]))
    _, next_state = model.predict(obs, state=far)
    np.testing.assert_allclose(next_state.subgoals, far.subgoals)
    np.testing.assert_array_equal(next_state.steps_left, [[1, 0]])
    _, after = model.predict(obs, state=next_state)
    np.testing.assert_allclose(after.subgoals[0, 0], far.subgoals[0, 0])
    np.testing.assert_allclose(after.subgoals[0, 1], expected[1], atol=1e-6)
    np.testing.assert_array_equal(after.steps_left, [[0, 2]])
    # predict does not modify the state it is given
    np.testing.assert_array_equal(far.steps_left, [[2, 1]])
    # A new episode or an achieved subgoal discards the subgoal.
    _, restarted = model.predict(obs, state=far, episode_start=np.array([True, False]))
    np.testing.assert_allclose(restarted.subgoals[0, 0], expected[0], atol=1e-6)
    reached = HierarchyState(np.array([[[0.0, 0.0], [-0.8, 0.8]]], dtype=np.float32), np.array([[2, 2]]))
    _, replanned = model.predict(obs, state=reached)
    np.testing.assert_allclose(replanned.subgoals[0, 0], expected[0], atol=1e-6)

    # One unbatched observation.
    single = {key: value[0] for key, value in obs.items()}
    action, single_state = model.predict(single)
    assert action.shape == (2,) and single_state.steps_left.shape == (1, 1)
    with pytest.raises(ValueError, match="hierarchy state"):
        model.predict(obs, state=single_state)


def test_evaluation_helpers_run_the_hierarchy() -> None:
    env = make_vec_env(make_point_env, n_envs=2, seed=0)
    model = small_hher(env)
    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=4)
    assert -20.0 <= mean_reward <= 0.0
    eval_callback = EvalCallback(make_vec_env(make_point_env, n_envs=1, seed=1), n_eval_episodes=2, eval_freq=50)
    model.learn(total_timesteps=100, callback=eval_callback, progress_bar=False)
    # eval_freq counts calls: one call is one step of both training envs, so an evaluation at 100 steps.
    assert eval_callback.n_calls >= 50 and np.isfinite(eval_callback.last_mean_reward)


# ----------------------------------------------------------------------------- SB3 surface


def test_several_envs_keep_their_own_hierarchy() -> None:
    env = make_vec_env(make_point_env, n_envs=3, seed=0)
    model = small_hher(env, subgoal_horizon=4, train_freq=(2, "episode"))
    model.learn(total_timesteps=300)
    assert model._rollout is not None and model._rollout.state.steps_left.shape == (1, 3)
    low = model.levels[0].replay_buffer
    lengths = low.ep_length[: low.pos, 0]
    assert lengths.max() <= 4 and lengths.min() >= 1
    # Attempts are stored whole: each episode's transitions are contiguous and move the point continuously.
    starts = low.ep_start[: low.pos, 0]
    for start in np.unique(starts):
        rows = np.flatnonzero(starts == start)
        np.testing.assert_allclose(
            low.next_observations["observation"][rows[:-1], 0], low.observations["observation"][rows[1:], 0]
        )
    # One top-level episode per env episode: 3 envs x 100 steps / 20 steps.
    top = model.levels[1].replay_buffer
    assert len(np.unique(top.ep_start[: top.pos, 0])) == 15


def test_three_levels_and_td3_levels_run() -> None:
    model = small_hher(make_point_env(max_steps=27), n_levels=3, level_learners="td3", subgoal_test_prob=0.5)
    assert model.subgoal_horizon == 3
    model.learn(total_timesteps=200)
    assert len(model.policy.levels) == 3
    assert all(level.replay_buffer.n_episode_transitions > 0 for level in model.levels)
    _, state = model.predict({key: np.zeros((1, 2)) for key in ("observation", "achieved_goal", "desired_goal")})
    assert state.subgoals.shape == (2, 1, 2) and np.all(state.steps_left == [[2], [2]])


def test_logging_and_seeding(tmp_path: Any) -> None:
    first = small_hher(make_point_env(), seed=5)
    first.set_logger(configure(str(tmp_path), ["csv"]))
    first.learn(total_timesteps=200, log_interval=2)
    second = small_hher(make_point_env(), seed=5)
    second.learn(total_timesteps=200)
    for key, value in first.policy.state_dict().items():
        assert th.equal(value, second.policy.state_dict()[key]), key
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in (
        "train/level_0/actor_loss",
        "train/level_1/critic_loss",
        "train/level_1/q_mean",
        "rollout/level_0/subgoal_success_rate",
        "rollout/level_1/subgoal_test_penalty_rate",
        "rollout/level_1/subgoal_at_bounds_fraction",
        "rollout/success_rate",
    ):
        assert key in header, key


def test_critic_saturation_warning() -> None:
    model = small_hher(make_point_env(), critic_saturation_patience=3)
    model.learn(total_timesteps=20)
    logger = model.levels[1]._logger
    assert isinstance(logger, _LevelLogger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            logger.last["train/level_1/q_mean"] = model.subgoal_penalty
            model._check_critic_saturation(1)
    assert any("saturated" in str(warning.message) for warning in caught)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="n_levels"):
        HHER("MultiInputPolicy", make_point_env(), n_levels=0)
    with pytest.raises(ValueError, match="level_learners"):
        HHER("MultiInputPolicy", make_point_env(), level_learners=["ddpg"])
    with pytest.raises(ValueError, match="learning_starts"):
        HHER("MultiInputPolicy", make_point_env(), level_kwargs={"learning_starts": 5})
    with pytest.raises(ValueError, match="subgoal_penalty"):
        HHER("MultiInputPolicy", make_point_env(), subgoal_penalty=1.0)
    with pytest.raises(ValueError, match=r"Unknown subgoal_space keys \['threshold'\]"):
        HHER("MultiInputPolicy", make_point_env(), subgoal_space={"threshold": 0.01})
    with pytest.raises(TypeError, match="subgoal_space must be"):
        HHER("MultiInputPolicy", make_point_env(), subgoal_space=0.01)  # type: ignore[arg-type]


def test_subgoal_space_dict_adjusts_the_preset(tmp_path: Any) -> None:
    # What a zoo YAML file or the benchmark's --set can express: the Fetch preset with tighter thresholds.
    env = make_goal_env("FetchPush-v4")
    model = HHER("MultiInputPolicy", env, subgoal_space={"thresholds": 0.01, "high": [1.5, 1.1, 0.9]}, buffer_size=1_000)
    assert isinstance(model.subgoal_space, SubgoalSpace) and model.subgoal_space.name == "fetch"
    np.testing.assert_allclose(model.subgoal_space.thresholds, 0.01)
    np.testing.assert_allclose(model.subgoal_space.high, [1.5, 1.1, 0.9])
    np.testing.assert_allclose(model.subgoal_space.low, [0.95, 0.3, 0.38])  # the Push preset's, where not given
    model.save(tmp_path / "model.zip")
    loaded = HHER.load(tmp_path / "model.zip", env=env)
    np.testing.assert_allclose(loaded.subgoal_space.thresholds, 0.01)
    with pytest.raises(ValueError, match="Unknown subgoal space preset 'fetchy'"):
        HHER("MultiInputPolicy", env, subgoal_space={"preset": "fetchy"}, buffer_size=1_000)


# ----------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_hher_learns_to_reach_goals() -> None:
    env = make_vec_env(make_point_env, n_envs=1, seed=0, env_kwargs={"threshold": 0.15})
    model = small_hher(
        env, seed=0, learning_starts=200, gradient_steps=20, batch_size=128, policy_kwargs={"net_arch": [64, 64]}
    )
    model.learn(total_timesteps=3_000)
    eval_env = make_vec_env(make_point_env, n_envs=5, seed=123, env_kwargs={"threshold": 0.15})
    successes: list[float] = []

    def record(local_vars: dict, _: dict) -> None:
        if local_vars["done"]:
            successes.append(float(local_vars["info"]["is_success"]))

    evaluate_policy(model, eval_env, n_eval_episodes=50, callback=record)
    assert np.mean(successes) >= 0.9


def test_episode_record_and_plot(tmp_path: Any) -> None:
    from sb3_hher.hher.visualization import plot_episode, record_episode

    model = small_hher(make_point_env(), subgoal_horizon=4)
    model.learn(total_timesteps=40)
    record = record_episode(model, make_point_env(), seed=0, render=False)
    assert record.achieved.shape == (21, 2) and record.subgoals.shape == (20, 1, 2)
    assert np.all(model.subgoal_space.contains(record.subgoals.reshape(-1, 2), atol=1e-6))
    plot_episode(record, model.subgoal_space, str(tmp_path / "episode.png"), walls=[(0.0, 0.0, 0.2)])
    assert (tmp_path / "episode.png").stat().st_size > 0


def test_maze_walls_are_the_map_cells() -> None:
    from sb3_hher.common.goal_env import make_goal_env
    from sb3_hher.hher.visualization import maze_walls

    env = make_goal_env("PointMaze_UMaze-v3")
    obs, _ = env.reset(seed=0)
    walls = maze_walls(env)
    maze_map = env.unwrapped.maze.maze_map
    assert len(walls) == sum(cell == 1 for row in maze_map for cell in row)
    # The outer wall frames the maze; neither the agent nor its goal is inside a wall cell.
    xs, ys = np.array([w[0] for w in walls]), np.array([w[1] for w in walls])
    side = walls[0][2]
    assert side == env.unwrapped.maze.maze_size_scaling
    for point in (obs["achieved_goal"], obs["desired_goal"]):
        assert xs.min() < point[0] < xs.max() and ys.min() < point[1] < ys.max()
        inside = (np.abs(xs - point[0]) < side / 2) & (np.abs(ys - point[1]) < side / 2)
        assert not inside.any()
    with pytest.raises(ValueError, match="not a gymnasium-robotics maze env"):
        maze_walls(make_point_env())


class NaNAtStep(gym.Wrapper):
    """NaN in observation[0] at the 7th step of the first episode."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.n_steps = 0

    def step(self, action):  # type: ignore[no-untyped-def]
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.n_steps += 1
        if self.n_steps == 7:
            obs = {key: value.copy() for key, value in obs.items()}
            obs["observation"][0] = np.nan
        return obs, reward, terminated, truncated, info


def test_hher_non_finite_observation_names_key_env_and_step() -> None:
    from sb3_hher.her.core import NonFiniteObservationError

    model = HHER("MultiInputPolicy", NaNAtStep(make_goal_env("FetchReach-v4")), seed=0, buffer_size=1_000)
    with pytest.raises(NonFiniteObservationError, match="Observation key 'observation' of env 0 is NaN or inf at step 7"):
        model.learn(20)


def test_hher_warns_under_vec_normalize() -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    env = VecNormalize(DummyVecEnv([lambda: make_goal_env("FetchReach-v4")]), norm_reward=False)
    with pytest.warns(UserWarning, match="VecNormalize"):
        HHER("MultiInputPolicy", env, seed=0, buffer_size=1_000)


def test_hher_non_finite_skip_keeps_the_finite_part_of_the_episode() -> None:
    model = HHER("MultiInputPolicy", NaNAtStep(make_goal_env("FetchReach-v4")), seed=0, non_finite="skip", buffer_size=1_000)
    with pytest.warns(UserWarning, match=r"(?s)is NaN or inf at step 7.*not learned from"):
        model.learn(100)
    level0 = model.levels[0].replay_buffer
    # Episode 1 keeps its first 6 transitions (the 7th reaches the NaN observation), episode 2 is whole.
    assert level0.pos == 6 + 50
    for level in model.levels:
        buffer = level.replay_buffer
        for values in buffer.observations.values():
            assert np.isfinite(values[: buffer.pos]).all()
        assert all(th.isfinite(tensor).all() for tensor in level.policy.state_dict().values())


def test_n_step_returns_refused_for_hierarchies():
    with pytest.raises(ValueError, match=r"n_steps > 1 \(level 0\) is supported by flat agents"):
        HHER("MultiInputPolicy", make_point_env(), level_kwargs=[{"n_steps": 3}, {}])
