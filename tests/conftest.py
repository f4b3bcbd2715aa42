"""Shared fixtures: tiny goal-conditioned envs that make the tests fast, and small model settings."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.monitor import Monitor

# The test machine has two cores shared with other work: one torch thread per test process.
th.set_num_threads(1)

# Small networks and a short update schedule: enough to exercise every code path in well under a second.
SMALL_KWARGS: dict[str, Any] = {
    "policy_kwargs": {"net_arch": [32, 32]},
    "batch_size": 32,
    "learning_starts": 20,
    "train_freq": (1, "episode"),
    "gradient_steps": 2,
    "target_update_interval": 2,
    "buffer_size": 5_000,
}


class PointGoalEnv(gym.Env):
    """
    A point in the plane that must reach a goal: the smallest goal-conditioned env (Fetch-like Dict observation,
    vectorised ``compute_reward``, ``info["is_success"]``).

    ``reward_range=(-1, 0)`` gives Fetch's rewards (-1 until the goal is reached, 0 there);
    ``reward_range=(0, 1)`` gives PointMaze's (1 at the goal, 0 elsewhere).

    :param reward_range: ``(failure_reward, success_reward)``
    :param distance_threshold: Goal reached when closer than this
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, reward_range: tuple[float, float] = (-1.0, 0.0), distance_threshold: float = 0.15) -> None:
        super().__init__()
        self.failure_reward, self.success_reward = reward_range
        self.distance_threshold = distance_threshold
        box = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32),
                "achieved_goal": box,
                "desired_goal": box,
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._position = np.zeros(2, dtype=np.float32)
        self._velocity = np.zeros(2, dtype=np.float32)
        self._goal = np.zeros(2, dtype=np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "observation": np.concatenate([self._position, self._velocity]).astype(np.float32),
            "achieved_goal": self._position.copy(),
            "desired_goal": self._goal.copy(),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._position = self.np_random.uniform(-0.5, 0.5, size=2).astype(np.float32)
        self._velocity = np.zeros(2, dtype=np.float32)
        self._goal = self.np_random.uniform(-0.8, 0.8, size=2).astype(np.float32)
        return self._obs(), {}

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        new_position = np.clip(self._position + 0.2 * action, -1.0, 1.0)
        self._velocity = (new_position - self._position).astype(np.float32)
        self._position = new_position.astype(np.float32)
        obs = self._obs()
        reward = float(self.compute_reward(self._position, self._goal, {}))
        success = np.linalg.norm(self._position - self._goal) < self.distance_threshold
        return obs, reward, False, False, {"is_success": float(success)}

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1)
        return np.where(distance < self.distance_threshold, self.success_reward, self.failure_reward).astype(np.float32)


def make_point_env(
    max_episode_steps: int = 10, reward_range: tuple[float, float] = (-1.0, 0.0), monitor: bool = False
) -> gym.Env:
    """``PointGoalEnv`` with a time limit (and a ``Monitor`` when asked)."""
    env: gym.Env = TimeLimit(PointGoalEnv(reward_range=reward_range), max_episode_steps=max_episode_steps)
    return Monitor(env) if monitor else env


def make_fetch_reach(monitor: bool = False) -> gym.Env:
    """FetchReach-v4 (gymnasium-robotics registered on the fly)."""
    from sb3_hher.common.goal_env import make_goal_env

    env = make_goal_env("FetchReach-v4")
    return Monitor(env) if monitor else env


def params_equal(model_a: Any, model_b: Any) -> bool:
    """Whether two models' policies hold exactly the same weights and normaliser statistics."""
    state_a, state_b = model_a.policy.state_dict(), model_b.policy.state_dict()
    return state_a.keys() == state_b.keys() and all(th.equal(state_a[key], state_b[key]) for key in state_a)


@pytest.fixture
def point_env() -> gym.Env:
    return make_point_env()


@pytest.fixture
def fetch_env() -> gym.Env:
    env = make_fetch_reach()
    yield env
    env.close()
