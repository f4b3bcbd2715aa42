"""The hierarchical policy: the level policies of HHER and the subgoal bookkeeping that links them."""

from __future__ import annotations


from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_hher.common.goal_env import GOAL_KEYS
from sb3_hher.common.policies import GoalPolicy
from sb3_hher.common.subgoals import SubgoalSpace

# select(level, level_observation, env_indices) -> actions of that level scaled to [-1, 1], one row per env index.
ActionSelector = Callable[[int, dict[str, np.ndarray], np.ndarray], np.ndarray]


class HierarchyState(NamedTuple):
    """
    What a hierarchy remembers between two env steps (the ``state`` of ``predict``), for each level below the top.

    :param subgoals: Goal of each lower level, proposed by the level above it: shape ``(n_levels - 1, n_envs, dim)``
    :param steps_left: Actions each lower level may still take in its current attempt (at most H):
        shape ``(n_levels - 1, n_envs)``; 0 means the attempt is over and the level above proposes a new subgoal
    """

    subgoals: np.ndarray
    steps_left: np.ndarray

    def copy(self) -> HierarchyState:
        return HierarchyState(self.subgoals.copy(), self.steps_left.copy())


class AttemptOutcome(NamedTuple):
    """
    How the attempts of the lower levels stand after a step, each of shape ``(n_levels - 1, n_envs)``.

    :param ended: The attempt of the level is over (goal or a higher subgoal achieved, or no action left)
    :param reached: The level's own goal is achieved
    :param exhausted: The attempt ended because the level used its H actions without achieving its goal
        or a higher one (HAC: the level "maxed out"; a tested subgoal then earns its proposer the penalty)
    """

    ended: np.ndarray
    reached: np.ndarray
    exhausted: np.ndarray


