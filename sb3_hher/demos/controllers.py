"""
Scripted controllers for the Fetch tasks and the loop that records their episodes as demonstrations.

The controllers read the Fetch observation dict of gymnasium-robotics (``observation[0:3]`` gripper
position, ``[3:6]`` object position, ``[6:9]`` object minus gripper position, ``[9:11]`` finger joints;
FetchReach has no object and its fingers at ``[3:5]``) and return 4-D actions in ``[-1, 1]``: the gripper's
displacement (times 0.05 m inside the env) and the finger command (open > 0, close < 0).

They play the role of baselines' ``her/experiment/data_generation/fetch_data_generation.py``, which made the
demonstration file of Nair et al. (2018), but also solve FetchPush and aerial pick-and-place goals.
They are deterministic: the same env seed gives the same episodes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from sb3_hher.common.goal_env import get_success, make_goal_env
from sb3_hher.common.subgoals import FETCH_FINGERS, FETCH_GRIPPER_POS, FETCH_OBJECT_POS, FETCH_OBJECT_REL_POS
from sb3_hher.demos.io import Demonstrations

# Fetch observation layout (gymnasium-robotics ``MujocoFetchEnv._get_obs``).
GRIPPER_POS = FETCH_GRIPPER_POS
OBJECT_POS = FETCH_OBJECT_POS
OBJECT_REL_POS = FETCH_OBJECT_REL_POS
FINGERS = FETCH_FINGERS
# Half the side of the Fetch cube (``object0`` in the Fetch scenes is a 5 cm box).
CUBE_HALF_SIZE = 0.025


def _move(target: np.ndarray, current: np.ndarray, gain: float, max_speed: float = 1.0) -> np.ndarray:
    """
    Proportional step from ``current`` towards ``target``, scaled down (not clipped per axis, which would
    bend the path) so that no component exceeds ``max_speed``.
    """
    move = gain * (target - current)
    largest = float(np.max(np.abs(move)))
    return move * (max_speed / largest) if largest > max_speed else move


def _action(move: np.ndarray, fingers: float) -> np.ndarray:
    return np.concatenate([move, [fingers]]).astype(np.float32)


class ScriptedController(ABC):
    """
    A hand-written policy for one goal-conditioned task.

    Call :meth:`reset` at the start of every episode (controllers may keep a phase), then :meth:`act`
    on each (unbatched) observation dict.

    :param gain: Proportional gain from a position error (metres) to an action; the env moves the gripper
        by ``0.05 * action`` metres a step, so a gain of 10 closes about half the error each step
    """

    def __init__(self, gain: float = 10.0) -> None:
        self.gain = gain

    def reset(self) -> None:  # noqa: B027 (a hook: stateless controllers keep the default)
        """Forget the current episode."""

    @abstractmethod
    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """
        :param observation: One observation dict (``observation``, ``achieved_goal``, ``desired_goal``)
        :return: The action, shape ``(4,)``, float32, in ``[-1, 1]``
        """

    def __call__(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return self.act(observation)


class FetchReachController(ScriptedController):
    """Move the gripper straight to the goal (FetchReach; the fingers are blocked)."""

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        gripper = observation["observation"][GRIPPER_POS]
        return _action(_move(observation["desired_goal"], gripper, self.gain), 0.0)


class _PickPhase(Enum):
    APPROACH = "approach"
    DESCEND = "descend"
    GRASP = "grasp"
    CARRY = "carry"


class FetchPickAndPlaceController(ScriptedController):
    """
    Pick the cube and carry it to the goal (on the table or in the air), then hold it there.

    Phases: move above the cube with the fingers open, descend around it, close the fingers for a few
    steps, carry it so that the cube (not the gripper) reaches the goal. If the cube is lost on the way,
    start again from above it.

    :param gain: See :class:`ScriptedController`
    :param approach_height: Height above the cube's centre from which to descend (m)
    :param align_tolerance: Horizontal gripper-to-cube distance below which to descend (m)
    :param grasp_tolerance: Gripper-to-cube distance below which to close the fingers (m)
    :param grasp_steps: Steps the fingers are closed before lifting (they close in about 2)
    :param drop_distance: Gripper-to-cube distance at which a carried cube counts as dropped (m)
    """

    def __init__(
        self,
        gain: float = 10.0,
        approach_height: float = 0.05,
        align_tolerance: float = 0.01,
        grasp_tolerance: float = 0.012,
        grasp_steps: int = 3,
        drop_distance: float = 0.04,
    ) -> None:
        super().__init__(gain)
        self.approach_height = approach_height
        self.align_tolerance = align_tolerance
        self.grasp_tolerance = grasp_tolerance
        self.grasp_steps = grasp_steps
        self.drop_distance = drop_distance
        self.reset()

    def reset(self) -> None:
        self.phase = _PickPhase.APPROACH
        self._grasp_count = 0

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        obs = observation["observation"]
        gripper, cube, cube_rel = obs[GRIPPER_POS], obs[OBJECT_POS], obs[OBJECT_REL_POS]
        goal = observation["desired_goal"]
        horizontal_error = float(np.linalg.norm(cube_rel[:2]))
        distance = float(np.linalg.norm(cube_rel))

        if self.phase in (_PickPhase.GRASP, _PickPhase.CARRY) and distance > self.drop_distance:
            self.phase = _PickPhase.APPROACH  # lost it
        if self.phase == _PickPhase.DESCEND and horizontal_error > 3 * self.align_tolerance:
            self.phase = _PickPhase.APPROACH  # pushed it away while descending
        if self.phase == _PickPhase.APPROACH and horizontal_error < self.align_tolerance:
            self.phase = _PickPhase.DESCEND
        if self.phase == _PickPhase.DESCEND and distance < self.grasp_tolerance:
            self.phase, self._grasp_count = _PickPhase.GRASP, 0
        if self.phase == _PickPhase.GRASP and self._grasp_count >= self.grasp_steps:
            self.phase = _PickPhase.CARRY

        if self.phase == _PickPhase.APPROACH:
            above = cube + np.array([0.0, 0.0, self.approach_height])
            move = _move(above, gripper, self.gain)
            if gripper[2] < cube[2] + self.approach_height / 2:
                move[:2] = 0.0  # rise first: travelling low would knock the cube
            return _action(move, 1.0)
        if self.phase == _PickPhase.DESCEND:
            return _action(_move(cube, gripper, self.gain), 1.0)
        if self.phase == _PickPhase.GRASP:
            self._grasp_count += 1
            return _action(_move(cube, gripper, self.gain), -1.0)
        # CARRY: steer the cube, not the gripper, onto the goal.
        return _action(_move(goal, cube, self.gain), -1.0)


class _PushPhase(Enum):
    APPROACH = "approach"
    LOWER = "lower"
    PUSH = "push"


class FetchPushController(ScriptedController):
    """
    Push the cube to the goal with the closed fingertips (FetchPush; the fingers are blocked).

    Phases: move, above the table, to a point behind the cube on the side opposite to the goal; lower
    the gripper to the cube's height; push along the cube-to-goal line, steering back onto that line,
    and stop once the cube is on the goal. If the gripper slips off the cube's back face, start again (or
    stop, if the cube is already nearly on the goal: near it, the cube-to-goal direction turns quickly).

    :param gain: See :class:`ScriptedController`
    :param standoff: Distance behind the cube's centre from which to start pushing (m)
    :param contact: Gripper-to-cube-centre distance while pushing (half the cube plus the fingertips, m)
    :param clearance: Height above the cube's centre at which to travel to the start point (m)
    :param align_tolerance: Distance to the start point below which to lower the gripper (m)
    :param lateral_tolerance: Distance from the push line at which to give up the push and restart (m)
    :param goal_tolerance: Cube-to-goal distance at which to stop pushing (m); success needs 0.05
    :param settle_distance: Cube-to-goal distance below which a push that lost the cube just stops (m)
    :param max_push_speed: Largest action while pushing, so that the cube does not slide past the goal
    """

    def __init__(
        self,
        gain: float = 10.0,
        standoff: float = 0.06,
        contact: float = 0.04,
        clearance: float = 0.05,
        align_tolerance: float = 0.01,
        lateral_tolerance: float = 0.02,
        goal_tolerance: float = 0.02,
        settle_distance: float = 0.04,
        max_push_speed: float = 0.5,
    ) -> None:
        super().__init__(gain)
        self.standoff = standoff
        self.contact = contact
        self.clearance = clearance
        self.align_tolerance = align_tolerance
        self.lateral_tolerance = lateral_tolerance
        self.goal_tolerance = goal_tolerance
        self.settle_distance = settle_distance
        self.max_push_speed = max_push_speed
        self.reset()

    def reset(self) -> None:
        self.phase = _PushPhase.APPROACH
        self._previous_gripper: np.ndarray | None = None

    def act(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        obs = observation["observation"]
        gripper, cube = obs[GRIPPER_POS], obs[OBJECT_POS]
        goal = observation["desired_goal"]
        to_goal = goal[:2] - cube[:2]
        goal_distance = float(np.linalg.norm(to_goal))
        if goal_distance < self.goal_tolerance:
            return _action(np.zeros(3), 0.0)  # done: keep still
        direction = to_goal / goal_distance
        normal = np.array([-direction[1], direction[0]])
        offset = gripper[:2] - cube[:2]
        along, lateral = float(offset @ direction), float(offset @ normal)
        start = np.concatenate([cube[:2] - self.standoff * direction, [cube[2]]])

        if self.phase == _PushPhase.PUSH and (along > -CUBE_HALF_SIZE or abs(lateral) > self.lateral_tolerance):
            if goal_distance < self.settle_distance:
                return _action(np.zeros(3), 0.0)  # close enough: re-aligning would disturb the cube more
            self.phase = _PushPhase.APPROACH  # slipped off the cube's back face
        if self.phase == _PushPhase.APPROACH and gripper[2] > cube[2] + self.clearance / 2:
            # At the start point, or as near as the arm reaches (a cube at the table's far edge) if behind the cube.
            stalled = self._previous_gripper is not None and np.linalg.norm(gripper - self._previous_gripper) < 0.002
            behind = along < -(CUBE_HALF_SIZE + 0.01) and abs(lateral) < self.align_tolerance
            if np.linalg.norm(gripper[:2] - start[:2]) < self.align_tolerance or (stalled and behind):
                self.phase = _PushPhase.LOWER
        if self.phase == _PushPhase.LOWER and abs(gripper[2] - cube[2]) < self.align_tolerance:
            self.phase = _PushPhase.PUSH
        self._previous_gripper = gripper.copy()

        if self.phase == _PushPhase.APPROACH:
            above = start + np.array([0.0, 0.0, self.clearance])
            move = _move(above, gripper, self.gain)
            if gripper[2] < cube[2] + self.clearance - self.align_tolerance:
                # Rise first, backing away from the cube: travelling low would knock it.
                distance = float(np.linalg.norm(offset))
                move[:2] = 0.5 * offset / distance if distance < self.standoff else 0.0
                move[2] = 1.0
            return _action(move, 0.0)
        if self.phase == _PushPhase.LOWER:
            return _action(_move(start, gripper, self.gain), 0.0)
        # PUSH: aim the gripper at where it will be when the cube sits on the goal, and back onto the line.
        target = np.concatenate([goal[:2] - self.contact * direction - lateral * normal, [cube[2]]])
        return _action(_move(target, gripper, self.gain, self.max_push_speed), 0.0)


# Controllers by task name (the env id without its version).
CONTROLLERS: dict[str, type[ScriptedController]] = {
    "FetchReach": FetchReachController,
    "FetchPush": FetchPushController,
    "FetchPickAndPlace": FetchPickAndPlaceController,
}


def make_controller(env_id: str, **kwargs: Any) -> ScriptedController:
    """
    The scripted controller for an env id.

    :param env_id: E.g. ``"FetchPickAndPlace-v4"`` (any version)
    :param kwargs: Passed to the controller's constructor
    """
    task = re.sub(r"-v\d+$", "", env_id)
    if task not in CONTROLLERS:
        raise ValueError(f"No scripted controller for {env_id!r}: controllers exist for {sorted(CONTROLLERS)} (any version)")
    return CONTROLLERS[task](**kwargs)


def record_episode(env: gym.Env, controller: ScriptedController, seed: int | None = None) -> dict[str, np.ndarray]:
    """
    Run one episode of ``controller`` in ``env`` until it terminates or is truncated.

    :param env: A goal-conditioned env (not vectorised)
    :param controller: The controller; it is reset first
    :param seed: Passed to ``env.reset``
    :return: The episode as arrays ``observation``, ``achieved_goal``, ``desired_goal`` (``T + 1`` rows),
        ``action`` and ``is_success`` (``T`` rows)
    """
    controller.reset()
    obs, _ = env.reset(seed=seed)
    observations, actions, successes = [obs], [], []
    done = False
    while not done:
        action = controller.act(obs)
        obs, _, terminated, truncated, info = env.step(action)
        success = get_success(info)
        observations.append(obs)
        actions.append(action)
        successes.append(np.nan if success is None else success)
        done = terminated or truncated
    episode = {key: np.stack([o[key] for o in observations]) for key in ("observation", "achieved_goal", "desired_goal")}
    episode["action"] = np.stack(actions).astype(np.float32)
    episode["is_success"] = np.asarray(successes, dtype=np.float32)
    return episode


@dataclass(frozen=True)
class ControllerStats:
    """
    How a scripted controller did while generating demonstrations.

    :param episodes: Episodes it played
    :param successes: Those successful at their last step
    """

    episodes: int
    successes: int

    @property
    def success_rate(self) -> float:
        """The controller's own success rate."""
        return self.successes / self.episodes if self.episodes else float("nan")


