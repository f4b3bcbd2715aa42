"""Replay buffer of one level of a hierarchy: hindsight relabelling plus HAC's subgoal-testing penalty transitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sb3_hher.common.buffers import HindsightReplayBuffer, RewardFn, _pad_rows, _trim_rows


def _storage_dtype(dtype: np.dtype | None) -> np.dtype:
    # As the main storage (HindsightReplayBuffer): float64 observations are kept as float32.
    return np.dtype(np.float32) if dtype == np.float64 else np.dtype(dtype)


class LevelReplayBuffer(HindsightReplayBuffer):
    """
    ``HindsightReplayBuffer`` of one level, plus a separate store of subgoal-testing penalty transitions
    (HAC section 4.3: a missed test subgoal gives reward ``subgoal_penalty`` with discount 0).

    Penalty transitions are kept apart because they must never be relabelled: their reward says the proposed
    subgoal was out of reach of the level below, whatever the goal. They are mixed into every sampled batch in
    proportion to their share of what HAC's replay buffer holds: each stored transition of an episode stands
    for ``1 + n_sampled_goal`` transitions (itself and its hindsight-goal copies), each penalty transition for one,
    so a penalty is drawn with probability ``n_penalty / (n_penalty + (1 + n_sampled_goal) * n_transitions)``.
    Sampled penalty transitions have ``done = 1``, so their TD target is the penalty itself.

    :param buffer_size: Max number of (episode) transitions stored; the penalty store has the same capacity
    :param observation_space: Dict observation space of the level
    :param action_space: Action space of the level
    :param env: Env whose ``compute_reward`` relabels rewards (``None`` when ``compute_reward`` is given)
    :param device: PyTorch device of the sampled batches
    :param n_envs: Number of parallel streams of episodes (levels store whole episodes: 1)
    :param optimize_memory_usage: Not supported
    :param handle_timeout_termination: Bootstrap through truncations (the end of an attempt of H actions)
    :param n_sampled_goal: Relabelled transitions per real one
    :param goal_selection_strategy: ``"future"``, ``"final"`` or ``"episode"``
    :param copy_info_dict: Store info dicts and pass them to ``compute_reward``
    :param compute_reward: Reward function of relabelled transitions (the level's reward)
    :param penalty_buffer_size: Capacity of the penalty store (default ``buffer_size``)
    :param n_steps: Length of the returns of episode transitions (``HindsightReplayBuffer``); penalty transitions
        are never bootstrapped
    :param gamma: Discount of the n-step returns
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        env: VecEnv | None = None,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        copy_info_dict: bool = False,
        compute_reward: RewardFn | None = None,
        penalty_buffer_size: int | None = None,
        n_steps: int = 1,
        gamma: float = 0.99,
    ):
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            env,  # type: ignore[arg-type]
            device=device,  # type: ignore[arg-type]
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
            n_sampled_goal=n_sampled_goal,
            goal_selection_strategy=goal_selection_strategy,
            copy_info_dict=copy_info_dict,
            compute_reward=compute_reward,
            n_steps=n_steps,
            gamma=gamma,
        )
        self.penalty_buffer_size = int(penalty_buffer_size or buffer_size)
        self.penalty_observations = {
            key: np.zeros((self.penalty_buffer_size, *shape), dtype=_storage_dtype(observation_space[key].dtype))
            for key, shape in self.obs_shape.items()
        }
        self.penalty_next_observations = {
            key: np.zeros((self.penalty_buffer_size, *shape), dtype=_storage_dtype(observation_space[key].dtype))
            for key, shape in self.obs_shape.items()
        }
        self.penalty_actions = np.zeros(
            (self.penalty_buffer_size, self.action_dim), dtype=self._maybe_cast_dtype(action_space.dtype)
        )
        self.penalty_rewards = np.zeros(self.penalty_buffer_size, dtype=np.float32)
        self.penalty_pos = 0
        self.penalty_full = False

    _PENALTY_ARRAYS = ("penalty_observations", "penalty_next_observations", "penalty_actions", "penalty_rewards")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if not self.penalty_full:
            # As for the episode transitions: the penalty store pickles its stored rows only.
            _trim_rows(state, self._PENALTY_ARRAYS, self.penalty_pos, self.penalty_buffer_size, tag="_penalty")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        _pad_rows(state, tag="_penalty")
        super().__setstate__(state)

    @property
    def n_penalty(self) -> int:
        """Number of penalty transitions stored."""
        return self.penalty_buffer_size if self.penalty_full else self.penalty_pos

    @property
    def n_episode_transitions(self) -> int:
        """Number of transitions of complete episodes (the ones that can be sampled)."""
        return int(np.count_nonzero(self.ep_length > 0))

    def add_penalty(
        self, obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray], action: np.ndarray, reward: float
    ) -> None:
        """
        Store one subgoal-testing penalty transition (never relabelled, terminal when replayed).

        :param obs: The level's observation when it proposed the subgoal (one transition, no batch dimension)
        :param next_obs: The level's observation when the level below gave up
        :param action: The missed subgoal, scaled to ``[-1, 1]``
        :param reward: The penalty (HAC: ``-H``)
        """
        for key in self.penalty_observations:
            self.penalty_observations[key][self.penalty_pos] = obs[key]
            self.penalty_next_observations[key][self.penalty_pos] = next_obs[key]
        self.penalty_actions[self.penalty_pos] = np.asarray(action).reshape(self.action_dim)
        self.penalty_rewards[self.penalty_pos] = reward
        self.penalty_pos = (self.penalty_pos + 1) % self.penalty_buffer_size
        if self.penalty_pos == 0:
            self.penalty_full = True

    def penalty_fraction(self) -> float:
        """Probability that a replayed transition is a penalty transition (see the class docstring)."""
        n_penalty = self.n_penalty
        if n_penalty == 0:
            return 0.0
        return n_penalty / (n_penalty + (1 + self.n_sampled_goal) * self.n_episode_transitions)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """
        Relabelled episode transitions mixed with penalty transitions.

        :param batch_size: Number of transitions
        :param env: VecNormalize wrapper to normalise with, if any
        :return: The batch (episode transitions first)
        """
        n_penalty = int(np.random.binomial(batch_size, self.penalty_fraction())) if self.n_penalty > 0 else 0
        n_penalty = min(n_penalty, batch_size - 1)
        samples = super().sample(batch_size - n_penalty, env)
        if n_penalty == 0:
            return samples
        indices = np.random.randint(0, self.n_penalty, size=n_penalty)
        penalty = self._penalty_samples(indices, env)
        return DictReplayBufferSamples(
            observations={key: th.cat((samples.observations[key], penalty.observations[key])) for key in samples.observations},
            actions=th.cat((samples.actions, penalty.actions)),
            next_observations={
                key: th.cat((samples.next_observations[key], penalty.next_observations[key]))
                for key in samples.next_observations
            },
            dones=th.cat((samples.dones, penalty.dones)),
            rewards=th.cat((samples.rewards, penalty.rewards)),
            # Penalty targets are not bootstrapped (dones = 1): any discount serves.
            discounts=None if samples.discounts is None else th.cat((samples.discounts, th.ones_like(penalty.rewards))),
        )

    def _penalty_samples(self, indices: np.ndarray, env: VecNormalize | None = None) -> DictReplayBufferSamples:
        obs = self._normalize_obs({key: value[indices] for key, value in self.penalty_observations.items()}, env)
        next_obs = self._normalize_obs({key: value[indices] for key, value in self.penalty_next_observations.items()}, env)
        assert isinstance(obs, dict) and isinstance(next_obs, dict)
        return DictReplayBufferSamples(
            observations={key: self.to_torch(value) for key, value in obs.items()},
            actions=self.to_torch(self.penalty_actions[indices]),
            next_observations={key: self.to_torch(value) for key, value in next_obs.items()},
            # Discount 0: the target of a missed test subgoal is the penalty, not bootstrapped (HAC).
            dones=self.to_torch(np.ones((len(indices), 1), dtype=np.float32)),
            rewards=self.to_torch(self._normalize_reward(self.penalty_rewards[indices].reshape(-1, 1), env)),
        )