class HierarchicalPolicy(BasePolicy):
    """
    The policy of an HHER agent: one ``GoalPolicy`` per level, level 0 acting in the env, every level above
    proposing subgoals (points of ``subgoal_space``) to the level below, which gets at most H actions
    (``subgoal_horizon``) to achieve them (Levy et al. 2019, Hierarchical Actor-Critic).

    ``predict(observation, state, episode_start)`` carries the active subgoals and the actions left to each
    level in ``state`` (a ``HierarchyState``), so ``evaluate_policy`` and ``EvalCallback`` run the hierarchy as
    trained. Called without ``state``, the hierarchy starts afresh (every level proposes a new subgoal). Like
    SB3's TD3 policy, it is deterministic: ``deterministic`` is accepted and ignored (exploration noise belongs
    to the algorithm's rollouts).

    The level policies keep their own running normalisers, so ``state_dict()`` holds every level's weights and
    statistics.

    :param observation_space: The env's Dict observation space
    :param action_space: The env's action space
    :param level_policies: One ``GoalPolicy`` per level, level 0 (env actions) first
    :param subgoal_space: The subgoal space of the levels below the top (``None`` for one level)
    :param subgoal_horizon: Max actions of a level per subgoal (H in the paper)
    :param goal_threshold: Euclidean distance between the achieved and the desired goal within which the env's goal
        counts as achieved: every lower level's attempt then ends (HAC: a level returns control once any higher goal
        is achieved, the env's goal included), so the top level decides again as soon as the goal is reached.
        ``None``: lower levels return only at their own subgoals or after H actions
    :param hold_goal: Once the env's goal is achieved (within ``goal_threshold``), the top level proposes the
        current state (projected and clipped to the subgoal bounds) instead of its actor's subgoal, so the hierarchy
        stays where the goal holds. HAC ends the episode at the top level's goal; this is its counterpart in envs that
        run on to a time limit and score the last step (Fetch). Needs ``goal_threshold``
    """

    levels: nn.ModuleList

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        level_policies: list[GoalPolicy],
        subgoal_space: SubgoalSpace | None,
        subgoal_horizon: int,
        goal_threshold: float | None = None,
        hold_goal: bool = False,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        if len(level_policies) == 0:
            raise ValueError("A hierarchical policy needs at least one level")
        if len(level_policies) > 1 and subgoal_space is None:
            raise ValueError("A hierarchy of several levels needs a subgoal space")
        self.levels = nn.ModuleList(level_policies)
        self.subgoal_space = subgoal_space
        self.subgoal_horizon = int(subgoal_horizon)
        if goal_threshold is not None and not goal_threshold > 0:
            raise ValueError(f"goal_threshold must be a positive distance or None, got {goal_threshold!r}")
        self.goal_threshold = None if goal_threshold is None else float(goal_threshold)
        self.hold_goal = bool(hold_goal)
        self.check_hold_goal()

    def check_hold_goal(self) -> None:
        """Raise a ``ValueError`` where ``hold_goal`` is on but the policy cannot tell when the env's goal is achieved."""
        if self.hold_goal and (self.n_levels < 2 or self.goal_threshold is None):
            raise ValueError(
                "hold_goal needs a hierarchy (n_levels >= 2) and a goal_threshold to tell when the env's goal is "
                f"achieved, got {self.n_levels} level(s) and goal_threshold={self.goal_threshold}"
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        # The level policies travel whole (their own classes and constructor parameters, pickled by
        # ``policy.save``); ``load`` then copies the saved weights into them.
        return {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "level_policies": list(self.levels),
            "subgoal_space": self.subgoal_space,
            "subgoal_horizon": self.subgoal_horizon,
            "goal_threshold": self.goal_threshold,
            "hold_goal": self.hold_goal,
        }

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def level_policy(self, level: int) -> GoalPolicy:
        policy = self.levels[level]
        assert isinstance(policy, GoalPolicy)
        return policy

    def initial_state(self, n_envs: int) -> HierarchyState:
        """
        :param n_envs: Number of envs
        :return: The state of a hierarchy before the first step (no active subgoal)
        """
        dim = self.subgoal_space.dim if self.subgoal_space is not None else 0
        return HierarchyState(
            np.zeros((self.n_levels - 1, n_envs, dim), dtype=np.float32),
            np.zeros((self.n_levels - 1, n_envs), dtype=np.int64),
        )

    def level_observation(
        self,
        level: int,
        observation: dict[str, np.ndarray],
        subgoals: np.ndarray,
        env_indices: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """
        The goal observation a level sees: the env's for the top level; for a lower level, the env observation with
        the projected state as achieved goal and its subgoal as desired goal.

        :param level: Level index (0 = env actions)
        :param observation: Batched env observation
        :param subgoals: Subgoals of the lower levels, shape ``(n_levels - 1, n_envs, dim)``
        :param env_indices: Rows to take (default: all)
        :return: Batched level observation
        """
        rows = slice(None) if env_indices is None else env_indices
        if level == self.n_levels - 1:
            return {key: np.asarray(observation[key])[rows] for key in GOAL_KEYS}
        assert self.subgoal_space is not None
        return {
            "observation": np.asarray(observation["observation"])[rows],
            "achieved_goal": self.subgoal_space.project(observation)[rows],
            "desired_goal": subgoals[level][rows],
        }

    @th.no_grad()
    def level_actions(self, level: int, level_observation: dict[str, np.ndarray]) -> np.ndarray:
        """
        Deterministic actions of one level (the actor's tanh output, scaled to ``[-1, 1]``).

        :param level: Level index
        :param level_observation: Batched level observation
        :return: Scaled actions, shape ``(batch, action_dim)``
        """
        policy = self.level_policy(level)
        tensors = {key: th.as_tensor(value, dtype=th.float32, device=self.device) for key, value in level_observation.items()}
        return policy.actor(tensors).cpu().numpy()

    def unscale_level_action(self, level: int, scaled_action: np.ndarray) -> np.ndarray:
        """
        Map scaled actions of a level to its action space; subgoals are clipped to the subgoal bounds.

        :param level: Level index
        :param scaled_action: Actions in ``[-1, 1]``
        :return: Env actions (level 0) or subgoals (levels above)
        """
        action = self.level_policy(level).unscale_action(np.clip(scaled_action, -1.0, 1.0))
        if level > 0:
            assert self.subgoal_space is not None
            return self.subgoal_space.clip(action)
        return action

    def end_attempts(self, observation: dict[str, np.ndarray], state: HierarchyState) -> AttemptOutcome:
        """
        Close the attempts that are over in ``observation`` and mark them in ``state`` (``steps_left = 0``).

        An attempt of level i ends when its subgoal, a subgoal of a level above or (with ``goal_threshold``) the env's
        goal is achieved (HAC: a level returns control once any higher goal is achieved), or when it has used its H
        actions and its last action (for i > 0, the attempt of level i - 1) is over. The top level's attempt is the
        env episode.

        :param observation: Batched env observation (the state the last action led to)
        :param state: Hierarchy state, updated in place
        :return: Which attempts ended, reached their goal, or ran out of actions
        """
        n_lower = self.n_levels - 1
        n_envs = state.steps_left.shape[1]
        if n_lower == 0:
            empty = np.zeros((0, n_envs), dtype=bool)
            return AttemptOutcome(empty, empty, empty)
        assert self.subgoal_space is not None
        achieved = self.subgoal_space.project(observation)
        reached = self.subgoal_space.is_achieved(achieved[None], state.subgoals)
        # reached_here_or_above[i]: the goal of level i or of any lower level above it is achieved.
        reached_here_or_above = np.flip(np.logical_or.accumulate(np.flip(reached, axis=0), axis=0), axis=0)
        if self.goal_threshold is not None:
            reached_here_or_above |= self.goal_reached(observation)[None]
        out_of_actions = state.steps_left <= 0
        ended = np.zeros_like(reached)
        ended[0] = out_of_actions[0] | reached_here_or_above[0]
        for level in range(1, n_lower):
            ended[level] = (ended[level - 1] & out_of_actions[level]) | reached_here_or_above[level]
        exhausted = ended & ~reached_here_or_above
        state.steps_left[ended] = 0
        return AttemptOutcome(ended, reached, exhausted)

    def goal_reached(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """
        :param observation: Batched env observation
        :return: Whether each env's goal is achieved (within ``goal_threshold``; all ``False`` without one)
        """
        achieved = np.asarray(observation["achieved_goal"], dtype=np.float64)
        if self.goal_threshold is None:
            return np.zeros(achieved.shape[0], dtype=bool)
        distance = np.linalg.norm(achieved - np.asarray(observation["desired_goal"], dtype=np.float64), axis=-1)
        return distance <= self.goal_threshold

    def hold_subgoals(self, level: int, level_observation: dict[str, np.ndarray], scaled: np.ndarray) -> np.ndarray:
        """
        With ``hold_goal``: the top level's subgoals where the env's goal is achieved become the current state.

        :param level: Level index of the proposals
        :param level_observation: Batched observation of that level (for the top level: the env's)
        :param scaled: The level's scaled proposals, shape ``(batch, subgoal_dim)``
        :return: The proposals to carry out, scaled to ``[-1, 1]`` (``scaled`` itself where nothing is held)
        """
        if not self.hold_goal or level != self.n_levels - 1:
            return scaled
        self.check_hold_goal()
        held = self.goal_reached(level_observation)
        if not held.any():
            return scaled
        assert self.subgoal_space is not None
        here = self.subgoal_space.clip(self.subgoal_space.project(level_observation)[held])
        scaled = np.array(scaled, copy=True)
        scaled[held] = self.level_policy(level).scale_action(here)
        return scaled

    def act(
        self, observation: dict[str, np.ndarray], state: HierarchyState, select: ActionSelector | None = None
    ) -> np.ndarray:
        """
        One env step of the hierarchy: from the top down, every level whose child's attempt is over proposes a new
        subgoal; then level 0 acts. ``state`` must already have the finished attempts closed (``end_attempts``).

        :param observation: Batched env observation
        :param state: Hierarchy state, updated in place
        :param select: Chooses the scaled actions of a level for some envs (training adds exploration there, and
            applies ``hold_subgoals``); default: the deterministic level policies, with ``hold_subgoals``
        :return: Level 0's actions, scaled to ``[-1, 1]``
        """

        def greedy(level: int, level_obs: dict[str, np.ndarray], envs: np.ndarray) -> np.ndarray:
            return self.hold_subgoals(level, level_obs, self.level_actions(level, level_obs))

        choose = select if select is not None else greedy
        for level in range(self.n_levels - 1, 0, -1):
            envs = np.flatnonzero(state.steps_left[level - 1] <= 0)
            if envs.size == 0:
                continue
            level_obs = self.level_observation(level, observation, state.subgoals, envs)
            scaled = choose(level, level_obs, envs)
            state.subgoals[level - 1, envs] = self.unscale_level_action(level, scaled)
            state.steps_left[level - 1, envs] = self.subgoal_horizon
            if level < self.n_levels - 1:
                state.steps_left[level, envs] -= 1
        n_envs = len(np.asarray(observation["observation"]))
        all_envs = np.arange(n_envs)
        level_obs = self.level_observation(0, observation, state.subgoals)
        scaled_actions = choose(0, level_obs, all_envs)
        if self.n_levels > 1:
            state.steps_left[0] -= 1
        return scaled_actions

    def _as_batch(self, observation: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
        if not isinstance(observation, dict):
            raise ValueError(
                f"{type(self).__name__}.predict needs a goal observation (a dict with {list(GOAL_KEYS)}), "
                f"got {type(observation)}"
            )
        assert isinstance(self.observation_space, spaces.Dict)
        shape = self.observation_space["observation"].shape
        assert shape is not None
        vectorized = np.asarray(observation["observation"]).ndim == len(shape) + 1
        if vectorized:
            return {key: np.asarray(observation[key]) for key in GOAL_KEYS}, True
        return {key: np.asarray(observation[key])[None] for key in GOAL_KEYS}, False

    def predict(  # type: ignore[override]
        self,
        observation: dict[str, np.ndarray],
        state: HierarchyState | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, HierarchyState | None]:
        """
        Env actions of the hierarchy, and its next state.

        :param observation: Goal observation, batched (VecEnv) or not
        :param state: ``HierarchyState`` returned by the previous call (``None`` at the start)
        :param episode_start: Which envs start a new episode (their subgoals are discarded)
        :param deterministic: Ignored (the level policies are deterministic)
        :return: The actions and the next ``HierarchyState`` (``None`` for a one-level agent)
        """
        self.set_training_mode(False)
        if self.n_levels == 1:
            return self.level_policy(0).predict(observation, None, episode_start, deterministic)[0], None
        batch, vectorized = self._as_batch(observation)
        n_envs = len(batch["observation"])
        if state is None:
            hierarchy_state = self.initial_state(n_envs)
        else:
            hierarchy_state = HierarchyState(np.array(state[0], dtype=np.float32), np.array(state[1], dtype=np.int64))
            n_state_levels, n_state_envs = hierarchy_state.steps_left.shape
            if (n_state_levels, n_state_envs) != (self.n_levels - 1, n_envs):
                raise ValueError(
                    f"The hierarchy state is for {n_state_envs} envs and {n_state_levels + 1} levels, the observation "
                    f"for {n_envs} envs and the policy has {self.n_levels} levels"
                )
        if episode_start is not None:
            starts = np.asarray(episode_start, dtype=bool).reshape(-1)
            hierarchy_state.steps_left[:, starts] = 0
        self.end_attempts(batch, hierarchy_state)
        scaled = self.act(batch, hierarchy_state)
        actions = self.unscale_level_action(0, scaled)
        if not vectorized:
            actions = actions[0]
        return actions, hierarchy_state

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        Stateless actions: every level proposes a fresh subgoal at each call (re-planning every step).
        ``predict`` with ``state`` runs the hierarchy as trained.

        :param observation: Batched goal observation (tensors)
        :param deterministic: Ignored
        :return: Level 0's actions scaled to ``[-1, 1]``
        """
        assert isinstance(observation, dict)
        batch = {key: observation[key].detach().cpu().numpy() for key in GOAL_KEYS}
        state = self.initial_state(len(batch["observation"]))
        scaled = self.act(batch, state)
        return th.as_tensor(scaled, device=self.device)

    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(observation, deterministic)
