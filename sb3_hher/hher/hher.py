"""Hierarchical HER: Hierarchical Actor-Critic (Levy et al. 2019) built from the flat HerDDPG/HerTD3 learners."""

from __future__ import annotations

import inspect
import io
import pathlib
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutReturn, Schedule, TrainFreq
from stable_baselines3.common.utils import safe_mean, should_collect_more_steps
from stable_baselines3.common.vec_env import VecEnv

from sb3_hher.common.goal_env import (
    GOAL_KEYS,
    GoalEnvSpec,
    call_compute_reward,
    check_goal_env,
    get_success,
    register_env_id,
)
from sb3_hher.common.policies import GoalPolicy
from sb3_hher.common.subgoals import SubgoalSpace, env_goal_threshold, subgoal_space_for_env
from sb3_hher.her.core import AUTO, NonFiniteObservationError, find_non_finite, zero_non_finite
from sb3_hher.her.her_ddpg import HerDDPG
from sb3_hher.her.her_td3 import HerTD3
from sb3_hher.hher.buffers import LevelReplayBuffer
from sb3_hher.hher.decisions import DecisionLog
from sb3_hher.hher.policies import HierarchicalPolicy, HierarchyState

SelfHHER = TypeVar("SelfHHER", bound="HHER")


LEARNERS: dict[str, type[HerDDPG] | type[HerTD3]] = {"ddpg": HerDDPG, "td3": HerTD3}
LevelLearner = HerDDPG | HerTD3
# Set by HHER itself for every level of a hierarchy: not accepted in level_kwargs.
RESERVED_LEVEL_KWARGS = (
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "learning_starts",
    "train_freq",
    "action_noise",
    "replay_buffer_class",
    "optimize_memory_usage",
    "_init_setup_model",
)
# Keys of a ``subgoal_space`` dict: the keyword arguments of ``subgoal_space_for_env`` after the env.
SUBGOAL_SPACE_KEYS = frozenset(inspect.signature(subgoal_space_for_env).parameters) - {"env"}


def _check_subgoal_space_argument(subgoal_space: Any) -> None:
    """
    Fail early on a ``subgoal_space`` argument HHER cannot resolve (presets are checked against the env later).

    :param subgoal_space: The constructor's ``subgoal_space``
    """
    if isinstance(subgoal_space, dict):
        unknown = sorted(set(subgoal_space) - SUBGOAL_SPACE_KEYS)
        if unknown:
            raise ValueError(
                f"Unknown subgoal_space keys {unknown}: a dict holds subgoal_space_for_env arguments "
                f"{sorted(SUBGOAL_SPACE_KEYS)}"
            )
    elif not isinstance(subgoal_space, str | SubgoalSpace):
        raise TypeError(f"subgoal_space must be a SubgoalSpace, a preset name or a dict, got {type(subgoal_space)}")


def _check_goal_threshold_argument(goal_threshold: Any) -> None:
    """
    :param goal_threshold: The constructor's ``goal_threshold`` (checked against the env's reward later)
    """
    if goal_threshold is None or goal_threshold == AUTO:
        return
    if isinstance(goal_threshold, bool) or not isinstance(goal_threshold, float | int) or not goal_threshold > 0:
        raise ValueError(f"goal_threshold must be 'auto', None or a positive distance, got {goal_threshold!r}")


class _LevelLogger:
    """Forwards a level learner's records to the HHER logger under ``train/level_<i>/`` and keeps the last values."""

    def __init__(self, logger: Logger, level: int) -> None:
        self.logger = logger
        self.level = level
        self.last: dict[str, Any] = {}

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        if key.startswith("train/"):
            key = f"train/level_{self.level}/{key[len('train/') :]}"
        self.last[key] = value
        self.logger.record(key, value, exclude)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


@dataclass
class _Transition:
    observation: dict[str, np.ndarray]
    action: np.ndarray
    reward: float
    next_observation: dict[str, np.ndarray]


@dataclass
class _RolloutState:
    """Per-env bookkeeping of a hierarchy while it collects experience (never saved)."""

    n_envs: int
    n_levels: int
    state: HierarchyState
    # greedy[i, e]: level i of env e acts without exploration noise because a level above tests its subgoal.
    greedy: np.ndarray
    # The decision of level i >= 1 waiting for the attempt of level i - 1 to end: observation, scaled subgoal, test flag.
    pending_observation: list[dict[str, np.ndarray]] = field(default_factory=list)
    pending_action: list[np.ndarray] = field(default_factory=list)
    pending_test: list[np.ndarray] = field(default_factory=list)
    # Level 0's observation and scaled action of the current step.
    level0_observation: dict[str, np.ndarray] = field(default_factory=dict)
    level0_action: np.ndarray | None = None
    # episodes[level][env]: transitions of the level's current attempt, stored when the attempt ends.
    episodes: list[list[list[_Transition]]] = field(default_factory=list)


