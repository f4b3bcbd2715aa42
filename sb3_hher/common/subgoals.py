"""Subgoal spaces of hierarchical agents, and the presets that know how each env family lays out its observations.

A subgoal space (Hierarchical Actor-Critic, Levy et al. 2019, section 3) says what an upper level may ask the
level below to reach: a projection of the env state, bounds that every proposed subgoal stays inside, and the
per-dimension thresholds within which a subgoal counts as achieved (which induce the sparse ``{-1, 0}`` reward
of the levels). This module is the one place that knows observation layouts:

- Fetch: ``observation[0:3]`` is the gripper position (world frame), ``observation[9:11]`` the finger joints of
  the object tasks (``observation[3:5]`` in FetchReach, whose fingers are blocked);
- PointMaze / AntMaze: the agent's x, y is ``achieved_goal`` (PointMaze also repeats it in ``observation[0:2]``;
  AntMaze does not: its ``observation`` starts with the torso height);
- anything else: the achieved-goal space itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from sb3_hher.common.goal_env import check_goal_observation_space

SOURCES = ("observation", "achieved_goal")
PRESETS = ("auto", "fetch", "maze", "generic")

# Fetch table (``table0`` in the gymnasium-robotics Fetch scenes): centre (1.3, 0.75), half sizes 0.25 x 0.35, top
# at z = 0.4. The gripper can leave this box (it reaches the floor behind the robot), but every Fetch goal lies
# above the table: subgoals are kept in the table's footprint from just below its top (FetchReach goals go down
# to z = 0.385) to 0.5 above it (PickAndPlace goals go up to 0.87).
# In the object tasks the footprint is widened by FETCH_OBJECT_MARGIN in x and y: to push an object lying near a
# table edge back toward the middle, the gripper must stand beyond that edge (object half size 0.025 plus the
# finger). With the footprint alone, greedy Push rollouts of trained HHER agents kept proposing x = 1.55 with the
# object at x = 1.52 and never got behind it. The gripper reaches every point of the widened box at z = 0.43
# (within 2 cm at its corners).
# Layout of gymnasium-robotics' Fetch observation vector (the one place that knows it).
FETCH_GRIPPER_POS = slice(0, 3)
FETCH_OBJECT_POS = slice(3, 6)
FETCH_OBJECT_REL_POS = slice(6, 9)  # object position minus gripper position
FETCH_FINGERS = slice(9, 11)
FETCH_GRIPPER_LOW = np.array([1.05, 0.40, 0.38])
FETCH_GRIPPER_HIGH = np.array([1.55, 1.10, 0.90])
FETCH_OBJECT_MARGIN = np.array([0.10, 0.10, 0.0])
# Finger joint positions of the Fetch gripper: 0 (closed) to 0.05 (open).
FETCH_FINGER_LOW = np.array([0.0, 0.0])
FETCH_FINGER_HIGH = np.array([0.05, 0.05])
FETCH_FINGER_THRESHOLD = 0.01
FETCH_DISTANCE_THRESHOLD = 0.05
# Success radius of PointMaze / AntMaze goals (gymnasium-robotics ``maze_v4.py``).
MAZE_DISTANCE_THRESHOLD = 0.45


@dataclass(eq=False)
class SubgoalSpace:
    """
    The space of subgoals an upper level proposes to the level below (HAC: a projection of the state space).

    A subgoal ``g`` is achieved by a state whose projection ``p`` satisfies ``|p - g| <= thresholds`` in every
    dimension; the induced reward is ``0`` when achieved and ``-1`` otherwise.

    :param low: Lower bounds of the subgoals (finite)
    :param high: Upper bounds of the subgoals (finite)
    :param thresholds: Per-dimension achievement thresholds (positive)
    :param source: Key of the goal observation the projection reads: ``"observation"`` or ``"achieved_goal"``
    :param indices: Indices of ``source`` that form the subgoal; ``None`` takes the whole vector
    :param name: Name of the preset (for reprs and plots)
    :param dim_names: Name of each dimension (for plots)
    :param world_xyz: For MuJoCo scenes, which subgoal dimensions are world coordinates x, y (and z), used to draw
        subgoals as markers; ``None`` when subgoals are not positions
    :param marker_height: World z of markers when ``world_xyz`` only gives x and y (mazes)
    """

    low: np.ndarray
    high: np.ndarray
    thresholds: np.ndarray
    source: str = "achieved_goal"
    indices: tuple[int, ...] | None = None
    name: str = "generic"
    dim_names: tuple[str, ...] = field(default_factory=tuple)
    world_xyz: tuple[int, ...] | None = None
    marker_height: float = 0.0

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        self.thresholds = np.broadcast_to(np.asarray(self.thresholds, dtype=np.float64), self.low.shape).copy()
        if self.low.shape != self.high.shape:
            raise ValueError(f"Subgoal bounds must have the same shape, got {self.low.shape} and {self.high.shape}")
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise ValueError(
                f"Subgoal bounds must be finite (subgoals are the actions of upper levels), got {self.low}, {self.high}"
            )
        if not np.all(self.low < self.high):
            raise ValueError(f"Subgoal bounds need low < high in every dimension, got {self.low} and {self.high}")
        if not np.all(self.thresholds > 0):
            raise ValueError(f"Achievement thresholds must be positive, got {self.thresholds}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.indices is not None:
            self.indices = tuple(int(index) for index in self.indices)
            if len(self.indices) != self.dim:
                raise ValueError(f"{len(self.indices)} projection indices for a {self.dim}-dimensional subgoal space")
        if not self.dim_names:
            self.dim_names = tuple(f"subgoal[{index}]" for index in range(self.dim))
        if len(self.dim_names) != self.dim:
            raise ValueError(f"{len(self.dim_names)} dimension names for a {self.dim}-dimensional subgoal space")
        if self.world_xyz is not None:
            self.world_xyz = tuple(int(index) for index in self.world_xyz)
            if len(self.world_xyz) not in (2, 3):
                raise ValueError(f"world_xyz names the x, y (and z) dimensions, got {self.world_xyz}")

    @property
    def dim(self) -> int:
        """Number of dimensions of a subgoal."""
        return int(self.low.shape[0])

    @property
    def box(self) -> spaces.Box:
        """The bounded subgoal space: the action space of the levels that propose subgoals."""
        return spaces.Box(self.low.astype(np.float32), self.high.astype(np.float32), dtype=np.float32)

    def check_observation_space(self, observation_space: spaces.Space) -> None:
        """
        Check that the projection can read the goal observations of an env.

        :param observation_space: The env's Dict observation space
        """
        check_goal_observation_space(observation_space)
        assert isinstance(observation_space, spaces.Dict)
        shape = observation_space.spaces[self.source].shape
        assert shape is not None
        size = int(shape[0])
        needed = max(self.indices) + 1 if self.indices is not None else self.dim
        if self.indices is None and size != self.dim:
            raise ValueError(f"The '{self.source}' vector has {size} dimensions, the {self.name} subgoal space {self.dim}")
        if needed > size:
            raise ValueError(
                f"The {self.name} subgoal space reads '{self.source}'[{list(self.indices or [])}], "
                f"but it has only {size} dimensions"
            )

    def project(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """
        The subgoal a goal observation achieves (HAC's state-to-subgoal projection).

        :param observation: Goal observation(s) with ``observation`` and ``achieved_goal`` (any leading dimensions)
        :return: Array of shape ``(..., dim)``
        """
        values = np.asarray(observation[self.source])
        if self.indices is not None:
            values = values[..., list(self.indices)]
        return values.astype(np.float32)

    def is_achieved(self, achieved: np.ndarray, subgoal: np.ndarray) -> np.ndarray:
        """
        :param achieved: Projected states, shape ``(..., dim)``
        :param subgoal: Subgoals, shape ``(..., dim)``
        :return: Whether each subgoal is achieved (every dimension within its threshold)
        """
        return np.all(np.abs(np.asarray(achieved) - np.asarray(subgoal)) <= self.thresholds, axis=-1)

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any = None) -> np.ndarray:
        """
        Sparse reward of a level pursuing subgoals: ``0`` when achieved, ``-1`` otherwise (HAC).
        Same signature as a goal env's ``compute_reward``, so it can relabel hindsight goals.

        :param achieved_goal: Projected states, shape ``(..., dim)``
        :param desired_goal: Subgoals, shape ``(..., dim)``
        :param info: Unused
        :return: Rewards, float32
        """
        return self.is_achieved(achieved_goal, desired_goal).astype(np.float32) - 1.0

    def clip(self, subgoals: np.ndarray) -> np.ndarray:
        """
        :param subgoals: Points of the projected space, shape ``(..., dim)``
        :return: The points clipped to the subgoal bounds
        """
        return np.clip(subgoals, self.low, self.high).astype(np.float32)

    def contains(self, subgoals: np.ndarray, atol: float = 1e-5) -> np.ndarray:
        """
        :param subgoals: Subgoals, shape ``(..., dim)``
        :param atol: Tolerance on the bounds (float32 rounding)
        :return: Whether each subgoal lies inside the bounds
        """
        subgoals = np.asarray(subgoals)
        return np.all((subgoals >= self.low - atol) & (subgoals <= self.high + atol), axis=-1)

    def world_position(self, subgoals: np.ndarray) -> np.ndarray | None:
        """
        World coordinates of subgoals in the MuJoCo scene, to draw them as markers.

        :param subgoals: Subgoals, shape ``(..., dim)``
        :return: Positions of shape ``(..., 3)``, or ``None`` if subgoals are not positions
        """
        if self.world_xyz is None:
            return None
        subgoals = np.asarray(subgoals, dtype=np.float64)
        xyz = subgoals[..., list(self.world_xyz)]
        if len(self.world_xyz) == 2:
            xyz = np.concatenate([xyz, np.full((*xyz.shape[:-1], 1), self.marker_height)], axis=-1)
        return xyz

    def __repr__(self) -> str:
        source = self.source if self.indices is None else f"{self.source}{list(self.indices)}"
        return (
            f"SubgoalSpace(name={self.name!r}, projection={source}, low={self.low.tolist()}, high={self.high.tolist()}, "
            f"thresholds={self.thresholds.tolist()})"
        )


def fetch_subgoal_space(
    env_id: str = "",
    distance_threshold: float = FETCH_DISTANCE_THRESHOLD,
    has_object: bool | None = None,
    block_gripper: bool | None = None,
) -> SubgoalSpace:
    """
    Gripper position (plus finger state where the gripper is not blocked: PickAndPlace), bounded to the
    workspace above the table (FetchReach) or above the table and 10 cm beyond its edges in x and y (the object
    tasks: the gripper must get behind an object lying near an edge to push it back).

    Per-dimension thresholds on the position are ``distance_threshold / sqrt(3)``: a subgoal placed on the goal and
    achieved also achieves the env's goal (Euclidean distance below ``distance_threshold``).

    :param env_id: A Fetch env id (``FetchReach-v4``, ``FetchPush-v4``, ``FetchPickAndPlace-v4``, ``FetchSlide-v4``),
        read where ``has_object`` or ``block_gripper`` is not given
    :param distance_threshold: The env's goal distance threshold
    :param has_object: Whether the task has an object (the Fetch env's attribute); ``None``: every id but FetchReach
    :param block_gripper: Whether the fingers are blocked (the Fetch env's attribute); ``None``: every id but
        FetchPickAndPlace
    """
    if has_object is None:
        has_object = not env_id.startswith("FetchReach")
    if block_gripper is None:
        block_gripper = "PickAndPlace" not in env_id
    position_threshold = distance_threshold / math.sqrt(3)
    low, high = FETCH_GRIPPER_LOW, FETCH_GRIPPER_HIGH
    if has_object:
        low, high = low - FETCH_OBJECT_MARGIN, high + FETCH_OBJECT_MARGIN
    thresholds = np.full(3, position_threshold)
    indices: tuple[int, ...] = tuple(range(FETCH_GRIPPER_POS.start, FETCH_GRIPPER_POS.stop))
    names: tuple[str, ...] = ("gripper x", "gripper y", "gripper z")
    if not block_gripper:
        # The only Fetch task with a free gripper: the level below must also learn to open and close it.
        low, high = np.concatenate([low, FETCH_FINGER_LOW]), np.concatenate([high, FETCH_FINGER_HIGH])
        thresholds = np.concatenate([thresholds, np.full(2, FETCH_FINGER_THRESHOLD)])
        indices = (*indices, *range(FETCH_FINGERS.start, FETCH_FINGERS.stop))
        names = (*names, "finger 1", "finger 2")
    return SubgoalSpace(
        low=low,
        high=high,
        thresholds=thresholds,
        source="observation",
        indices=indices,
        name="fetch",
        dim_names=names,
        world_xyz=(0, 1, 2),
    )


def maze_subgoal_space(maze: Any, distance_threshold: float = MAZE_DISTANCE_THRESHOLD) -> SubgoalSpace:
    """
    The agent's x, y (``achieved_goal`` of PointMaze and AntMaze), bounded to the inside of the maze's outer wall.

    Per-dimension thresholds are ``distance_threshold / sqrt(2)``, so that achieving a subgoal placed on the goal
    achieves the goal.

    :param maze: The env's ``Maze`` (``env.unwrapped.maze``): its map size and scaling give the bounds
    :param distance_threshold: The env's goal distance threshold
    """
    scaling = float(maze.maze_size_scaling)
    x_half, y_half = float(maze.x_map_center), float(maze.y_map_center)
    # The outer ring of cells is wall: the free space is one cell inside the map on every side.
    low = np.array([-x_half + scaling, -y_half + scaling])
    high = np.array([x_half - scaling, y_half - scaling])
    return SubgoalSpace(
        low=low,
        high=high,
        thresholds=np.full(2, distance_threshold / math.sqrt(2)),
        source="achieved_goal",
        indices=None,
        name="maze",
        dim_names=("x", "y"),
        world_xyz=(0, 1),
        marker_height=0.2 * scaling,
    )


def generic_subgoal_space(
    goal_space: spaces.Box,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    thresholds: np.ndarray | float | None = None,
) -> SubgoalSpace:
    """
    The achieved-goal space itself, bounded by the goal space or by user bounds.

    :param goal_space: The env's ``achieved_goal`` space
    :param low: Lower bounds (default: the goal space's, which must then be finite)
    :param high: Upper bounds (default: the goal space's, which must then be finite)
    :param thresholds: Per-dimension thresholds (default: 5% of each dimension's range)
    """
    low = np.asarray(goal_space.low if low is None else low, dtype=np.float64)
    high = np.asarray(goal_space.high if high is None else high, dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            "The env's goal space is unbounded, so the generic subgoal space needs bounds: pass a SubgoalSpace, or "
            "subgoal_space_for_env(env, low=..., high=...)"
        )
    if thresholds is None:
        thresholds = 0.05 * (high - low)
    return SubgoalSpace(low=low, high=high, thresholds=np.asarray(thresholds), source="achieved_goal", name="generic")


def _env_attr(env: VecEnv | gym.Env, name: str) -> Any:
    if isinstance(env, VecEnv):
        return env.get_attr(name, indices=[0])[0]
    return env.get_wrapper_attr(name) if name != "spec" else env.spec


def env_id_of(env: VecEnv | gym.Env) -> str | None:
    """
    :param env: A gymnasium or vectorised env
    :return: Its registered id, or ``None``
    """
    try:
        spec = _env_attr(env, "spec")
    except AttributeError:
        return None
    return getattr(spec, "id", None)


def env_goal_threshold(env: VecEnv | gym.Env) -> float | None:
    """
    The Euclidean distance within which the env's goal counts as achieved, where the env family is known to define
    success that way: Fetch (its ``distance_threshold``), PointMaze and AntMaze (0.45), or any env exposing a
    ``distance_threshold``.

    :param env: A gymnasium or vectorised env
    :return: The distance, or ``None`` when the env does not say
    """
    if (env_id_of(env) or "").startswith(("PointMaze", "AntMaze")):
        return MAZE_DISTANCE_THRESHOLD
    return _env_distance_threshold(env)


def _env_flag(env: VecEnv | gym.Env, name: str) -> bool | None:
    """The env's boolean attribute ``name`` (Fetch: ``has_object``, ``block_gripper``), or ``None``."""
    try:
        value = _env_attr(env, name)
    except AttributeError:
        return None
    return bool(value) if isinstance(value, bool | np.bool_) else None


def _env_distance_threshold(env: VecEnv | gym.Env) -> float | None:
    """The env's numeric ``distance_threshold`` attribute (Fetch has one), or ``None``."""
    try:
        return float(_env_attr(env, "distance_threshold"))
    except (AttributeError, TypeError, ValueError):
        return None


def subgoal_space_for_env(
    env: VecEnv | gym.Env,
    preset: str = "auto",
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    thresholds: np.ndarray | float | None = None,
) -> SubgoalSpace:
    """
    The subgoal space of an env: a preset chosen by env id (``"auto"``), or the preset named.

    - ``"fetch"`` (ids starting with ``Fetch``): gripper position (+ fingers where the gripper is free: PickAndPlace)
      above the table, 10 cm beyond its edges for the tasks with an object (the env's ``has_object``, ``block_gripper``;
      the id where the env has no such attributes);
    - ``"maze"`` (``PointMaze*``, ``AntMaze*``): x, y inside the maze;
    - ``"generic"``: the achieved-goal space, bounded by the goal space or ``low``/``high``.

    :param env: The training env (gymnasium or vectorised)
    :param preset: ``"auto"``, ``"fetch"``, ``"maze"`` or ``"generic"``
    :param low: Replaces the preset's lower bounds
    :param high: Replaces the preset's upper bounds
    :param thresholds: Replaces the preset's achievement thresholds
    :return: The subgoal space
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown subgoal space preset {preset!r}, choose one of {PRESETS}")
    env_id = env_id_of(env) or ""
    if preset == "auto":
        if env_id.startswith("Fetch"):
            preset = "fetch"
        elif env_id.startswith(("PointMaze", "AntMaze")):
            preset = "maze"
        else:
            preset = "generic"
    observation_space = env.observation_space
    check_goal_observation_space(observation_space)
    assert isinstance(observation_space, spaces.Dict)
    if preset == "fetch":
        distance_threshold = _env_distance_threshold(env)
        space = fetch_subgoal_space(
            env_id,
            FETCH_DISTANCE_THRESHOLD if distance_threshold is None else distance_threshold,
            has_object=_env_flag(env, "has_object"),
            block_gripper=_env_flag(env, "block_gripper"),
        )
    elif preset == "maze":
        space = maze_subgoal_space(_env_attr(env, "maze"))
    else:
        goal_space = observation_space.spaces["achieved_goal"]
        assert isinstance(goal_space, spaces.Box)
        space = generic_subgoal_space(goal_space, low, high, thresholds)
    if preset != "generic" and (low is not None or high is not None or thresholds is not None):
        space = SubgoalSpace(
            low=space.low if low is None else low,
            high=space.high if high is None else high,
            thresholds=space.thresholds if thresholds is None else np.asarray(thresholds),
            source=space.source,
            indices=space.indices,
            name=space.name,
            dim_names=space.dim_names,
            world_xyz=space.world_xyz,
            marker_height=space.marker_height,
        )
    space.check_observation_space(observation_space)
    return space