def generate_demonstrations(
    env_id: str,
    n_episodes: int,
    seed: int | None = 0,
    only_successful: bool = True,
    max_attempts: int | None = None,
    progress_bar: bool = False,
    controller: ScriptedController | None = None,
) -> tuple[Demonstrations, ControllerStats]:
    """
    Record episodes of the scripted controller for ``env_id``.

    Like baselines' generator, with ``only_successful`` it keeps trying until it has ``n_episodes``
    successful episodes (success = ``info["is_success"]`` at the last step).

    :param env_id: A Fetch env id, e.g. ``"FetchPickAndPlace-v4"``
    :param n_episodes: Number of episodes to return
    :param seed: Seed of the env's first reset (later resets continue its random stream); ``None``: unseeded
    :param only_successful: Keep only successful episodes
    :param max_attempts: Give up (``RuntimeError``) after this many episodes; default ``10 * n_episodes``
    :param progress_bar: Show a tqdm progress bar
    :param controller: The controller to run; default :func:`make_controller` ``(env_id)``
    :return: The demonstrations, and how many episodes the controller played and won
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be at least 1, got {n_episodes}")
    max_attempts = 10 * n_episodes if max_attempts is None else max_attempts
    controller = make_controller(env_id) if controller is None else controller
    env = make_goal_env(env_id)
    episodes: list[dict[str, np.ndarray]] = []
    attempts = successes = 0
    with tqdm(total=n_episodes, desc=f"{env_id} demos", unit="episode", disable=not progress_bar) as bar:
        while len(episodes) < n_episodes:
            if attempts >= max_attempts:
                raise RuntimeError(
                    f"Only {len(episodes)} of {n_episodes} successful episodes after {attempts} attempts: "
                    f"the {type(controller).__name__} succeeds in {successes / attempts:.0%} of its episodes"
                )
            episode = record_episode(env, controller, seed=seed if attempts == 0 else None)
            attempts += 1
            success = bool(episode["is_success"][-1] == 1.0)
            successes += success
            if success or not only_successful:
                episodes.append(episode)
                bar.update(1)
            bar.set_postfix(success_rate=f"{successes / attempts:.2f}")
    env.close()
    demos = Demonstrations(**{key: np.stack([e[key] for e in episodes]) for key in episodes[0]}, env_id=env_id)
    return demos, ControllerStats(episodes=attempts, successes=successes)
