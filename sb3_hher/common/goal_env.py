"""One place that checks an environment is goal-conditioned and reads what the algorithms need from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")
SUCCESS_INFO_KEYS = ("is_success", "success")


class GoalEnvError(ValueError):
    """Raised when an environment cannot be used by a goal-conditioned algorithm."""


@dataclass(frozen=True)
class GoalEnvSpec:
    """
    What a goal-conditioned algorithm reads from its environment.

    :param obs_dim: Size of ``observation``
    :param goal_dim: Size of ``achieved_goal`` / ``desired_goal``
    :param max_episode_steps: Time limit of the env (``T`` in baselines), ``None`` if it has none
    :param success_reward: Reward ``compute_reward`` gives when the goal is achieved
    :param failure_reward: Reward ``compute_reward`` gives far from the goal
    """

    obs_dim: int
    goal_dim: int
    max_episode_steps: int | None
    success_reward: float
    failure_reward: float

    @property
    def reward_bounds(self) -> tuple[float, float]:
        """Smallest and largest one-step reward."""
        return min(self.success_reward, self.failure_reward), max(self.success_reward, self.failure_reward)


def check_goal_observation_space(observation_space: spaces.Space) -> tuple[int, int]:
    """
    Check that ``observation_space`` is a goal-conditioned ``Dict`` space.

    :param observation_space: The space to check
    :return: ``(obs_dim, goal_dim)``
    """
    if not isinstance(observation_space, spaces.Dict):
        raise GoalEnvError(
            "Goal-conditioned algorithms need a Dict observation space with keys "
            f"{list(GOAL_KEYS)} (a gymnasium-robotics GoalEnv), got {observation_space}"
        )
    missing = [key for key in GOAL_KEYS if key not in observation_space.spaces]
    if missing:
        raise GoalEnvError(
            f"The Dict observation space lacks the key(s) {missing}: a goal-conditioned env must provide "
            f"{list(GOAL_KEYS)}, got keys {list(observation_space.spaces)}"
        )
    for key in GOAL_KEYS:
        space = observation_space.spaces[key]
        if not isinstance(space, spaces.Box | spaces.MultiBinary) or len(space.shape) != 1:
            raise GoalEnvError(f"observation_space['{key}'] must be a 1-D Box (or MultiBinary), got {space}")
    achieved, desired = observation_space.spaces["achieved_goal"], observation_space.spaces["desired_goal"]
    if achieved.shape != desired.shape:
        raise GoalEnvError(
            f"achieved_goal and desired_goal must have the same shape, got {achieved.shape} and {desired.shape}"
        )
    observation_shape, goal_shape = observation_space.spaces["observation"].shape, desired.shape
    assert observation_shape is not None and goal_shape is not None  # Box and MultiBinary spaces have one (1-D above)
    return int(observation_shape[0]), int(goal_shape[0])


def call_compute_reward(env: VecEnv, achieved_goal: np.ndarray, desired_goal: np.ndarray, infos: Any) -> np.ndarray:
    """
    Call the first sub-env's ``compute_reward`` through the ``VecEnv`` (works for ``SubprocVecEnv`` and
    through gymnasium wrappers, which no longer forward attributes).

    :param env: The vectorised env
    :param achieved_goal: Batch of achieved goals
    :param desired_goal: Batch of desired goals
    :param infos: Batch of info dicts
    :return: The rewards, as float32
    """
    return np.asarray(env.env_method("compute_reward", achieved_goal, desired_goal, infos, indices=[0])[0], dtype=np.float32)


def _max_episode_steps(env: VecEnv) -> int | None:
    try:
        spec = env.get_attr("spec", indices=[0])[0]
    except AttributeError:
        spec = None
    if spec is not None and getattr(spec, "max_episode_steps", None):
        return int(spec.max_episode_steps)
    try:
        value = env.get_attr("_max_episode_steps", indices=[0])[0]
    except AttributeError:
        return None
    return int(value) if value else None


def check_goal_env(env: VecEnv) -> GoalEnvSpec:
    """
    Check that ``env`` is a goal-conditioned env usable with hindsight relabelling and read its spec.

    Checks the observation and action spaces, and that ``compute_reward`` exists and is vectorised
    (it is called on batches of relabelled goals). The reward at the goal and far from it are probed
    so that return clipping can pick the right bounds (``{-1, 0}`` for Fetch, ``{0, 1}`` for PointMaze).

    :param env: The vectorised training env
    :return: The env's spec
    """
    obs_dim, goal_dim = check_goal_observation_space(env.observation_space)
    if not isinstance(env.action_space, spaces.Box):
        raise GoalEnvError(f"Goal-conditioned algorithms here need a continuous (Box) action space, got {env.action_space}")

    goal_space = env.observation_space.spaces["desired_goal"]  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    # MultiBinary goals (SB3's BitFlippingEnv) have no low/high: they lie in [0, 1].
    low = np.where(np.isfinite(goal_space.low), goal_space.low, -1.0) if hasattr(goal_space, "low") else np.zeros(goal_dim)
    high = np.where(np.isfinite(goal_space.high), goal_space.high, 1.0) if hasattr(goal_space, "high") else np.ones(goal_dim)
    goal = rng.uniform(low, high, size=(goal_dim,)).astype(goal_space.dtype)
    # Far away in every dimension, whatever the goal space's bounds are.
    far = goal + (np.abs(high - low) + 1.0) * 1e3
    achieved = np.stack([goal, far]).astype(goal_space.dtype)
    desired = np.stack([goal, goal]).astype(goal_space.dtype)
    if not env.has_attr("compute_reward"):
        raise GoalEnvError(
            "The env has no compute_reward(achieved_goal, desired_goal, info) method: hindsight relabelling "
            "needs it to recompute rewards for relabelled goals"
        )
    try:
        rewards = call_compute_reward(env, achieved, desired, [{}, {}])
    except Exception as error:
        raise GoalEnvError(
            "compute_reward(achieved_goal, desired_goal, info) failed on a batch of 2 goals: it must be "
            f"vectorised over a leading batch dimension ({type(error).__name__}: {error})"
        ) from error
    if rewards.shape != (2,):
        raise GoalEnvError(
            "compute_reward(achieved_goal, desired_goal, info) is not vectorised: called on a batch of 2 goals it "
            f"returned shape {rewards.shape}, expected (2,)"
        )
    if not np.all(np.isfinite(rewards)):
        raise GoalEnvError(f"compute_reward returned non-finite rewards {rewards}")
    return GoalEnvSpec(
        obs_dim=obs_dim,
        goal_dim=goal_dim,
        max_episode_steps=_max_episode_steps(env),
        success_reward=float(rewards[0]),
        failure_reward=float(rewards[1]),
    )


def get_success(info: dict[str, Any]) -> float | None:
    """
    Read the success flag an env reports (``is_success`` for Fetch, ``success`` for PointMaze/AntMaze).

    :param info: One step's info dict
    :return: The success flag as a float, or ``None`` if the env reports none
    """
    for key in SUCCESS_INFO_KEYS:
        if key in info:
            return float(info[key])
    return None


def make_goal_env(env_id: str, **kwargs: Any) -> gym.Env:
    """
    ``gym.make`` that first registers gymnasium-robotics' envs (Fetch, PointMaze, AntMaze ids).

    :param env_id: Gymnasium id, e.g. ``"FetchPush-v4"``
    :param kwargs: Passed to ``gym.make``
    """
    import_robotics()
    return gym.make(env_id, **kwargs)


def register_env_id(env: Any) -> None:
    """
    Make an env id given as a string resolvable by ``gym.make`` (SB3 builds the env from it): ids that are not
    registered yet (Fetch, PointMaze, AntMaze) get gymnasium-robotics imported first. Anything else is left alone.

    :param env: The ``env`` argument given to an algorithm
    """
    if isinstance(env, str) and env not in gym.registry:
        try:
            import_robotics()
        except ImportError:  # gym.make then raises its own NameNotFound error
            pass


def import_robotics() -> None:
    """Register gymnasium-robotics' envs (importing the package registers them)."""
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
