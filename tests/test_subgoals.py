"""Tests of subgoal spaces and their presets (Fetch, mazes, generic)."""

from __future__ import annotations

import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_hher.common.goal_env import make_goal_env
from sb3_hher.common.subgoals import (
    SubgoalSpace,
    fetch_subgoal_space,
    generic_subgoal_space,
    subgoal_space_for_env,
)


def goal_obs(observation: np.ndarray, achieved: np.ndarray) -> dict[str, np.ndarray]:
    return {"observation": observation, "achieved_goal": achieved, "desired_goal": achieved}


def test_projection_thresholds_and_reward() -> None:
    space = SubgoalSpace(low=[0, 0], high=[1, 2], thresholds=[0.1, 0.5], source="observation", indices=(2, 0))
    obs = goal_obs(np.array([[0.3, 9.0, 0.7], [1.0, 9.0, 0.0]]), np.zeros((2, 1)))
    np.testing.assert_allclose(space.project(obs), [[0.7, 0.3], [0.0, 1.0]])
    achieved = np.array([[0.7, 0.3], [0.7, 0.3], [0.7, 0.3]])
    subgoals = np.array([[0.75, 0.7], [0.85, 0.3], [0.7, 0.9]])
    np.testing.assert_array_equal(space.is_achieved(achieved, subgoals), [True, False, False])
    rewards = space.compute_reward(achieved, subgoals, None)
    assert rewards.dtype == np.float32
    np.testing.assert_array_equal(rewards, [0.0, -1.0, -1.0])
    np.testing.assert_allclose(space.clip(np.array([[-1.0, 5.0]])), [[0.0, 2.0]])
    np.testing.assert_array_equal(space.contains(np.array([[0.5, 1.0], [1.5, 1.0]])), [True, False])
    assert space.box == spaces.Box(np.array([0, 0], np.float32), np.array([1, 2], np.float32))
    assert space.world_position(subgoals) is None
    copy = pickle.loads(pickle.dumps(space))
    np.testing.assert_array_equal(copy.thresholds, space.thresholds)
    assert copy.indices == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low": [0.0], "high": [np.inf], "thresholds": 0.1}, "finite"),
        ({"low": [1.0], "high": [0.0], "thresholds": 0.1}, "low < high"),
        ({"low": [0.0], "high": [1.0], "thresholds": 0.0}, "positive"),
        ({"low": [0.0], "high": [1.0], "thresholds": 0.1, "source": "desired_goal"}, "source"),
        ({"low": [0.0], "high": [1.0], "thresholds": 0.1, "indices": (0, 1)}, "indices"),
    ],
)
def test_invalid_subgoal_spaces(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SubgoalSpace(**kwargs)


REACH_BOX = ([1.05, 0.4, 0.38], [1.55, 1.1, 0.9])  # the table's footprint, from just below its top
OBJECT_BOX = ([0.95, 0.3, 0.38], [1.65, 1.2, 0.9])  # 10 cm beyond the table's edges in x and y


@pytest.mark.parametrize(
    ("env_id", "dim", "indices", "box"),
    [
        ("FetchReach-v4", 3, (0, 1, 2), REACH_BOX),
        ("FetchReachDense-v4", 3, (0, 1, 2), REACH_BOX),
        ("FetchPush-v4", 3, (0, 1, 2), OBJECT_BOX),
        ("FetchPickAndPlace-v4", 5, (0, 1, 2, 9, 10), OBJECT_BOX),
    ],
)
def test_fetch_preset(env_id: str, dim: int, indices: tuple[int, ...], box: tuple[list, list]) -> None:
    env = make_goal_env(env_id)
    space = subgoal_space_for_env(env)
    assert space.name == "fetch" and space.dim == dim and space.indices == indices
    # An achieved subgoal on the goal is an achieved goal: per-dimension thresholds 0.05 / sqrt(3).
    np.testing.assert_allclose(space.thresholds[:3], 0.05 / math.sqrt(3))
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(space.project(obs)[:3], obs["observation"][:3], atol=1e-6)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        # The start and every goal lie inside the workspace above the table.
        assert space.contains(space.project(obs))
        assert np.all((obs["desired_goal"] >= space.low[:3]) & (obs["desired_goal"] <= space.high[:3]))
    # FetchReach keeps the table's footprint; the object tasks reach beyond its edges (to get behind an object lying
    # at an edge), never below the table top.
    np.testing.assert_allclose(space.world_position(space.low), box[0])
    np.testing.assert_allclose(space.world_position(space.high), box[1])
    env.close()


def test_fetch_preset_through_vec_env() -> None:
    vec_env = make_vec_env(lambda: make_goal_env("FetchReach-v4"), n_envs=1)
    np.testing.assert_allclose(subgoal_space_for_env(vec_env).high, REACH_BOX[1])
    vec_env = make_vec_env("FetchPush-v4", n_envs=1)
    np.testing.assert_allclose(subgoal_space_for_env(vec_env).high, OBJECT_BOX[1])
    assert fetch_subgoal_space("FetchSlide-v4").dim == 3


def test_fetch_preset_reads_the_env_not_only_its_id() -> None:
    # A Fetch env built without gymnasium.make has no id: its own has_object / block_gripper choose the box and
    # the finger dimensions.
    from gymnasium_robotics.envs.fetch.pick_and_place import MujocoFetchPickAndPlaceEnv
    from gymnasium_robotics.envs.fetch.reach import MujocoFetchReachEnv

    reach = subgoal_space_for_env(MujocoFetchReachEnv(), preset="fetch")
    np.testing.assert_allclose(reach.low, REACH_BOX[0])
    pick = subgoal_space_for_env(MujocoFetchPickAndPlaceEnv(), preset="fetch")
    assert pick.dim == 5
    np.testing.assert_allclose(pick.low[:3], OBJECT_BOX[0])
    # Without an env, explicit flags override what the id says.
    assert fetch_subgoal_space("", has_object=True, block_gripper=False).dim == 5
    np.testing.assert_allclose(fetch_subgoal_space("FetchPush-v4", has_object=False).high, REACH_BOX[1])


def test_maze_presets() -> None:
    env = make_goal_env("PointMaze_Medium-v3")
    space = subgoal_space_for_env(env)
    # Medium maze: 8 x 8 cells of size 1, the outer ring is wall.
    assert space.name == "maze" and space.source == "achieved_goal"
    np.testing.assert_allclose(space.low, [-3.0, -3.0])
    np.testing.assert_allclose(space.high, [3.0, 3.0])
    np.testing.assert_allclose(space.thresholds, 0.45 / math.sqrt(2))
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert space.contains(space.project(obs)) and space.contains(obs["desired_goal"])
        np.testing.assert_allclose(space.project(obs), obs["observation"][:2], atol=1e-6)
    position = space.world_position(np.array([1.0, 2.0]))
    assert position is not None and position.shape == (3,)
    env.close()


def test_antmaze_preset_reads_the_achieved_goal() -> None:
    """AntMaze's ``observation`` starts with the torso height, not x-y: the preset projects ``achieved_goal``."""
    env = make_goal_env("AntMaze_UMaze-v5")
    space = subgoal_space_for_env(env)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(space.project(obs), obs["achieved_goal"], atol=1e-6)
    scaling = env.unwrapped.maze.maze_size_scaling
    np.testing.assert_allclose(
        space.high - space.low, 2 * (np.array([env.unwrapped.maze.x_map_center, env.unwrapped.maze.y_map_center]) - scaling)
    )
    env.close()


def test_generic_preset() -> None:
    box = spaces.Box(-2.0, 2.0, shape=(2,))
    space = generic_subgoal_space(box)
    np.testing.assert_allclose(space.thresholds, [0.2, 0.2])
    assert space.source == "achieved_goal" and space.indices is None
    with pytest.raises(ValueError, match="unbounded"):
        generic_subgoal_space(spaces.Box(-np.inf, np.inf, shape=(2,)))
    bounded = generic_subgoal_space(spaces.Box(-np.inf, np.inf, shape=(2,)), low=[0, 0], high=[1, 1], thresholds=0.05)
    np.testing.assert_allclose(bounded.thresholds, [0.05, 0.05])


def test_preset_overrides_and_errors() -> None:
    env = make_goal_env("FetchReach-v4")
    space = subgoal_space_for_env(env, low=[1.1, 0.5, 0.4], thresholds=0.02)
    assert space.name == "fetch" and space.indices == (0, 1, 2)
    np.testing.assert_allclose(space.low, [1.1, 0.5, 0.4])
    np.testing.assert_allclose(space.thresholds, 0.02)
    with pytest.raises(ValueError, match="preset"):
        subgoal_space_for_env(env, preset="nope")
    with pytest.raises(ValueError, match="unbounded"):
        subgoal_space_for_env(env, preset="generic")
    wrong = SubgoalSpace(low=[0.0], high=[1.0], thresholds=0.1, source="observation", indices=(40,))
    with pytest.raises(ValueError, match="only 10 dimensions"):
        wrong.check_observation_space(env.observation_space)
    env.close()
    with pytest.raises(ValueError, match="Dict observation space"):
        subgoal_space_for_env(gym.make("Pendulum-v1"))
