"""Draw a hierarchy's subgoals: markers in MuJoCo frames (Fetch, PointMaze, AntMaze) and trajectory plots.

Rendering needs ``render_mode="rgb_array"``; headless machines need ``MUJOCO_GL=egl`` (or ``osmesa``) set before
MuJoCo is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from sb3_hher.common.goal_env import get_success
from sb3_hher.common.subgoals import SubgoalSpace
from sb3_hher.hher.policies import HierarchyState

if TYPE_CHECKING:
    from sb3_hher.hher.hher import HHER

# RGBA of the subgoals of level 0, 1, ... (the goal of each lower level), and of the env's goal.
LEVEL_COLORS = (
    np.array([1.0, 0.1, 0.1, 0.6]),
    np.array([1.0, 0.6, 0.0, 0.6]),
    np.array([0.6, 0.1, 1.0, 0.6]),
)
# Attributes holding the MuJoCo robot env inside gymnasium-robotics' maze envs.
_INNER_ROBOT_ENVS = ("point_env", "ant_env")


def find_mujoco_renderer(env: gym.Env) -> Any:
    """
    :param env: A (wrapped) MuJoCo env: Fetch, PointMaze, AntMaze, or any ``MujocoEnv``
    :return: Its ``MujocoRenderer``, or ``None``
    """
    unwrapped = env.unwrapped
    renderer = getattr(unwrapped, "mujoco_renderer", None)
    if renderer is not None:
        return renderer
    for name in _INNER_ROBOT_ENVS:
        inner = getattr(unwrapped, name, None)
        if inner is not None and getattr(inner, "mujoco_renderer", None) is not None:
            return inner.mujoco_renderer
    return None


def render_with_subgoals(
    env: gym.Env,
    subgoal_space: SubgoalSpace,
    subgoals: np.ndarray,
    colors: list[np.ndarray] | None = None,
    radius: float | None = None,
) -> np.ndarray:
    """
    Render one frame with a sphere at each subgoal (its radius is the achievement threshold by default).

    :param env: The env, created with ``render_mode="rgb_array"``
    :param subgoal_space: The subgoal space (it maps subgoals to world coordinates)
    :param subgoals: Subgoals of shape ``(n, dim)`` (e.g. one per lower level of a ``HierarchyState``)
    :param colors: RGBA per subgoal (default: ``LEVEL_COLORS`` in order)
    :param radius: Marker radius (default: the smallest position threshold)
    :return: The RGB frame
    """
    import mujoco

    if env.render_mode != "rgb_array":
        raise ValueError(f"Subgoal markers need render_mode='rgb_array', got {env.render_mode!r}")
    renderer = find_mujoco_renderer(env)
    if renderer is None:
        raise ValueError(f"{env.unwrapped} has no MuJoCo renderer to draw subgoal markers in")
    subgoals = np.atleast_2d(subgoals)
    positions = subgoal_space.world_position(subgoals)
    if positions is None:
        raise ValueError(
            f"The {subgoal_space.name} subgoal space does not say where its subgoals are in the scene (world_xyz)"
        )
    if radius is None:
        assert subgoal_space.world_xyz is not None
        radius = float(np.min(subgoal_space.thresholds[list(subgoal_space.world_xyz)]))
    viewer = renderer._get_viewer("rgb_array")
    for index, position in enumerate(positions):
        color = colors[index] if colors is not None else LEVEL_COLORS[index % len(LEVEL_COLORS)]
        # Markers are drawn at the next render and then cleared by the viewer.
        viewer.add_marker(pos=position, size=np.full(3, radius), rgba=color, type=mujoco.mjtGeom.mjGEOM_SPHERE)
    frame = env.render()
    assert isinstance(frame, np.ndarray)
    return frame


@dataclass
class EpisodeRecord:
    """
    One episode of a hierarchy: per step, the projected state, the active subgoals and the goal.

    :param achieved: Projected states (subgoal space), shape ``(T + 1, dim)``
    :param subgoals: Active subgoals of the lower levels at each step, shape ``(T, n_levels - 1, dim)``
    :param desired_goal: The env goal at each step, shape ``(T + 1, goal_dim)``
    :param frames: Rendered frames with subgoal markers (empty when not rendered)
    :param success: The env's success flag at the end
    """

    achieved: np.ndarray
    subgoals: np.ndarray
    desired_goal: np.ndarray
    frames: list[np.ndarray] = field(default_factory=list)
    success: float = 0.0


def record_episode(model: HHER, env: gym.Env, seed: int | None = None, render: bool = True) -> EpisodeRecord:
    """
    Run one episode of a trained hierarchy (deterministic, with ``predict``'s state) and record its subgoals.

    :param model: A trained HHER agent with at least 2 levels
    :param env: A single (non-vectorised) env, ``render_mode="rgb_array"`` if ``render``
    :param seed: Seed of the episode's reset
    :param render: Render a frame per step with the subgoals drawn
    :return: The record
    """
    subgoal_space = model.subgoal_space
    if model.n_levels < 2 or not isinstance(subgoal_space, SubgoalSpace):
        raise ValueError("record_episode needs a hierarchy of at least 2 levels")
    obs, _ = env.reset(seed=seed)
    achieved, subgoals, goals, frames = [subgoal_space.project(obs)], [], [np.asarray(obs["desired_goal"])], []
    state, done = None, False
    info: dict[str, Any] = {}
    while not done:
        action, state = model.predict(obs, state=state, deterministic=True)
        assert isinstance(state, HierarchyState)
        active = state.subgoals[:, 0]
        subgoals.append(active.copy())
        if render:
            frames.append(render_with_subgoals(env, subgoal_space, active))
        obs, _, terminated, truncated, info = env.step(action)
        achieved.append(subgoal_space.project(obs))
        goals.append(np.asarray(obs["desired_goal"]))
        done = terminated or truncated
    return EpisodeRecord(np.array(achieved), np.array(subgoals), np.array(goals), frames, get_success(info) or 0.0)


def maze_walls(env: gym.Env) -> list[tuple[float, float, float]]:
    """
    The wall cells of a gymnasium-robotics maze env (PointMaze, AntMaze), for ``plot_episode``'s top view.

    :param env: A (wrapped) maze env
    :return: ``(x, y, side)`` of each wall cell: its centre in world coordinates and its side length
    :raises ValueError: If ``env`` is not a maze env
    """
    maze = getattr(env.unwrapped, "maze", None)
    if maze is None or not hasattr(maze, "maze_map"):
        raise ValueError(f"{env.unwrapped} is not a gymnasium-robotics maze env (no maze.maze_map)")
    side = float(maze.maze_size_scaling)
    walls = []
    for row, cells in enumerate(maze.maze_map):
        for col, cell in enumerate(cells):
            if cell == 1:
                x, y = maze.cell_rowcol_to_xy(np.array([row, col]))
                walls.append((float(x), float(y), side))
    return walls


def plot_episode(
    record: EpisodeRecord,
    subgoal_space: SubgoalSpace,
    path: str,
    title: str = "",
    walls: Sequence[tuple[float, float, float]] | None = None,
) -> None:
    """
    Save a PNG of an episode: each subgoal dimension over time (state, active subgoals, bounds, goal), and a
    top view (x-y) of the state's path and the subgoals when the subgoals are positions.

    :param record: The episode (``record_episode``)
    :param subgoal_space: The agent's subgoal space
    :param path: PNG file to write
    :param title: Figure title
    :param walls: Square obstacles ``(x, y, side)`` drawn in the top view (``maze_walls(env)`` for mazes)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = subgoal_space.dim
    top_view = subgoal_space.world_xyz is not None
    n_plots = dims + int(top_view)
    figure, axes = plt.subplots(1, n_plots, figsize=(3.6 * n_plots, 3.4), squeeze=False)
    steps = np.arange(len(record.achieved))
    n_levels_below = record.subgoals.shape[1]
    # Which goal column matches each subgoal dimension: world axes for positions (Fetch, mazes), else the identity.
    goal_columns = record.desired_goal.shape[1]
    if subgoal_space.world_xyz is not None:
        goal_column_of = {dim: axis for axis, dim in enumerate(subgoal_space.world_xyz) if axis < goal_columns}
    else:
        goal_column_of = {dim: dim for dim in range(dims)} if goal_columns == dims else {}
    for dim in range(dims):
        axis = axes[0, dim]
        axis.plot(steps, record.achieved[:, dim], color="black", label="state")
        for level in range(n_levels_below):
            color = LEVEL_COLORS[level % len(LEVEL_COLORS)][:3]
            axis.step(steps[:-1], record.subgoals[:, level, dim], where="post", color=color, label=f"subgoal of level {level}")
        if dim in goal_column_of:
            axis.plot(steps, record.desired_goal[:, goal_column_of[dim]], "--", color="green", label="goal")
        axis.axhline(subgoal_space.low[dim], color="grey", linewidth=0.5)
        axis.axhline(subgoal_space.high[dim], color="grey", linewidth=0.5)
        axis.set_xlabel("env step")
        axis.set_title(subgoal_space.dim_names[dim])
    axes[0, 0].legend(fontsize=7)
    if top_view:
        assert subgoal_space.world_xyz is not None
        x_dim, y_dim = subgoal_space.world_xyz[0], subgoal_space.world_xyz[1]
        axis = axes[0, -1]
        for x, y, side in walls or ():
            axis.add_patch(plt.Rectangle((x - side / 2, y - side / 2), side, side, color="tan", zorder=0))
        axis.plot(record.achieved[:, x_dim], record.achieved[:, y_dim], color="black", label="state")
        for level in range(n_levels_below):
            color = LEVEL_COLORS[level % len(LEVEL_COLORS)][:3]
            axis.scatter(record.subgoals[:, level, x_dim], record.subgoals[:, level, y_dim], color=color, s=12)
        axis.scatter(record.desired_goal[-1, 0], record.desired_goal[-1, 1], marker="*", s=120, color="green", label="goal")
        axis.set_xlim(subgoal_space.low[x_dim], subgoal_space.high[x_dim])
        axis.set_ylim(subgoal_space.low[y_dim], subgoal_space.high[y_dim])
        axis.set_aspect("equal")
        axis.set_title("top view (x-y)")
    figure.suptitle(title or f"success {record.success:.0f}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