def _row(batch: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    return {key: np.array(value[index]) for key, value in batch.items()}


def _per_level(value: Any, n_levels: int, name: str) -> list[Any]:
    if isinstance(value, str | dict) or value is None:
        return [value] * n_levels
    values = list(value)
    if len(values) != n_levels:
        raise ValueError(f"{name} has {len(values)} entries for {n_levels} levels")
    return values


class HHER(OffPolicyAlgorithm):
    """
    Learning Multi-Level Hierarchies with Hindsight (Hierarchical Actor-Critic, HAC), as an SB3 algorithm.

    Paper: https://arxiv.org/abs/1712.00948

    Level 0 acts in the env; every level above proposes a subgoal (a point of ``subgoal_space``, always inside
    its bounds) that the level below gets at most H actions (``subgoal_horizon``) to achieve. Each level is a flat
    ``HerDDPG`` or ``HerTD3`` learner (its ``GoalPolicy`` with running normaliser, its relabelling buffer, its
    update with clipped targets and action L2 penalty) trained on HAC's three kinds of transitions:

    1. hindsight actions: when the level below missed a subgoal, the level above stores the subgoal actually
       reached as its action, as if the level below were optimal;
    2. hindsight goals: HER relabelling at every level (subgoals at lower levels, env goals at the top);
    3. subgoal tests: with probability ``subgoal_test_prob`` a proposed subgoal is tested (every level below acts
       without noise); if missed, the proposing level stores reward ``subgoal_penalty`` with discount 0. These
       transitions live in a separate store of the level's ``LevelReplayBuffer`` and are never relabelled.

    Every level's reward is sparse ``{-1, 0}`` (the top level's is derived from the env's ``compute_reward``, so a
    ``{0, 1}`` env such as PointMaze works too) and its TD targets are clipped to ``[subgoal_penalty, 0]``
    (``[-H, 0]`` by default, HAC). With ``n_levels=1`` HHER is exactly the flat learner (same seed, same result).

    :param policy: The level policy ("MultiInputPolicy" or a ``GoalPolicy`` subclass)
    :param env: A goal-conditioned env (Dict observation with observation/achieved_goal/desired_goal and a
        vectorised ``compute_reward``), or its registered id
    :param n_levels: Number of levels (k in the paper); 1 is the flat learner
    :param subgoal_horizon: Max actions of a level per subgoal (H in the paper); ``None``: ``round(T ** (1 / k))``
        with T the env's time limit, so that H ** k is about T
    :param subgoal_space: A ``SubgoalSpace``, or a preset name: ``"auto"`` (chosen by env id: Fetch gripper
        position, maze x-y, otherwise the achieved-goal space), ``"fetch"``, ``"maze"``, ``"generic"``, or a dict of
        ``subgoal_space_for_env`` keyword arguments (``preset``, ``low``, ``high``, ``thresholds``) that adjusts a
        preset, e.g. ``{"thresholds": 0.01}`` (what a zoo YAML file or ``--set`` can express)
    :param goal_threshold: Euclidean distance between achieved and desired goal within which the env's goal counts as
        achieved by the hierarchy: every lower level then returns control at once (HAC: a level's attempt ends when
        any higher goal is achieved, the env's goal included), so the top level can hold the goal (e.g. stop pushing
        a Fetch object that has reached it) instead of waiting for the level below to finish its subgoal.
        ``"auto"``: the env's ``distance_threshold`` (Fetch), 0.45 (PointMaze, AntMaze), otherwise ``None``;
        ``None``: lower levels return only at their own subgoals or after H actions. A distance is checked against
        the env's ``compute_reward`` at construction
    :param hold_goal: Once the env's goal is achieved (within ``goal_threshold``), the top level proposes the current
        state (projected to the subgoal space) instead of its actor's subgoal, while training and in ``predict``: the
        hierarchy stays where the goal holds. HAC ends the episode at the top level's goal; this is its counterpart in
        envs that run on to a time limit and score the last step (Fetch: an object on the goal is left alone). Needs
        ``n_levels >= 2`` and a ``goal_threshold``
    :param subgoal_test_prob: Probability that a proposed subgoal is tested (lambda in the paper, 0.3)
    :param subgoal_penalty: Reward of a missed test subgoal, with discount 0; ``None``: ``-H``
    :param level_learners: Update rule of each level, ``"ddpg"`` (``HerDDPG``) or ``"td3"`` (``HerTD3``): one name
        for all levels or one per level (level 0 first)
    :param level_kwargs: Extra keyword arguments of each level's learner (e.g. ``action_l2``, ``policy_kwargs``,
        ``target_update_interval``, ``batch_size``, ``gradient_steps``, ``gamma``, ``random_eps``, ``noise_eps``):
        one dict for all levels or one per level; they override the shared settings below
    :param learning_rate: Adam learning rate of every level
    :param buffer_size: Replay buffer size of every level, in transitions
    :param learning_starts: Env steps of uniformly random actions and subgoals before learning starts
    :param batch_size: Minibatch size of each gradient step, every level
    :param tau: Polyak coefficient of each target update, every level
    :param gamma: Discount of every level; ``None``: ``1 - 1/H``, so that returns lie in ``[-H, 0]``
        (with one level: ``1 - 1/T`` as the flat learner)
    :param train_freq: Collect this much between two training phases (``(n, "episode")`` or ``n`` steps)
    :param gradient_steps: Gradient steps of each level per training phase
    :param random_action_prob: Probability of a uniformly random env action at level 0 (baselines ``random_eps``)
    :param action_noise_std: Std of the Gaussian noise on level 0's actions, per dimension, as a fraction of the
        dimension's half range (baselines ``noise_eps``)
    :param random_subgoal_prob: Probability of a uniformly random subgoal (inside the bounds) at the levels above
    :param subgoal_noise_std: Std of the Gaussian noise on subgoals, per dimension, as a fraction of the dimension's
        half range; noisy subgoals are clipped to the bounds
    :param n_sampled_goal: Relabelled transitions per real one at every level (baselines ``replay_k``)
    :param goal_selection_strategy: Relabelling strategy ("future", "final" or "episode")
    :param critic_saturation_patience: Training phases a level's mean Q may stay at its lowest value (the
        penalty) before a warning says its critic is saturated
    :param non_finite: What to do when the env returns NaN or inf in an observation or reward: ``"raise"`` a
        ``NonFiniteObservationError`` naming the key, env and step, or ``"skip"``: warn, store every level's attempt
        up to the last finite step, and learn nothing from the rest of that env's episode
    :param record_decisions: Keep a log of every level's decisions while training (``sb3_hher.hher.decisions``: 4
        bytes per action dimension per env step), so that ``save_checkpoint(model, path, replay_actions=True)``
        (``sb3_hher.common.checkpoint``) can store the replay buffers as those decisions, a file small enough to commit
        or copy, and rebuild them on another machine by replaying the decisions in a fresh env
    :param stats_window_size: Episodes (and subgoals) averaged in rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no logging)
    :param policy_kwargs: Keyword arguments of every level's policy (``net_arch``, ``clip_obs``, ...)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: Seed of the pseudo random generators
    :param device: Device (cpu, cuda, auto)
    :param _init_setup_model: Whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": GoalPolicy}
    policy: HierarchicalPolicy  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[GoalPolicy],
        env: GymEnv | str | None,
        n_levels: int = 2,
        subgoal_horizon: int | None = None,
        subgoal_space: SubgoalSpace | str | dict[str, Any] = "auto",
        goal_threshold: float | str | None = "auto",
        hold_goal: bool = False,
        subgoal_test_prob: float = 0.3,
        subgoal_penalty: float | None = None,
        level_learners: str | Sequence[str] = "ddpg",
        level_kwargs: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.05,
        gamma: float | None = None,
        train_freq: int | tuple[int, str] = (2, "episode"),
        gradient_steps: int = 40,
        random_action_prob: float = 0.3,
        action_noise_std: float = 0.2,
        random_subgoal_prob: float = 0.2,
        subgoal_noise_std: float = 0.1,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        critic_saturation_patience: int = 50,
        non_finite: str = "raise",
        record_decisions: bool = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        register_env_id(env)
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=0.99 if gamma is None else gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
        )
        if not isinstance(n_levels, int | np.integer) or n_levels < 1:
            raise ValueError(f"n_levels must be an integer >= 1, got {n_levels!r}")
        if subgoal_horizon is not None and (not isinstance(subgoal_horizon, int | np.integer) or subgoal_horizon < 1):
            raise ValueError(f"subgoal_horizon (H) must be an integer >= 1 or None, got {subgoal_horizon!r}")
        for name, probability in (
            ("subgoal_test_prob", subgoal_test_prob),
            ("random_action_prob", random_action_prob),
            ("random_subgoal_prob", random_subgoal_prob),
        ):
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{name} is a probability, got {probability}")
        if action_noise_std < 0 or subgoal_noise_std < 0:
            raise ValueError(f"Noise std must be >= 0, got {action_noise_std} and {subgoal_noise_std}")
        if subgoal_penalty is not None and subgoal_penalty >= 0:
            raise ValueError(f"subgoal_penalty must be negative (HAC: -H), got {subgoal_penalty}")
        if gamma is not None and not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1) or None, got {gamma}")
        self.n_levels = int(n_levels)
        self.gamma = gamma  # type: ignore[assignment]  # None: resolved per level
        self.subgoal_horizon = subgoal_horizon
        _check_subgoal_space_argument(subgoal_space)
        self.subgoal_space = subgoal_space
        _check_goal_threshold_argument(goal_threshold)
        # SB3's load builds the model with _init_setup_model=False, then sets the saved attributes: a model saved before
        # goal_threshold existed keeps None, the behaviour it was trained with.
        self.goal_threshold = goal_threshold if _init_setup_model else None
        self.hold_goal = bool(hold_goal)
        self.subgoal_test_prob = float(subgoal_test_prob)
        self.subgoal_penalty = subgoal_penalty
        self.level_learners = [name.lower() for name in _per_level(level_learners, self.n_levels, "level_learners")]
        for name in self.level_learners:
            if name not in LEARNERS:
                raise ValueError(f"Unknown level learner {name!r}, choose one of {sorted(LEARNERS)}")
        self.level_kwargs = [dict(kwargs or {}) for kwargs in _per_level(level_kwargs, self.n_levels, "level_kwargs")]
        if self.n_levels > 1:
            for level, kwargs in enumerate(self.level_kwargs):
                reserved = sorted(set(kwargs) & set(RESERVED_LEVEL_KWARGS))
                if reserved:
                    raise ValueError(f"level_kwargs[{level}] sets {reserved}, which HHER sets for every level of a hierarchy")
        self.random_action_prob = float(random_action_prob)
        self.action_noise_std = float(action_noise_std)
        self.random_subgoal_prob = float(random_subgoal_prob)
        self.subgoal_noise_std = float(subgoal_noise_std)
        self.n_sampled_goal = int(n_sampled_goal)
        self.goal_selection_strategy = goal_selection_strategy
        self.critic_saturation_patience = int(critic_saturation_patience)
        if non_finite not in ("raise", "skip"):
            raise ValueError(f"non_finite must be 'raise' or 'skip', got {non_finite!r}")
        self.non_finite = non_finite
        self.record_decisions = bool(record_decisions)
        # Complete log of the decisions that filled the current buffers (None when not recorded or incomplete).
        self._decision_log: DecisionLog | None = None
        # While rebuilding the buffers from a log: the log replayed and its current step.
        self._replay: DecisionLog | None = None
        self._replay_step = 0
        # Envs whose current episode hit a non-finite value (non_finite="skip"): not learned from until it ends.
        self._discarded_envs: set[int] = set()
        self.level_gammas: list[float] | None = None
        self.level_n_updates: list[int] | None = None
        self.goal_env_spec: GoalEnvSpec | None = None
        self.levels: list[LevelLearner] = []
        self._rollout: _RolloutState | None = None
        self._saturated_phases: list[int] = [0] * self.n_levels
        self._saturation_warned: list[bool] = [False] * self.n_levels
        self._diagnostics: dict[str, deque] = {}
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self._convert_train_freq()
        if self.env is not None:
            self.goal_env_spec = check_goal_env(self.env)
            if getattr(self, "_vec_normalize_env", None) is not None:
                warnings.warn("HHER normalises observations and goals inside its level policies: remove VecNormalize.")
        self._resolve_hierarchy()
        if self.n_levels == 1:
            self.levels = [self._make_flat_learner()]
        else:
            self.levels = [self._make_level_learner(level) for level in range(self.n_levels)]
        self.level_gammas = [float(learner.gamma) for learner in self.levels]
        if self.level_n_updates is not None and len(self.level_n_updates) == self.n_levels:
            for learner, n_updates in zip(self.levels, self.level_n_updates, strict=True):
                learner._n_updates = int(n_updates)
        self.policy = HierarchicalPolicy(
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,  # type: ignore[arg-type]
            [learner.policy for learner in self.levels],
            self.subgoal_space if isinstance(self.subgoal_space, SubgoalSpace) else None,
            self.subgoal_horizon or 1,
            goal_threshold=self.goal_threshold if isinstance(self.goal_threshold, float) else None,
            hold_goal=self.hold_goal,
        )
        self._diagnostics = {}
        self._rollout = None

    def _resolve_hierarchy(self) -> None:
        """Resolve the subgoal space, H, the penalty and the discounts from the env (kept for save/load)."""
        max_steps = self.goal_env_spec.max_episode_steps if self.goal_env_spec is not None else None
        if self.hold_goal and self.n_levels == 1:
            raise ValueError("hold_goal needs a hierarchy (n_levels >= 2): it replaces the top level's subgoals")
        if self.n_levels == 1:
            if self.subgoal_horizon is None:
                self.subgoal_horizon = max_steps or 1
            return
        if isinstance(self.subgoal_space, str | dict):
            if self.env is None:
                raise ValueError("HHER needs an env to choose a subgoal space preset (or a SubgoalSpace)")
            given = self.subgoal_space
            kwargs: dict[str, Any] = {"preset": given} if isinstance(given, str) else dict(given)
            self.subgoal_space = subgoal_space_for_env(self.env, **kwargs)
        elif self.env is not None:
            self.subgoal_space.check_observation_space(self.env.observation_space)
        if self.subgoal_horizon is None:
            if max_steps is None:
                raise ValueError(
                    "subgoal_horizon=None means H = round(T ** (1 / n_levels)) with T the env's time limit, but the env "
                    "has no max_episode_steps: pass subgoal_horizon"
                )
            self.subgoal_horizon = max(2, round(max_steps ** (1.0 / self.n_levels)))
        if self.subgoal_penalty is None:
            self.subgoal_penalty = -float(self.subgoal_horizon)
        self._resolve_goal_threshold()
        if self.hold_goal and self.goal_threshold is None:
            raise ValueError(
                "hold_goal needs a goal_threshold to tell when the env's goal is achieved: pass goal_threshold (a "
                "distance the env's compute_reward agrees with) or hold_goal=False"
            )

    def _resolve_goal_threshold(self) -> None:
        """Resolve ``goal_threshold="auto"`` from the env; check a distance against the env's ``compute_reward``."""
        given = self.goal_threshold
        if given is None or self.env is None:
            return  # without an env (a model loaded to predict), the saved distance stands
        threshold = env_goal_threshold(self.env) if given == AUTO else float(given)
        if threshold is not None and not self._env_agrees_with_goal_threshold(threshold):
            message = (
                f"The env's compute_reward does not count goals within a Euclidean distance of {threshold} as achieved "
                "(and farther ones as missed)"
            )
            if given != AUTO:
                raise ValueError(f"{message}: goal_threshold={given} cannot tell when its goal is reached (pass None)")
            warnings.warn(f"{message}: lower levels will not return control at the env's goal (goal_threshold=None)")
            threshold = None
        self.goal_threshold = threshold

    def _env_agrees_with_goal_threshold(self, threshold: float) -> bool:
        """Whether the env's reward calls goals just inside ``threshold`` achieved and goals just outside missed."""
        assert self.env is not None and self.goal_env_spec is not None
        goal_dim = self.goal_env_spec.goal_dim
        offsets = np.zeros((2, goal_dim))
        offsets[:, 0] = (0.9 * threshold, 1.1 * threshold)
        achieved = np.zeros((2, goal_dim), dtype=np.float32)
        rewards = call_compute_reward(self.env, achieved, offsets.astype(np.float32), [{}, {}])
        return bool(np.array_equal(self._success_from_env_reward(rewards), [True, False]))

    def _level_spaces(self, level: int) -> tuple[spaces.Dict, spaces.Box]:
        assert isinstance(self.observation_space, spaces.Dict) and isinstance(self.action_space, spaces.Box)
        assert isinstance(self.subgoal_space, SubgoalSpace)
        action_space = self.action_space if level == 0 else self.subgoal_space.box
        if level == self.n_levels - 1:
            return spaces.Dict({key: self.observation_space[key] for key in GOAL_KEYS}), action_space
        goals = spaces.Box(-np.inf, np.inf, shape=(self.subgoal_space.dim,), dtype=np.float32)
        observation_space = spaces.Dict(
            {"observation": self.observation_space["observation"], "achieved_goal": goals, "desired_goal": goals}
        )
        return observation_space, action_space

    def _shared_level_kwargs(self, level: int) -> dict[str, Any]:
        first = level == 0
        return {
            "learning_rate": self.learning_rate,
            "buffer_size": self.buffer_size,
            "batch_size": self.batch_size,
            "tau": self.tau,
            "gradient_steps": self.gradient_steps,
            "random_eps": self.random_action_prob if first else self.random_subgoal_prob,
            "noise_eps": self.action_noise_std if first else self.subgoal_noise_std,
            "n_sampled_goal": self.n_sampled_goal,
            "goal_selection_strategy": self.goal_selection_strategy,
            "policy_kwargs": dict(self.policy_kwargs),
            # Baselines' action L2 penalty regularises motor commands; on subgoals it would pull every proposal
            # toward the centre of the bounds, so the levels above go without it (HAC has none).
            "action_l2": 1.0 if first or self.n_levels == 1 else 0.0,
        }

    def _make_flat_learner(self) -> LevelLearner:
        """``n_levels=1``: the flat learner itself, built exactly as ``HerDDPG(...)``/``HerTD3(...)`` would be."""
        learner_class = LEARNERS[self.level_learners[0]]
        kwargs = self._shared_level_kwargs(0)
        kwargs.update(
            learning_starts=self.learning_starts,
            train_freq=self.train_freq,
            gamma=self.gamma if self.level_gammas is None else self.level_gammas[0],
            tensorboard_log=self.tensorboard_log,
            verbose=self.verbose,
            seed=self.seed,
            device=self.device,
        )
        if "stats_window_size" in inspect.signature(learner_class.__init__).parameters:
            kwargs["stats_window_size"] = self._stats_window_size
        kwargs.update(self.level_kwargs[0])
        if self.env is not None:
            return learner_class(self.policy_class, self.env, **kwargs)  # type: ignore[arg-type]
        # Loaded without an env: build the networks from the saved spaces (rewards need an env: set_env before learn).
        learner = LEARNERS[self.level_learners[0]](self.policy_class, None, _init_setup_model=False, **kwargs)  # type: ignore[arg-type]
        self._attach_spaces(learner, self.observation_space, self.action_space, self.n_envs)  # type: ignore[arg-type]
        learner.replay_buffer = LevelReplayBuffer(
            learner.buffer_size,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            env=None,
            device=self.device,
            n_envs=self.n_envs,
            n_sampled_goal=learner.n_sampled_goal,
            goal_selection_strategy=learner.goal_selection_strategy,
            compute_reward=self._env_reward,
            # As the learner's own _setup_model would resolve them (replay_buffer_kwargs win).
            n_steps=int(learner.replay_buffer_kwargs.get("n_steps", learner.n_steps)),
            gamma=0.99 if learner.gamma is None else learner.gamma,
        )
        learner._setup_model()
        return learner

    @staticmethod
    def _attach_spaces(learner: LevelLearner, observation_space: spaces.Dict, action_space: spaces.Box, n_envs: int) -> None:
        learner.observation_space = observation_space
        learner.action_space = action_space
        learner.n_envs = n_envs

    def _make_level_learner(self, level: int) -> LevelLearner:
        """A flat learner used as one level: its policy, its buffer and its ``train``; HHER collects its experience."""
        learner_class = LEARNERS[self.level_learners[level]]
        kwargs = self._shared_level_kwargs(level)
        default_gamma = self.gamma if self.gamma is not None else 1.0 - 1.0 / float(self.subgoal_horizon or 1)
        kwargs["gamma"] = self.level_gammas[level] if self.level_gammas is not None else default_gamma
        kwargs.update(self.level_kwargs[level])
        replay_buffer_kwargs = dict(kwargs.pop("replay_buffer_kwargs", None) or {})
        if kwargs.get("n_steps", 1) != 1 or replay_buffer_kwargs.get("n_steps", 1) != 1:
            raise ValueError(
                f"n_steps > 1 (level {level}) is supported by flat agents (n_levels=1) only: HAC's levels learn from "
                "one-step hindsight-action and subgoal-testing transitions"
            )
        learner = learner_class(self.policy_class, None, device=self.device, _init_setup_model=False, **kwargs)  # type: ignore[arg-type]
        observation_space, action_space = self._level_spaces(level)
        self._attach_spaces(learner, observation_space, action_space, 1)
        # Whole attempts are stored at once, so one stream of episodes serves any number of envs.
        learner.replay_buffer = LevelReplayBuffer(
            learner.buffer_size,
            observation_space,
            action_space,
            env=None,
            device=self.device,
            n_envs=1,
            n_sampled_goal=learner.n_sampled_goal,
            goal_selection_strategy=learner.goal_selection_strategy,
            compute_reward=self._top_level_reward if level == self.n_levels - 1 else self._subgoal_reward,
            **replay_buffer_kwargs,
        )
        learner._setup_model()
        learner.return_bounds = self._level_return_bounds(learner)
        return learner

    def _level_return_bounds(self, learner: LevelLearner) -> tuple[float, float] | None:
        """HAC bounds every level's Q to ``[-H, 0]`` (``[subgoal_penalty, 0]``); ``clip_return`` in level_kwargs overrides."""
        if learner.clip_return is None:
            return None
        if learner.clip_return == AUTO:
            assert self.subgoal_penalty is not None
            return float(self.subgoal_penalty), 0.0
        return -float(learner.clip_return), 0.0

    # ----------------------------------------------------------------- rewards

    def _subgoal_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, infos: Any = None) -> np.ndarray:
        assert isinstance(self.subgoal_space, SubgoalSpace)
        return self.subgoal_space.compute_reward(achieved_goal, desired_goal, infos)

    def _env_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, infos: Any) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("Relabelled rewards need the env's compute_reward: call set_env first")
        return call_compute_reward(self.env, achieved_goal, desired_goal, infos)

    def _success_from_env_reward(self, rewards: np.ndarray) -> np.ndarray:
        assert self.goal_env_spec is not None, "HHER needs an env to read its reward at the goal"
        return np.isclose(np.asarray(rewards, dtype=np.float64), self.goal_env_spec.success_reward)

    def _top_level_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, infos: Any = None) -> np.ndarray:
        """The env's goal reward mapped to HAC's ``{-1, 0}`` (Fetch's ``{-1, 0}`` and PointMaze's ``{0, 1}`` alike)."""
        rewards = self._env_reward(achieved_goal, desired_goal, infos if infos is not None else [{}] * len(achieved_goal))
        return self._success_from_env_reward(rewards).astype(np.float32) - 1.0

    # ---------------------------------------------------------------- learning

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        previous_obs = self._last_obs
        total_timesteps, callback = super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        env_was_reset = self._last_obs is not previous_obs
        other_envs = self._rollout is not None and self._rollout.n_envs != self.n_envs
        if env_was_reset or other_envs:
            # Fresh env episodes: nothing is being skipped. (A model loaded to continue its env episodes keeps the
            # envs whose episode is being skipped.)
            self._discarded_envs.clear()
        if self._rollout is None or env_was_reset or other_envs:
            # Partial attempts of an earlier learn() call are dropped (a loaded model starts at episode boundaries).
            self._rollout = self._new_rollout_state()
        self._setup_decision_log(env_was_reset)
        if reset_num_timesteps or not self._diagnostics:
            self._diagnostics = {}
        for level, learner in enumerate(self.levels):
            learner._logger = _LevelLogger(self.logger, level)  # type: ignore[assignment]
        return total_timesteps, callback

    def _setup_decision_log(self, env_was_reset: bool) -> None:
        """Start the decision log on empty buffers; drop it where it could no longer reproduce them."""
        if not self.record_decisions or self.n_levels == 1:
            self._decision_log = None
            return
        log = self._decision_log
        if log is not None and (log.n_envs != self.n_envs or (env_was_reset and log.steps > 0)):
            # A replay resets the env once, at its first step: an env reset in the middle cannot be replayed.
            log = None
        if log is None and self._buffers_empty():
            log = DecisionLog(self._level_action_dims(), self.n_envs)
        self._decision_log = log

    def _level_action_dims(self) -> list[int]:
        return [int(np.prod(self._level_spaces(level)[1].shape)) for level in range(self.n_levels)]

    def _buffers_empty(self) -> bool:
        for learner in self.levels:
            buffer = learner.replay_buffer
            if buffer is not None and (buffer.size() > 0 or getattr(buffer, "n_penalty", 0) > 0):
                return False
        return True

    def _new_rollout_state(self) -> _RolloutState:
        rollout = _RolloutState(
            n_envs=self.n_envs,
            n_levels=self.n_levels,
            state=self.policy.initial_state(self.n_envs),
            greedy=np.zeros((self.n_levels, self.n_envs), dtype=bool),
        )
        for level in range(self.n_levels):
            observation_space, action_space = self._level_spaces(level)
            rollout.pending_observation.append(
                {
                    key: np.zeros((self.n_envs, *(space.shape or ())), dtype=space.dtype)
                    for key, space in observation_space.spaces.items()
                }
            )
            rollout.pending_action.append(np.zeros((self.n_envs, int(np.prod(action_space.shape))), dtype=np.float32))
            rollout.pending_test.append(np.zeros(self.n_envs, dtype=bool))
            rollout.episodes.append([[] for _ in range(self.n_envs)])
        return rollout

    def learn(
        self: SelfHHER,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "HHER",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfHHER:
        if self.n_levels == 1:
            return self._learn_flat(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)
        if self.env is None:
            raise ValueError("HHER.learn needs an env: pass one to the constructor, load(path, env=...) or set_env")
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _learn_flat(
        self: SelfHHER,
        total_timesteps: int,
        callback: MaybeCallback,
        log_interval: int,
        tb_log_name: str,
        reset_num_timesteps: bool,
        progress_bar: bool,
    ) -> SelfHHER:
        learner = self.levels[0]
        learner.num_timesteps = self.num_timesteps
        learner._episode_num = self._episode_num
        if self._custom_logger:
            learner.set_logger(self.logger)
        learner.learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
        self.num_timesteps = learner.num_timesteps
        self._episode_num = learner._episode_num
        self._total_timesteps = learner._total_timesteps
        self.ep_info_buffer = learner.ep_info_buffer
        self.ep_success_buffer = learner.ep_success_buffer
        self._logger = learner.logger
        self._last_obs = learner._last_obs
        self.level_n_updates = [learner._n_updates]
        return self

    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer | None = None,
        action_noise: ActionNoise | None = None,
        learning_starts: int = 0,
        log_interval: int | None = None,
    ) -> RolloutReturn:
        """
        Run the hierarchy in the env and store every level's transitions when its attempts end.

        :param env: The training env
        :param callback: Called at every env step
        :param train_freq: How much experience to collect (steps or episodes, counted over all envs)
        :param replay_buffer: Unused (every level has its own buffer)
        :param action_noise: Unused (exploration is set per level)
        :param learning_starts: Env steps of uniformly random actions and subgoals
        :param log_interval: Dump logs every ``log_interval`` episodes
        :return: What was collected
        """
        self.policy.set_training_mode(False)
        assert self._rollout is not None and self._last_obs is not None
        num_collected_steps, num_collected_episodes = 0, 0
        callback.on_rollout_start()
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions = self._hierarchy_actions(learning_starts)
            new_obs, rewards, dones, infos = env.step(actions)
            self.num_timesteps += env.num_envs
            num_collected_steps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                # As SB3, the transitions of this step are not stored: the decision log, which holds the step, no
                # longer matches the buffers.
                self._decision_log = None
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=False)
            self._update_info_buffer(infos, dones)
            self._store_hierarchy_transitions(new_obs, rewards, dones, infos)  # type: ignore[arg-type]
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for done in dones:
                if done:
                    num_collected_episodes += 1
                    self._episode_num += 1
                    if log_interval is not None and self._episode_num % log_interval == 0:
                        self.dump_logs()
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=True)

    def _explore(self, level: int, level_observation: dict[str, np.ndarray], envs: np.ndarray, warmup: bool) -> np.ndarray:
        """Scaled actions of a level with its exploration: Gaussian noise, then uniformly random with some probability."""
        assert self._rollout is not None
        learner = self.levels[level]
        n_envs, dim = len(envs), int(np.prod(learner.action_space.shape))
        if warmup:
            return np.random.uniform(-1.0, 1.0, size=(n_envs, dim)).astype(np.float32)
        greedy_actions = self.policy.level_actions(level, level_observation)
        noisy = np.clip(greedy_actions + learner.noise_eps * np.random.randn(n_envs, dim), -1.0, 1.0)
        random_rows = np.random.rand(n_envs) < learner.random_eps_at(self._current_progress_remaining)
        noisy[random_rows] = np.random.uniform(-1.0, 1.0, size=(int(random_rows.sum()), dim))
        # A level whose goal is being tested acts greedily (HAC: no noise below a test subgoal).
        greedy = self._rollout.greedy[level, envs]
        return np.where(greedy[:, None], greedy_actions, noisy).astype(np.float32)

    def _hierarchy_actions(self, learning_starts: int) -> np.ndarray:
        """Decisions of every level for the current step; returns the env actions."""
        rollout = self._rollout
        assert rollout is not None and isinstance(self._last_obs, dict)
        warmup = self.num_timesteps < learning_starts
        replay, step = self._replay, self._replay_step
        log = self._decision_log if replay is None else None
        if log is not None:
            log.begin_step()

        def select(level: int, level_observation: dict[str, np.ndarray], envs: np.ndarray) -> np.ndarray:
            if replay is not None:
                # Rebuilding the buffers: the logged decision instead of the policy's.
                scaled, logged_test = replay.decisions(step, level, envs)
            else:
                scaled = self._explore(level, level_observation, envs, warmup)
                if self.hold_goal and level == self.n_levels - 1:
                    # Share of the top level's decisions taken on the env's goal, where it holds the current state.
                    self._record("rollout/goal_hold_fraction", self.policy.goal_reached(level_observation))
                    scaled = self.policy.hold_subgoals(level, level_observation, scaled)
            if level == 0:
                rollout.level0_observation = {key: np.array(value) for key, value in level_observation.items()}
                rollout.level0_action = scaled
                if log is not None:
                    log.record(0, envs, scaled)
                return scaled
            # Subgoal testing (HAC 4.3): a tested subgoal makes every level below greedy until its attempt ends.
            tested = np.zeros(len(envs), dtype=bool)
            if replay is not None:
                tested = logged_test
            elif not warmup:
                tested = rollout.greedy[level, envs] | (np.random.rand(len(envs)) < self.subgoal_test_prob)
            if log is not None:
                log.record(level, envs, scaled, tested)
            rollout.greedy[level - 1, envs] = tested
            for key, value in level_observation.items():
                rollout.pending_observation[level][key][envs] = value
            rollout.pending_action[level][envs] = scaled
            rollout.pending_test[level][envs] = tested
            self._record(f"rollout/level_{level}/subgoal_at_bounds_fraction", np.any(np.abs(scaled) >= 1.0 - 1e-6, axis=1))
            return scaled

        scaled_actions = self.policy.act(self._last_obs, rollout.state, select)
        return self.policy.unscale_level_action(0, scaled_actions)

    def _handle_non_finite(
        self, new_obs: dict[str, np.ndarray], rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
        """
        Raise on NaN/inf (``non_finite="raise"``), or store each faulty env's attempts so far, mark its episode as
        skipped and zero the values (``"skip"``).

        :return: The observations and rewards to go on with, and the envs whose next episode starts non-finite
        """
        problems, next_episode_problems = find_non_finite(new_obs, rewards, dones, infos, self.num_timesteps)
        if problems or next_episode_problems:
            if self.non_finite == "raise":
                raise NonFiniteObservationError(next(iter({**problems, **next_episode_problems}.values())))
            for env_idx in problems:
                if env_idx not in self._discarded_envs:
                    warnings.warn(f"{problems[env_idx]}: the rest of this episode of env {env_idx} is not learned from")
                    # Every level's attempt so far holds finite transitions only: stored as truncated attempts.
                    for level in range(self.n_levels):
                        self._store_attempt(level, env_idx, terminal=False)
                    self._discarded_envs.add(env_idx)
            new_obs, rewards = zero_non_finite(new_obs, rewards, infos, {**problems, **next_episode_problems})
        return new_obs, rewards, next_episode_problems

    def _store_hierarchy_transitions(
        self, new_obs: dict[str, np.ndarray], rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]
    ) -> None:
        rollout = self._rollout
        assert rollout is not None and rollout.level0_action is not None
        assert isinstance(self.subgoal_space, SubgoalSpace) and self.subgoal_penalty is not None
        new_obs, rewards, next_episode_problems = self._handle_non_finite(new_obs, rewards, dones, infos)
        next_obs = {key: np.array(new_obs[key]) for key in GOAL_KEYS}
        for env_idx in np.flatnonzero(dones):
            terminal = infos[env_idx].get("terminal_observation")
            if terminal is not None:
                for key in GOAL_KEYS:
                    next_obs[key][env_idx] = terminal[key]
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos])
        terminated = dones & ~truncated
        state = rollout.state
        outcome = self.policy.end_attempts(next_obs, state)
        ended = outcome.ended | dones[None, :]
        achieved = self.subgoal_space.project(next_obs)

        # Level 0: one transition per env step, toward its subgoal.
        next_level0 = self.policy.level_observation(0, next_obs, state.subgoals)
        level0_rewards = self.subgoal_space.compute_reward(achieved, state.subgoals[0])
        for env_index in range(rollout.n_envs):
            rollout.episodes[0][env_index].append(
                _Transition(
                    _row(rollout.level0_observation, env_index),
                    rollout.level0_action[env_index].copy(),
                    float(level0_rewards[env_index]),
                    _row(next_level0, env_index),
                )
            )

        # Levels above: one transition each time the attempt of the level below ends.
        for level in range(1, self.n_levels):
            envs = np.flatnonzero(ended[level - 1])
            if envs.size:
                self._store_subgoal_transitions(level, envs, next_obs, achieved, rewards, outcome.reached, outcome.exhausted)

        for level in range(self.n_levels):
            finished = dones if level == self.n_levels - 1 else ended[level]
            for env_idx in np.flatnonzero(finished):
                self._store_attempt(level, int(env_idx), terminal=bool(terminated[env_idx]))
        state.steps_left[:, dones] = 0
        rollout.greedy[:, dones] = False
        for env_idx in np.flatnonzero(dones):
            self._discarded_envs.discard(int(env_idx))
        for problem_env, message in next_episode_problems.items():
            # The episode that just ended was finite; the one starting from a non-finite observation is skipped.
            warnings.warn(f"{message}: the episode of env {problem_env} starting there is not learned from")
            self._discarded_envs.add(int(problem_env))
        self._last_obs = new_obs

    def _store_subgoal_transitions(
        self,
        level: int,
        envs: np.ndarray,
        next_obs: dict[str, np.ndarray],
        achieved: np.ndarray,
        env_rewards: np.ndarray,
        reached: np.ndarray,
        exhausted: np.ndarray,
    ) -> None:
        """Hindsight-action and subgoal-test transitions of ``level`` for the envs where the level below finished."""
        rollout = self._rollout
        assert rollout is not None and isinstance(self.subgoal_space, SubgoalSpace) and self.subgoal_penalty is not None
        learner = self.levels[level]
        buffer = learner.replay_buffer
        assert isinstance(buffer, LevelReplayBuffer)
        next_level_obs = self.policy.level_observation(level, next_obs, rollout.state.subgoals, envs)
        proposed = rollout.pending_action[level][envs]
        hit = reached[level - 1, envs]
        # Hindsight action (HAC 4.2): the subgoal actually reached, clipped to the bounds the level acts in.
        reached_subgoal = achieved[envs]
        hindsight = learner.policy.scale_action(self.subgoal_space.clip(reached_subgoal)).astype(np.float32)
        actions = np.where(hit[:, None], proposed, hindsight)
        if level == self.n_levels - 1:
            level_rewards = self._success_from_env_reward(env_rewards[envs]).astype(np.float32) - 1.0
        else:
            level_rewards = self.subgoal_space.compute_reward(reached_subgoal, rollout.state.subgoals[level, envs])
        tested = rollout.pending_test[level][envs]
        penalized = tested & exhausted[level - 1, envs]
        for row, env_idx in enumerate(envs):
            observation = _row(rollout.pending_observation[level], int(env_idx))
            next_observation = _row(next_level_obs, row)
            rollout.episodes[level][env_idx].append(
                _Transition(observation, actions[row].copy(), float(level_rewards[row]), next_observation)
            )
            if penalized[row] and int(env_idx) not in self._discarded_envs:
                # Subgoal test (HAC 4.3): the original subgoal, the penalty, discount 0; never relabelled.
                buffer.add_penalty(observation, next_observation, proposed[row], float(self.subgoal_penalty))
        self._record(f"rollout/level_{level - 1}/subgoal_success_rate", hit)
        self._record(f"rollout/level_{level}/hindsight_action_clipped_fraction", ~self.subgoal_space.contains(reached_subgoal))
        if tested.any():
            self._record(f"rollout/level_{level}/subgoal_test_penalty_rate", penalized[tested])

    def _store_attempt(self, level: int, env_idx: int, terminal: bool) -> None:
        """Store a finished attempt of a level as one episode of its buffer, then update its normaliser."""
        assert self._rollout is not None
        episode = self._rollout.episodes[level][env_idx]
        self._rollout.episodes[level][env_idx] = []
        if not episode or env_idx in self._discarded_envs:
            return
        learner = self.levels[level]
        buffer = learner.replay_buffer
        assert isinstance(buffer, LevelReplayBuffer)
        last = len(episode) - 1
        for step, transition in enumerate(episode):
            done = step == last
            buffer.add(
                {key: value[None] for key, value in transition.observation.items()},
                {key: value[None] for key, value in transition.next_observation.items()},
                transition.action[None],
                np.array([transition.reward], dtype=np.float32),
                np.array([done]),
                # The end of an attempt is a truncation (bootstrapped) unless the env episode itself terminated.
                [{"TimeLimit.truncated": done and not terminal}],
            )
        if self._replay is not None:
            return  # rebuilding the buffers: the loaded normaliser statistics already hold these attempts
        observations, goals = buffer.episode_for_normalizer(0)
        learner.policy.normalizer.update(observations, goals)

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """
        One training phase: every level whose buffer holds a finished attempt runs its learner's update
        (``BaselinesHerMixin.train``: clipped targets, action L2, policy delay for TD3) on its own batches.

        :param gradient_steps: Gradient steps of levels whose ``gradient_steps`` is negative
        :param batch_size: Unused (every level uses its learner's ``batch_size``)
        """
        for level, learner in enumerate(self.levels):
            buffer = learner.replay_buffer
            assert isinstance(buffer, LevelReplayBuffer)
            if buffer.n_episode_transitions == 0:
                continue
            learner._current_progress_remaining = self._current_progress_remaining
            steps = learner.gradient_steps if learner.gradient_steps >= 0 else gradient_steps
            if steps > 0:
                learner.train(gradient_steps=steps, batch_size=learner.batch_size)
                self._check_critic_saturation(level)
            self.logger.record(f"train/level_{level}/penalty_fraction", buffer.penalty_fraction())
        self.level_n_updates = [learner._n_updates for learner in self.levels]
        self.logger.record("train/n_updates", sum(self.level_n_updates), exclude="tensorboard")

    def _check_critic_saturation(self, level: int) -> None:
        """Warn when a level's mean Q stays at the bottom of its range (the failure mode of the seed attempt)."""
        learner = self.levels[level]
        logger = learner._logger
        if learner.return_bounds is None or not isinstance(logger, _LevelLogger):
            return
        q_mean = logger.last.get(f"train/level_{level}/q_mean")
        if q_mean is None:
            return
        low = learner.return_bounds[0]
        if q_mean <= 0.9 * low:
            self._saturated_phases[level] += 1
        else:
            self._saturated_phases[level] = 0
        if self._saturated_phases[level] >= self.critic_saturation_patience and not self._saturation_warned[level]:
            self._saturation_warned[level] = True
            warnings.warn(
                f"HHER level {level}: mean Q has stayed at {q_mean:.2f}, near its lowest value {low:.2f}, for "
                f"{self._saturated_phases[level]} training phases: its critic is saturated (every action looks like a "
                "missed subgoal). Check that the subgoal bounds are reachable (rollout/level_*/subgoal_at_bounds_fraction), "
                "or lower subgoal_test_prob / raise subgoal_horizon."
            )

    # --------------------------------------------------------------- logging

    def _record(self, key: str, values: np.ndarray) -> None:
        if key not in self._diagnostics:
            self._diagnostics[key] = deque(maxlen=self._stats_window_size * 10)
        self._diagnostics[key].extend(np.asarray(values, dtype=np.float64).reshape(-1).tolist())

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        assert self.ep_success_buffer is not None
        if dones is None:
            return
        for info, done in zip(infos, dones, strict=True):
            # SB3 reads only "is_success"; PointMaze/AntMaze report "success".
            if done and "is_success" not in info:
                success = get_success(info)
                if success is not None:
                    self.ep_success_buffer.append(success)

    def dump_logs(self) -> None:
        for key, values in self._diagnostics.items():
            if values:
                self.logger.record(key, safe_mean(list(values)))
        super().dump_logs()

    def set_logger(self, logger: Logger) -> None:
        super().set_logger(logger)
        if self.n_levels == 1 and self.levels:
            self.levels[0].set_logger(logger)

    # ----------------------------------------------------------- save / load

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset=force_reset)
        assert self.env is not None
        self.goal_env_spec = check_goal_env(self.env)
        if isinstance(self.subgoal_space, SubgoalSpace):
            self.subgoal_space.check_observation_space(self.env.observation_space)
        if self.n_levels == 1 and self.levels:
            self.levels[0].set_env(self.env, force_reset=force_reset)
        self._rollout = None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "levels", "_rollout", "_diagnostics", "_decision_log", "_replay"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # Every level's weights and normaliser statistics are in the policy; its optimisers in the level policies.
        state_dicts = ["policy"]
        for level in range(len(self.levels)):
            state_dicts += [f"policy.levels.{level}.actor.optimizer", f"policy.levels.{level}.critic.optimizer"]
        return state_dicts, []

    @property
    def replay_buffers(self) -> list[LevelReplayBuffer]:
        """Every level's replay buffer (level 0 first)."""
        buffers = [learner.replay_buffer for learner in self.levels]
        assert all(isinstance(buffer, LevelReplayBuffer) for buffer in buffers) or self.n_levels == 1
        return buffers  # type: ignore[return-value]

    def decision_arrays(self) -> dict[str, np.ndarray]:
        """
        The logged decisions that filled the replay buffers (``record_decisions=True``), as arrays for ``np.savez``;
        ``rebuild_replay_buffers`` turns them back into the buffers.

        :return: ``level_<i>`` (scaled actions of level i at every env step, NaN where it did not decide) and
            ``tested_<i>`` (subgoal-test flags) for every level
        :raises ValueError: When the log is not kept (``record_decisions=False``, one level) or does not cover the
            buffers (a model loaded without its log, an env reset between two ``learn`` calls)
        """
        if self.n_levels == 1:
            raise ValueError("HHER with n_levels=1 is the flat learner: its buffer is saved as the flat learner's")
        if not self.record_decisions:
            raise ValueError("No decision log: build the model with record_decisions=True")
        log = self._decision_log
        if log is None or log.steps * log.n_envs != self.num_timesteps:
            steps = "no" if log is None else f"{log.steps * log.n_envs}"
            raise ValueError(
                f"The decision log ({steps} env steps) does not cover the {self.num_timesteps} steps in the replay "
                "buffers (a model loaded without its log, an env reset between two learn() calls, or a callback that "
                "stopped training)"
            )
        return log.to_arrays()

    def load_decision_log(self, arrays: dict[str, np.ndarray] | Any) -> None:
        """
        Attach the decision log of the current buffers (loaded from a pickle, say), so that later checkpoints can
        write it again.

        :param arrays: What ``decision_arrays`` returned, or an opened ``.npz`` of it
        """
        log = DecisionLog.from_arrays(arrays)
        self._check_decision_log(log)
        self._decision_log = log if self.record_decisions else None

    def _check_decision_log(self, log: DecisionLog) -> None:
        if log.action_dims != self._level_action_dims():
            raise ValueError(f"The decision log has action sizes {log.action_dims}, this model {self._level_action_dims()}")
        if log.n_envs != self.n_envs:
            raise ValueError(f"The decision log was recorded with {log.n_envs} envs, this model has {self.n_envs}")

    def rebuild_replay_buffers(self, arrays: dict[str, np.ndarray] | Any, env: VecEnv, progress_bar: bool = False) -> None:
        """
        Refill every level's (empty) replay buffer by stepping ``env`` through the logged decisions: the hierarchy
        stores its transitions as in training (hindsight actions, subgoal tests, attempts), without exploring or
        training. The model's weights, normaliser statistics, counters and random states are left as they were.

        :param arrays: What ``decision_arrays`` returned, or an opened ``.npz`` of it
        :param env: A fresh env built as the training env was (same id, wrappers and number of envs); it is seeded
            with ``seed`` as SB3 seeds the training env, then reset, and left where the last decision took it
        :param progress_bar: Show a tqdm progress bar
        :raises ValueError: When the buffers are not empty, the log does not fit the model, or the env diverges from
            the logged run (a decision is missing where the hierarchy asks for one)
        """
        if self.n_levels == 1:
            raise ValueError("HHER with n_levels=1 is the flat learner: rebuild its buffer as the flat learner's")
        log = DecisionLog.from_arrays(arrays)
        self._check_decision_log(log)
        if env.num_envs != self.n_envs:
            raise ValueError(f"The replay env has {env.num_envs} envs, the model {self.n_envs}")
        if not self._buffers_empty():
            raise ValueError("rebuild_replay_buffers needs empty replay buffers")
        kept = {
            name: getattr(self, name)
            for name in ("num_timesteps", "_last_obs", "_last_original_obs", "_rollout", "_discarded_envs", "_diagnostics")
        }
        steps: Any = range(log.steps)
        if progress_bar:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="rebuilding the level buffers", unit="step")
        if self.seed is not None:
            env.seed(self.seed)
        self._last_obs = env.reset()  # type: ignore[assignment]
        self._rollout, self._discarded_envs, self._diagnostics = self._new_rollout_state(), set(), {}
        self._replay, self.num_timesteps = log, 0
        try:
            for step in steps:
                self._replay_step = step
                actions = self._hierarchy_actions(learning_starts=0)
                new_obs, rewards, dones, infos = env.step(actions)
                self.num_timesteps += env.num_envs
                self._store_hierarchy_transitions(new_obs, rewards, dones, infos)  # type: ignore[arg-type]
        finally:
            self._replay, self._replay_step = None, 0
            for name, value in kept.items():
                setattr(self, name, value)
        self._decision_log = log if self.record_decisions else None

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """
        Save every level's replay buffer (penalty transitions included) as one pickle file.

        :param path: File to write
        """
        save_to_pkl(path, [learner.replay_buffer for learner in self.levels], self.verbose)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """
        Load the replay buffers saved by ``save_replay_buffer``.

        :param path: File to read
        :param truncate_last_traj: Unused (levels store whole attempts only)
        """
        buffers = load_from_pkl(path, self.verbose)
        if not isinstance(buffers, list) or len(buffers) != len(self.levels):
            raise ValueError(f"Expected a list of {len(self.levels)} level buffers in {path}")
        for level, (learner, buffer) in enumerate(zip(self.levels, buffers, strict=True)):
            buffer.device = self.device
            if self.n_levels == 1:
                buffer.compute_reward = self._env_reward
            elif level == self.n_levels - 1:
                buffer.compute_reward = self._top_level_reward
            else:
                buffer.compute_reward = self._subgoal_reward
            learner.replay_buffer = buffer


__all__ = ["HHER"]
