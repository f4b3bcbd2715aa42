"""The relabelling replay buffer (baselines ``replay_buffer.py`` + ``her_sampler.py``) on top of SB3's ``HerReplayBuffer``."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from stable_baselines3.her.goal_selection_strategy import GoalSelectionStrategy
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

from sb3_hher.common.goal_env import call_compute_reward, check_goal_observation_space

# compute_reward(achieved_goal, desired_goal, infos) -> rewards, vectorised over the first axis.
RewardFn = Callable[[np.ndarray, np.ndarray, Any], np.ndarray]


_TRIMMED_KEY = "_pickled_rows"


def _trim_rows(state: dict[str, Any], names: tuple[str, ...], rows: int, capacity: int, tag: str = "") -> None:
    """
    Replace the per-slot arrays ``names`` of a pickled buffer state (arrays, or dicts of arrays, whose first dimension is
    ``capacity``) by their first ``rows`` rows, and note what ``_pad_rows`` needs to restore them.

    :param state: The state being pickled (modified in place; the buffer's own arrays are not touched)
    :param names: Keys of the per-slot arrays in ``state``; arrays of another length are left whole
    :param rows: Number of stored rows
    :param capacity: Number of rows of the allocated arrays
    :param tag: Distinguishes several groups of arrays of one buffer (with their own capacity)
    """
    trimmed = []
    for name in names:
        value = state.get(name)
        if isinstance(value, dict) and all(len(array) == capacity for array in value.values()):
            state[name] = {key: array[:rows].copy() for key, array in value.items()}
        elif isinstance(value, np.ndarray) and len(value) == capacity:
            state[name] = value[:rows].copy()
        else:
            continue
        trimmed.append(name)
    state[_TRIMMED_KEY + tag] = (capacity, trimmed)


def _pad_rows(state: dict[str, Any], tag: str = "") -> None:
    """
    Undo ``_trim_rows`` on an unpickled state: every trimmed array gets its capacity back, the new rows as allocated
    (zeros; empty dicts for info slots). A state pickled without trimming is left as it is.

    :param state: The unpickled state (modified in place)
    :param tag: The group, as given to ``_trim_rows``
    """
    record = state.pop(_TRIMMED_KEY + tag, None)
    if record is None:
        return
    capacity, trimmed = record

    def pad(array: np.ndarray) -> np.ndarray:
        full = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
        if array.dtype == object:
            for index in np.ndindex(full.shape):
                full[index] = {}
        full[: len(array)] = array
        return full

    for name in trimmed:
        value = state[name]
        state[name] = {key: pad(array) for key, array in value.items()} if isinstance(value, dict) else pad(value)


class HindsightReplayBuffer(HerReplayBuffer):
    """
    SB3's ``HerReplayBuffer`` (episode bookkeeping, ``future``/``final``/``episode`` relabelling at sample
    time, rewards recomputed with the env's ``compute_reward``) plus what baselines' learner needs from it:
    the relabelled goals of each finished episode, to feed the goal normaliser
    (baselines ``DDPG.store_episode``).

    Relabelling follows baselines: with ``n_sampled_goal = k`` a fraction ``1 - 1 / (k + 1)`` of every batch
    is relabelled; ``future`` draws the new goal uniformly among the achieved goals of the same episode at or
    after the transition (the transition's own next achieved goal included).

    :param buffer_size: Max number of transitions stored
    :param observation_space: Dict observation space of a goal-conditioned env
    :param action_space: Action space
    :param env: The training env (its ``compute_reward`` recomputes relabelled rewards)
    :param device: PyTorch device of the sampled batches
    :param n_envs: Number of parallel envs
    :param optimize_memory_usage: Not supported with hindsight relabelling (kept for SB3's signature)
    :param handle_timeout_termination: Bootstrap through time-limit truncations (infinite-horizon view, as baselines)
    :param n_sampled_goal: Relabelled transitions per real one (baselines ``replay_k``)
    :param goal_selection_strategy: ``"future"`` (baselines), ``"final"`` or ``"episode"``
    :param copy_info_dict: Store info dicts and pass them to ``compute_reward``
    :param compute_reward: Reward function of relabelled transitions, ``f(achieved_goal, desired_goal, infos)``
        vectorised over the batch; ``None`` (default) calls the env's ``compute_reward``. Hierarchical levels
        use it for rewards in their subgoal space.
    :param n_steps: Length of the returns the batches carry (SB3's ``NStepReplayBuffer``, for goal envs):
        ``sum_i gamma^i r_{t+i}`` over up to ``n_steps`` steps of the same episode, rewards recomputed for the
        batch's (possibly relabelled) goal, bootstrapped from the last of those steps with ``discounts = gamma^k``.
        1 (default) is the one-step return of baselines. Larger values propagate sparse rewards faster at the
        price of an off-policy bias (the stored actions were exploratory), as in multi-step HER (Yang et al. 2021,
        https://arxiv.org/abs/2102.12962).
    :param gamma: Discount of the n-step returns (set by the algorithm; only used when ``n_steps > 1``)
    :param episode_priority: How the episodes of a batch are drawn. ``None`` (default): uniformly over the stored
        transitions, as baselines. ``"energy"``: Energy-Based Prioritization (Zhao & Tresp 2018,
        https://arxiv.org/abs/1810.01363), episodes drawn in proportion to the *trajectory energy* of their achieved
        goal, then a transition uniformly inside the episode. Meant for envs whose achieved goal is the position of
        an object (Fetch Push, Slide, PickAndPlace): episodes in which the object never moves, most of them early in
        training, teach nothing about moving it and are (almost) never replayed: an episode's share of the batches
        is its share of the total energy, so a buffer with a single moving episode replays only that one (while no
        episode has any energy, sampling stays uniform). Not used by the demonstration buffer (uniform) nor by
        HHER's level buffers.
    :param energy_clip: Upper clip of each transition's energy increase (EBP's ``clip_energy``; 0.5 for Fetch)
    :param energy_dt: Time between two env steps, for velocities; ``None`` (default) reads the env's ``dt``
        (0.04 s for Fetch)
    """

    #: Accepted values of ``episode_priority``.
    EPISODE_PRIORITIES = (None, "energy")

    # Class-level defaults: buffers pickled before n-step returns existed load as one-step buffers.
    n_steps: int = 1
    gamma: float = 0.99
    episode_priority: str | None = None
    energy_clip: float = 0.5
    energy_dt: float | None = None
    _priority_cdf: np.ndarray | None = None
    transition_priority: np.ndarray
    compute_reward: RewardFn | None

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        env: VecEnv,
        device: str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_sampled_goal: int = 4,
        goal_selection_strategy: GoalSelectionStrategy | str = "future",
        copy_info_dict: bool = False,
        compute_reward: RewardFn | None = None,
        n_steps: int = 1,
        gamma: float = 0.99,
        episode_priority: str | None = None,
        energy_clip: float = 0.5,
        energy_dt: float | None = None,
    ):
        check_goal_observation_space(observation_space)
        if episode_priority not in self.EPISODE_PRIORITIES:
            raise ValueError(f"episode_priority must be one of {self.EPISODE_PRIORITIES}, got {episode_priority!r}")
        if not isinstance(energy_clip, numbers.Real) or not energy_clip > 0:
            raise ValueError(f"energy_clip must be > 0, got {energy_clip!r}")
        if energy_dt is not None and (not isinstance(energy_dt, numbers.Real) or not energy_dt > 0):
            raise ValueError(f"energy_dt must be > 0 (or None for the env's dt), got {energy_dt!r}")
        if not isinstance(n_steps, int | np.integer) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if not isinstance(n_sampled_goal, int | np.integer) or n_sampled_goal < 0:
            raise ValueError(f"n_sampled_goal (baselines replay_k) must be an integer >= 0, got {n_sampled_goal!r}")
        if optimize_memory_usage:
            raise ValueError("optimize_memory_usage is not supported with hindsight relabelling (as in SB3's HerReplayBuffer)")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            env,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=False,
            handle_timeout_termination=handle_timeout_termination,
            n_sampled_goal=n_sampled_goal,
            goal_selection_strategy=goal_selection_strategy,
            copy_info_dict=copy_info_dict,
        )
        self.compute_reward = compute_reward
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        for storage in (self.observations, self.next_observations):
            for key, values in storage.items():
                if values.dtype == np.float64:
                    # gymnasium-robotics declares float64 observations; the networks read float32, so storing
                    # float64 would double the buffer's memory for nothing (SB3 does the same for actions).
                    storage[key] = np.zeros(values.shape, dtype=np.float32)
        if not copy_info_dict:
            # SB3 allocates one dict per slot (~70 MB per million transitions) even when infos are never stored.
            self.infos = np.empty((0, self.n_envs), dtype=object)
        # Flat indices of the transitions of finished episodes (what `sample` draws from), recomputed only when an
        # episode ends or is overwritten instead of scanning the whole buffer at every gradient step.
        self._valid_indices: np.ndarray | None = None
        self.episode_priority = episode_priority
        self.energy_clip = float(energy_clip)
        self.energy_dt = None if energy_dt is None else float(energy_dt)
        if episode_priority is not None:
            # Sampling weight of each stored transition: its episode's priority divided by the episode's length, so
            # that drawing transitions by weight draws episodes by priority and then a step uniformly.
            self.transition_priority = np.zeros((self.buffer_size, self.n_envs), dtype=np.float64)
            if env is not None:
                self._resolve_energy_dt()
        # Cumulative weights over `valid_indices()`, rebuilt with them.
        self._priority_cdf = None

    #: Per-slot arrays (first dimension ``buffer_size``) that a buffer not yet full pickles up to ``pos`` only.
    _SLOT_ARRAYS = (
        "observations",
        "next_observations",
        "actions",
        "rewards",
        "dones",
        "timeouts",
        "ep_start",
        "ep_length",
        "infos",
        "transition_priority",
    )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # A reward function given by the owner (a closure, a bound method) is set again by the owner after loading.
        state["compute_reward"] = None
        state["_valid_indices"] = None
        state["_priority_cdf"] = None
        if not self.full:
            # The slots after `pos` are the zeros they were allocated with: pickle the stored rows only (a buffer sized
            # for a whole run pickles to the size of what it holds), `__setstate__` pads them back.
            _trim_rows(state, self._SLOT_ARRAYS, self.pos, self.buffer_size)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _pad_rows(state)
        super().__setstate__(state)

    def _resolve_energy_dt(self) -> float:
        """
        :return: The time between two env steps used for the velocities of the trajectory energy
        """
        if self.energy_dt is None:
            if self.env is None:
                raise RuntimeError("episode_priority='energy' needs the env's dt: give the buffer an env or energy_dt")
            # has_attr first: a failing get_attr kills a SubprocVecEnv worker instead of raising here.
            if not self.env.has_attr("dt"):
                raise ValueError(
                    "episode_priority='energy' needs the time between two env steps and the env has no `dt` "
                    "attribute: pass energy_dt in replay_buffer_kwargs"
                )
            self.energy_dt = float(self.env.get_attr("dt")[0])
        return self.energy_dt

    def set_env(self, env: VecEnv) -> None:
        """
        Give the buffer its env, also replacing a previous one (SB3's ``HerReplayBuffer`` refuses that; the
        algorithms' ``set_env`` needs it). With ``episode_priority="energy"`` the env's ``dt`` is read now, so that a
        missing one is reported here rather than at the end of the first episode; once read it is kept (pickled
        with the buffer).

        :param env: The training env
        """
        self.env = env
        if self.episode_priority == "energy":
            self._resolve_energy_dt()

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if np.any(self.ep_length[self.pos] > 0):
            self._valid_indices = None  # an old episode is about to be overwritten and dropped
        super().add(obs, next_obs, action, reward, done, infos)

    def _compute_episode_length(self, env_idx: int) -> None:
        super()._compute_episode_length(env_idx)
        self._valid_indices = None
        last = (self.pos - 1) % self.buffer_size
        if self.episode_priority == "energy" and self.ep_length[last, env_idx] > 0:
            # (ep_length is 0 for an episode longer than the buffer, which SB3 cannot store: nothing to weigh.)
            indices = self.last_episode_indices(env_idx)
            achieved = self.episode_achieved_goals(indices, env_idx)
            energy = trajectory_energy(achieved, dt=self._resolve_energy_dt(), clip=self.energy_clip)
            self.transition_priority[indices, env_idx] = energy / len(indices)

    def valid_indices(self) -> np.ndarray:
        """
        :return: Flat indices (into ``(buffer_size, n_envs)``) of the transitions that can be sampled
        """
        if self._valid_indices is None:
            self._valid_indices = np.flatnonzero(self.ep_length > 0)
            self._priority_cdf = None
        return self._valid_indices

    def _sample_indices(self, batch_size: int) -> np.ndarray:
        """
        :param batch_size: Number of transitions
        :return: Flat indices of sampled transitions: uniform over ``valid_indices()``, or by episode priority
        """
        valid_indices = self.valid_indices()
        if len(valid_indices) == 0:
            raise RuntimeError(
                "Unable to sample before the end of the first episode: choose learning_starts larger than the "
                "length of an episode"
            )
        if self.episode_priority is None:
            return np.random.choice(valid_indices, size=batch_size, replace=True)
        if self._priority_cdf is None:
            self._priority_cdf = np.cumsum(self.transition_priority.ravel()[valid_indices])
        total = self._priority_cdf[-1]
        if not total > 0:
            return np.random.choice(valid_indices, size=batch_size, replace=True)
        # side="right": a transition of weight 0 (its cumulative weight equals its predecessor's) is never drawn; the
        # clamp only matters if rand * total rounds up to total.
        positions = np.searchsorted(self._priority_cdf, np.random.rand(batch_size) * total, side="right")
        return valid_indices[np.minimum(positions, len(valid_indices) - 1)]

    def _relabelled_rewards(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, infos: Any) -> np.ndarray:
        if self.compute_reward is not None:
            return np.asarray(self.compute_reward(achieved_goal, desired_goal, infos), dtype=np.float32)
        assert self.env is not None, "HindsightReplayBuffer needs an env (or compute_reward) to relabel rewards"
        return call_compute_reward(self.env, achieved_goal, desired_goal, infos)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """
        Sample a batch of which the first ``int(her_ratio * batch_size)`` transitions are relabelled.

        With ``episode_priority=None`` the same distribution as SB3's ``HerReplayBuffer.sample`` (uniform over the
        transitions of finished episodes, goals drawn by ``_sample_goals``, rewards recomputed for relabelled goals);
        otherwise transitions are drawn by episode priority (see ``episode_priority``). In a single pass: each array
        is gathered and converted once instead of separately for real and relabelled parts.

        :param batch_size: Number of transitions
        :param env: VecNormalize wrapper to normalise with, if any
        :return: The samples
        """
        sampled = self._sample_indices(batch_size)
        batch_indices, env_indices = np.unravel_index(sampled, self.ep_length.shape)
        n_virtual = int(self.her_ratio * batch_size)

        obs = {key: values[batch_indices, env_indices] for key, values in self.observations.items()}
        if n_virtual > 0:
            virtual_batch, virtual_env = batch_indices[:n_virtual], env_indices[:n_virtual]
            new_goals = self._sample_goals(virtual_batch, virtual_env)
            obs["desired_goal"][:n_virtual] = new_goals
        discounts = None
        if self.n_steps > 1:
            rewards, last_indices, discounts = self._n_step_returns(
                batch_indices, env_indices, obs["desired_goal"], n_virtual, env
            )
            next_obs = {key: values[last_indices, env_indices] for key, values in self.next_observations.items()}
            next_obs["desired_goal"] = obs["desired_goal"].copy()
        else:
            last_indices = batch_indices
            next_obs = {key: values[batch_indices, env_indices] for key, values in self.next_observations.items()}
            rewards = self.rewards[batch_indices, env_indices].astype(np.float32)
            if n_virtual > 0:
                next_obs["desired_goal"][:n_virtual] = new_goals
                infos: Any = copy.deepcopy(self.infos[virtual_batch, virtual_env]) if self.copy_info_dict else [{}] * n_virtual
                # r_t depends on s_{t+1}: the reward of a relabelled transition uses the *next* achieved goal.
                rewards[:n_virtual] = self._relabelled_rewards(next_obs["achieved_goal"][:n_virtual], new_goals, infos)
            rewards = self._normalize_reward(rewards.reshape(-1, 1), env)

        obs_ = self._normalize_obs(obs, env)
        next_obs_ = self._normalize_obs(next_obs, env)
        assert isinstance(obs_, dict) and isinstance(next_obs_, dict)
        # Only terminations end the bootstrap; time-limit truncations do not (infinite-horizon view).
        dones = self.dones[last_indices, env_indices] * (1 - self.timeouts[last_indices, env_indices])
        return DictReplayBufferSamples(
            observations={key: self.to_torch(value) for key, value in obs_.items()},
            actions=self.to_torch(self.actions[batch_indices, env_indices]),
            next_observations={key: self.to_torch(value) for key, value in next_obs_.items()},
            dones=self.to_torch(dones).reshape(-1, 1),
            rewards=self.to_torch(rewards),
            discounts=None if discounts is None else self.to_torch(discounts),
        )

    def _n_step_returns(
        self,
        batch_indices: np.ndarray,
        env_indices: np.ndarray,
        goals: np.ndarray,
        n_virtual: int,
        env: VecNormalize | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        n-step returns of sampled transitions, never crossing the end of their episode.

        :param batch_indices: Buffer positions of the sampled transitions
        :param env_indices: Their env indices
        :param goals: Their goals (the first ``n_virtual`` relabelled)
        :param n_virtual: Number of relabelled transitions (at the start of the batch)
        :param env: VecNormalize wrapper to normalise rewards with, if any
        :return: ``(returns (batch, 1), buffer position of the last step of each, discounts gamma^k (batch, 1))``
        """
        # Steps left in the episode from each transition on (itself included).
        offset = (batch_indices - self.ep_start[batch_indices, env_indices]) % self.buffer_size
        n_taken = np.minimum(self.n_steps, self.ep_length[batch_indices, env_indices] - offset)
        steps = np.arange(self.n_steps)
        positions = (batch_indices[:, None] + steps) % self.buffer_size  # (batch, n_steps)
        envs = np.broadcast_to(env_indices[:, None], positions.shape)
        rewards = self.rewards[positions, envs].astype(np.float32)
        if n_virtual > 0:
            # Relabelled transitions: r_{t+i} = compute_reward(achieved_goal_{t+i+1}, g) for their new goal g.
            achieved = self.next_observations["achieved_goal"][positions[:n_virtual], envs[:n_virtual]]
            goal_dim = achieved.shape[-1]
            repeated_goals = np.repeat(goals[:n_virtual], self.n_steps, axis=0)
            infos = (
                copy.deepcopy(self.infos[positions[:n_virtual], envs[:n_virtual]].ravel())
                if self.copy_info_dict
                else [{}] * (n_virtual * self.n_steps)
            )
            rewards[:n_virtual] = self._relabelled_rewards(
                achieved.reshape(-1, goal_dim), repeated_goals.reshape(-1, goal_dim), infos
            ).reshape(n_virtual, self.n_steps)
        rewards = self._normalize_reward(rewards, env)
        taken = steps[None, :] < n_taken[:, None]
        # Steps past the episode's end hold other episodes (or nothing): zeroed, not multiplied (no NaN leaks in).
        returns = np.where(taken, rewards * (self.gamma**steps), 0.0).sum(axis=1, keepdims=True).astype(np.float32)
        last_indices = (batch_indices + n_taken - 1) % self.buffer_size
        discounts = (self.gamma**n_taken).reshape(-1, 1).astype(np.float32)
        return returns, last_indices, discounts

    def last_episode_indices(self, env_idx: int) -> np.ndarray:
        """
        Buffer indices of the episode of env ``env_idx`` that ended with the last stored transition.

        :param env_idx: Index of the env
        :return: Indices into the first axis of the storage arrays, in time order
        """
        last = (self.pos - 1) % self.buffer_size
        length = int(self.ep_length[last, env_idx])
        if length == 0:
            raise RuntimeError(f"The last transition of env {env_idx} does not close an episode")
        start = int(self.ep_start[last, env_idx])
        return (start + np.arange(length)) % self.buffer_size

    def close_episode(self, env_idx: int) -> bool:
        """
        End the episode of env ``env_idx`` at the last stored transition, as a time-limit truncation (bootstrapped),
        so that it can be sampled; the env's next transitions start a new stored episode.

        :param env_idx: Index of the env
        :return: Whether there was a partial episode to close
        """
        if self._current_ep_start[env_idx] == self.pos:
            return False
        last = (self.pos - 1) % self.buffer_size
        self.dones[last, env_idx] = True
        self.timeouts[last, env_idx] = True
        self._compute_episode_length(env_idx)
        return True

    def discard_last_episode(self, env_idx: int) -> None:
        """
        Make the episode of env ``env_idx`` that ended with the last stored transition impossible to sample
        (its transitions stay in place until overwritten).

        :param env_idx: Index of the env
        """
        self.ep_length[self.last_episode_indices(env_idx), env_idx] = 0
        self._valid_indices = None

    def episode_achieved_goals(self, episode_indices: np.ndarray, env_idx: int) -> np.ndarray:
        """
        :param episode_indices: Indices of one whole episode, in time order (``last_episode_indices``)
        :param env_idx: Index of the env
        :return: The achieved goals ``x_0 .. x_T`` of the episode (its observations', then the last next
            observation's), shape ``(T + 1, goal_dim)``
        """
        return np.concatenate(
            (
                self.observations["achieved_goal"][episode_indices, env_idx],
                self.next_observations["achieved_goal"][episode_indices[-1:], env_idx],
            )
        )

    def relabel_goals(self, episode_indices: np.ndarray, env_idx: int) -> np.ndarray:
        """
        Goals the learner will see for the transitions of one episode: each transition keeps its desired goal
        or, with probability ``her_ratio``, gets one drawn by the goal selection strategy.

        :param episode_indices: Indices of one whole episode (``last_episode_indices``)
        :param env_idx: Index of the env
        :return: One goal per transition
        """
        env_indices = np.full(len(episode_indices), env_idx)
        goals = self.observations["desired_goal"][episode_indices, env_idx].copy()
        relabel = np.random.rand(len(episode_indices)) < self.her_ratio
        if relabel.any():
            goals[relabel] = self._sample_goals(episode_indices[relabel], env_indices[relabel])
        return goals

    def episode_for_normalizer(self, env_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """
        Observations and relabelled goals of the episode of env ``env_idx`` that just ended, as baselines feeds
        its ``o_stats``/``g_stats`` after storing an episode.

        :param env_idx: Index of the env
        :return: ``(observations, goals)``, one row per transition
        """
        indices = self.last_episode_indices(env_idx)
        return self.observations["observation"][indices, env_idx], self.relabel_goals(indices, env_idx)


def trajectory_energy(achieved_goals: np.ndarray, dt: float, clip: float, gravity: float = 9.81) -> float:
    """
    Trajectory energy of Energy-Based Prioritization (Zhao & Tresp 2018): the object (unit mass) whose position is
    the achieved goal has, after step ``t``, the energy ``E_t = 1/2 |v_t|^2 + g (z_t - z_0)`` (kinetic, with
    ``v_t = (x_t - x_{t-1}) / dt``, plus potential relative to its starting height; the potential term only when
    the goal has a third, vertical, coordinate). The trajectory energy sums the energy *increases*
    ``E_t - E_{t-1}`` (``E_0 = 0``), each clipped to ``[0, clip]``.

    :param achieved_goals: Achieved goals ``x_0 .. x_T`` of one episode, shape ``(T + 1, goal_dim)``; the first
        three coordinates (or fewer) are the object's position
    :param dt: Time between two steps
    :param clip: Upper clip of each step's energy increase
    :param gravity: Gravitational acceleration
    :return: The trajectory energy (>= 0)
    """
    positions = np.asarray(achieved_goals, dtype=np.float64)[:, :3]
    velocities = np.diff(positions, axis=0) / dt
    energy = 0.5 * np.sum(velocities**2, axis=1)
    if positions.shape[1] == 3:
        energy = energy + gravity * (positions[1:, 2] - positions[0, 2])
    increases = np.diff(energy, prepend=0.0)
    return float(np.clip(increases, 0.0, clip).sum())
