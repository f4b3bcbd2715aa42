"""What baselines' DDPG+HER adds to SB3's TD3/DDPG, written once for both (baselines ``her/ddpg.py``)."""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.goal_env import GoalEnvError, GoalEnvSpec, check_goal_env
from sb3_hher.common.normalizer import GoalObsNormalizer
from sb3_hher.common.policies import GoalPolicy

AUTO = "auto"


class NonFiniteObservationError(ValueError):
    """An env returned NaN or inf in an observation or reward."""


def find_non_finite(
    new_obs: dict[str, np.ndarray], reward: np.ndarray, dones: np.ndarray, infos: list[dict], step: int
) -> tuple[dict[int, str], dict[int, str]]:
    """
    Envs whose step returned NaN or inf.

    :param new_obs: Observations returned by ``VecEnv.step`` (for a finished episode: the next episode's first one)
    :param reward: Rewards returned by ``VecEnv.step``
    :param dones: Episode ends
    :param infos: Infos (``terminal_observation`` of finished episodes)
    :param step: Current step, for the messages
    :return: Env index -> message naming the key, the env and the step, for (1) this step's transition (next or
        terminal observation, reward) and (2) the first observation of the episode that starts after a finished one
    """
    transition: dict[int, str] = {}
    next_episode: dict[int, str] = {}
    for key, value in new_obs.items():
        finite = np.isfinite(value).reshape(len(value), -1).all(axis=1)
        for env_idx in np.flatnonzero(~finite):
            target = next_episode if dones[env_idx] else transition
            message = f"Observation key '{key}' of env {env_idx} is NaN or inf at step {step}: {value[env_idx]}"
            target.setdefault(int(env_idx), message)
    for env_idx in np.flatnonzero(dones):
        terminal = infos[env_idx].get("terminal_observation")
        for key, value in (terminal or {}).items():
            if not np.all(np.isfinite(value)):
                message = f"Terminal observation key '{key}' of env {env_idx} is NaN or inf at step {step}"
                transition.setdefault(int(env_idx), message)
    for env_idx in np.flatnonzero(~np.isfinite(reward)):
        transition.setdefault(int(env_idx), f"Reward is NaN or inf at step {step}: {reward}")
    return transition, next_episode


def zero_non_finite(
    new_obs: dict[str, np.ndarray], reward: np.ndarray, infos: list[dict], problems: dict[int, str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """
    Copies of ``new_obs`` and ``reward`` (and, in place, the terminal observations of the faulty envs) with NaN and inf
    replaced by 0, for agents that go on acting after skipping a faulty episode.
    """
    for env_idx in problems:
        terminal = infos[env_idx].get("terminal_observation")
        if terminal is not None:
            infos[env_idx]["terminal_observation"] = {
                key: np.nan_to_num(value, posinf=0.0, neginf=0.0) for key, value in terminal.items()
            }
    new_obs = {key: np.nan_to_num(value, posinf=0.0, neginf=0.0) for key, value in new_obs.items()}
    return new_obs, np.nan_to_num(reward, posinf=0.0, neginf=0.0)


class BaselinesHerMixin:
    """
    Baselines DDPG+HER on top of SB3's ``TD3`` (and therefore ``DDPG``). Overrides only what differs:

    - ``train``: TD targets clipped to the return range (``clip_return``), action L2 penalty in the actor loss
      (``action_l2``), target networks updated every ``target_update_interval`` gradient steps (baselines:
      once per cycle), Q and normaliser statistics logged.
    - ``_sample_action``: baselines exploration, Gaussian noise (``noise_eps``) then a uniformly random action
      with probability ``random_eps``.
    - ``_store_transition``: rejects non-finite observations and rewards; after each finished episode feeds
      the policy's normaliser with its observations and relabelled goals.
    - ``_setup_model``: validates the goal env, derives ``gamma = 1 - 1/T`` and the return bounds.

    Classes using it must call ``_init_her`` in their constructor before ``_setup_model``.
    """

    # Provided by the SB3 algorithm this is mixed into.
    env: Any
    gamma: float
    tau: float
    policy: GoalPolicy
    replay_buffer: ReplayBuffer | None  # a HindsightReplayBuffer once _setup_model has run
    replay_buffer_class: type[ReplayBuffer] | None
    replay_buffer_kwargs: dict[str, Any]
    action_space: Any
    train_freq: int | tuple[int, str]
    action_noise: ActionNoise | None
    num_timesteps: int
    policy_delay: int
    target_policy_noise: float
    target_noise_clip: float
    _n_updates: int
    _vec_normalize_env: Any
    logger: Any

    def _init_her(
        self,
        gamma: float | None,
        target_update_interval: int,
        action_l2: float,
        clip_return: float | str | None,
        clip_positive_returns: bool,
        random_eps: float | Callable[[float], float],
        noise_eps: float,
        n_sampled_goal: int,
        goal_selection_strategy: str,
        demo_file: str | None,
        demo_batch_size: int,
        bc_loss: bool,
        q_filter: bool,
        prm_loss_weight: float,
        aux_loss_weight: float,
        non_finite: str,
    ) -> None:
        # No defaults here: the public constructors (HerDDPG, HerTD3) own them.
        if non_finite not in ("raise", "skip"):
            raise ValueError(f"non_finite must be 'raise' or 'skip', got {non_finite!r}")
        if gamma is not None and not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1) (or None for 1 - 1/T), got {gamma}")
        if not isinstance(target_update_interval, int | np.integer) or target_update_interval < 1:
            raise ValueError(f"target_update_interval must be an integer >= 1, got {target_update_interval!r}")
        if action_l2 < 0:
            raise ValueError(f"action_l2 must be >= 0, got {action_l2}")
        # A schedule is checked at both ends of learning (LinearSchedule is monotonic).
        for value in (random_eps(1.0), random_eps(0.0)) if callable(random_eps) else (random_eps,):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"random_eps is a probability (or a schedule of probabilities), got {value}")
        if noise_eps < 0:
            raise ValueError(f"noise_eps must be >= 0, got {noise_eps}")
        if not (clip_return is None or clip_return == AUTO or (isinstance(clip_return, float | int) and clip_return > 0)):
            raise ValueError(f"clip_return must be 'auto', a positive number or None, got {clip_return!r}")
        if not isinstance(n_sampled_goal, int | np.integer) or n_sampled_goal < 0:
            raise ValueError(f"n_sampled_goal (baselines replay_k) must be an integer >= 0, got {n_sampled_goal!r}")
        if (bc_loss or q_filter) and demo_file is None:
            raise ValueError("bc_loss and q_filter need demonstrations: pass demo_file")
        if q_filter and not bc_loss:
            raise ValueError("q_filter filters the behaviour-cloning loss: it needs bc_loss=True")
        if demo_file is not None and not 0 < demo_batch_size < self.batch_size:  # type: ignore[attr-defined]
            raise ValueError(
                f"demo_batch_size must be in (0, batch_size={self.batch_size}) (demo transitions are part of each "  # type: ignore[attr-defined]
                f"batch, as in baselines), got {demo_batch_size}"
            )
        self.demo_file = None if demo_file is None else str(demo_file)
        self.demo_batch_size = int(demo_batch_size)
        self.bc_loss = bc_loss
        self.q_filter = q_filter
        self.prm_loss_weight = float(prm_loss_weight)
        self.aux_loss_weight = float(aux_loss_weight)
        self.demo_buffer: HindsightReplayBuffer | None = None
        self.non_finite = non_finite
        # Envs whose current episode hit a non-finite value (non_finite="skip"): not learned from until it ends.
        self._discarded_envs: set[int] = set()
        self.gamma = gamma  # type: ignore[assignment]  # resolved in _setup_model when None
        self.target_update_interval = int(target_update_interval)
        self.action_l2 = float(action_l2)
        self.clip_return = clip_return
        self.clip_positive_returns = clip_positive_returns
        # A float, or an SB3 schedule of the remaining progress (1 -> 0), e.g. LinearSchedule(1.0, 0.3, 0.2).
        self.random_eps: float | Callable[[float], float] = random_eps if callable(random_eps) else float(random_eps)
        self.noise_eps = float(noise_eps)
        self.n_sampled_goal = int(n_sampled_goal)
        self.goal_selection_strategy = goal_selection_strategy
        self.return_bounds: tuple[float, float] | None = None
        action_space = getattr(self, "action_space", None)  # unset when load() builds the model without an env
        if self.action_noise is None and self.noise_eps > 0 and action_space is not None:
            # Baselines: u + noise_eps * max_u * N(0, 1), in the [-1, 1]-scaled action space.
            dim = int(np.prod(action_space.shape))
            self.action_noise = NormalActionNoise(np.zeros(dim), self.noise_eps * np.ones(dim))

    def _return_bounds_for(self, spec: GoalEnvSpec) -> tuple[float, float] | None:
        """Clip range of TD targets (baselines ``clip_return`` / ``clip_pos_returns``)."""
        if self.clip_return is None:
            return None
        if self.clip_return == AUTO:
            # Any discounted sum of rewards in [r_min, r_max] lies in [r_min, r_max] / (1 - gamma):
            # [-1/(1-gamma), 0] for Fetch's {-1, 0}, [0, 1/(1-gamma)] for PointMaze's {0, 1}.
            low, high = spec.reward_bounds
            return low / (1.0 - self.gamma), high / (1.0 - self.gamma)
        bound = float(self.clip_return)
        if self.clip_positive_returns and spec.reward_bounds[1] > 0:
            raise GoalEnvError(
                f"clip_return={bound} with clip_positive_returns=True clips TD targets to [-{bound}, 0], but this env's "
                f"compute_reward gives {spec.reward_bounds[1]} > 0: use clip_return='auto' (bounds from the reward "
                "range) or clip_positive_returns=False"
            )
        # Baselines: clip_range = (-clip_return, 0 if clip_pos_returns else inf).
        return -bound, 0.0 if self.clip_positive_returns else float("inf")

    def _setup_model(self) -> None:
        if self.env is not None:
            spec = check_goal_env(self.env)
            if self.gamma is None:
                if spec.max_episode_steps is None:
                    raise ValueError(
                        "gamma=None means gamma = 1 - 1/T with T the env's time limit (baselines), but the env has no "
                        "max_episode_steps: pass gamma explicitly"
                    )
                self.gamma = 1.0 - 1.0 / spec.max_episode_steps
            self.return_bounds = self._return_bounds_for(spec)
            self._check_schedule(spec)
            if getattr(self, "_vec_normalize_env", None) is not None:
                warnings.warn(
                    f"{type(self).__name__} normalises observations and goals inside its policy; wrapping the env in "
                    "VecNormalize normalises them twice (and VecNormalize never sees relabelled goals). "
                    "Remove VecNormalize.",
                    stacklevel=2,
                )
        elif self.gamma is None:
            raise ValueError("gamma=None can only be resolved with an env (gamma = 1 - 1/T)")

        # Our own copy: the settings below are written into it, and SB3 keeps the caller's dict as it is.
        self.replay_buffer_kwargs = dict(self.replay_buffer_kwargs)
        if self.replay_buffer_class is None:
            self.replay_buffer_class = HindsightReplayBuffer
        if not issubclass(self.replay_buffer_class, HindsightReplayBuffer):
            raise TypeError(
                f"{type(self).__name__} needs a HindsightReplayBuffer (it feeds the normaliser with relabelled goals), "
                f"got replay_buffer_class={self.replay_buffer_class.__name__}"
            )
        for key, value in (("n_sampled_goal", self.n_sampled_goal), ("goal_selection_strategy", self.goal_selection_strategy)):
            if key in self.replay_buffer_kwargs and self.replay_buffer_kwargs[key] != value:
                # Constructor arguments and replay_buffer_kwargs must agree: the kwargs win when only they are given.
                setattr(self, key, self.replay_buffer_kwargs[key])
            self.replay_buffer_kwargs.setdefault(key, value)
        if not isinstance(self.n_steps, int | np.integer) or self.n_steps < 1:  # type: ignore[has-type]
            raise ValueError(f"n_steps must be an integer >= 1, got {self.n_steps!r}")  # type: ignore[has-type]
        if self.n_steps > 1 or "n_steps" in self.replay_buffer_kwargs:  # type: ignore[has-type]
            self.replay_buffer_kwargs.setdefault("n_steps", int(self.n_steps))  # type: ignore[has-type]
            self.n_steps = self.replay_buffer_kwargs["n_steps"]
            self.replay_buffer_kwargs["gamma"] = self.gamma

        if self.env is None and getattr(self, "replay_buffer", None) is None:
            # Loaded without an env (to predict): SB3 refuses to build a hindsight buffer without one. Build it
            # env-less (numpy allocates lazily); set_env gives it the env before any learning.
            self.replay_buffer = self.replay_buffer_class(
                self.buffer_size,  # type: ignore[attr-defined]
                self.observation_space,  # type: ignore[attr-defined]
                self.action_space,  # type: ignore[attr-defined]
                env=None,  # type: ignore[arg-type]
                device=self.device,  # type: ignore[attr-defined]
                n_envs=self.n_envs,  # type: ignore[attr-defined]
                **self.replay_buffer_kwargs,
            )
        with warnings.catch_warnings():
            # SB3 warns that n_steps is ignored with a custom buffer class: ours implements it (kwargs above).
            warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored because a custom")
            super()._setup_model()  # type: ignore[misc]
        if not isinstance(getattr(self.policy, "normalizer", None), GoalObsNormalizer):
            raise TypeError(
                f"{type(self).__name__} needs a policy with the running goal normaliser ('MultiInputPolicy': GoalPolicy, or "
                f"GoalTQCPolicy for HerTQC), got {type(self.policy).__name__}"
            )
        if self.demo_file is not None and self.env is not None:
            self._load_demo_buffer()

    def _load_demo_buffer(self, update_normalizer: bool = True) -> None:
        """
        Fill the demonstration buffer from ``demo_file`` (baselines ``DDPG.init_demo_buffer``): demo episodes are
        relabelled like the agent's own, and their observations and relabelled goals feed the normaliser.

        :param update_normalizer: Feed the normaliser (not when its loaded statistics already hold the demos)
        """
        from sb3_hher.demos.io import load_demonstrations

        assert self.demo_file is not None
        demos = load_demonstrations(self.demo_file, env=self.env)
        buffer = HindsightReplayBuffer(
            demos.n_episodes * demos.episode_length,
            self.observation_space,  # type: ignore[attr-defined]
            self.action_space,
            env=self.env,
            device=self.device,  # type: ignore[attr-defined]
            n_sampled_goal=self.n_sampled_goal,
            goal_selection_strategy=self.goal_selection_strategy,
            n_steps=self.n_steps,  # type: ignore[has-type]
            gamma=self.gamma,
        )
        for episode in demos.iter_episodes(self.env):
            # Episodes end on the time limit: stored as truncations, bootstrapped like the agent's own.
            for obs, next_obs, action, reward, done, infos in episode.buffer_steps():
                # The buffer holds actions in the policy's [-1, 1] units.
                action = self.policy.scale_action(np.clip(action, self.action_space.low, self.action_space.high))
                buffer.add(obs, next_obs, action, reward, done, infos)
            observations, goals = buffer.episode_for_normalizer(0)
            if update_normalizer:
                self.policy.normalizer.update(observations, goals)
        self.demo_buffer = buffer

    def _excluded_save_params(self) -> list[str]:
        # Rebuilt from demo_file when the model is loaded.
        return [*super()._excluded_save_params(), "demo_buffer"]  # type: ignore[misc]

    def _sample_batch(self, batch_size: int) -> tuple[Any, int]:
        """
        A training batch: ``batch_size`` transitions, the last ``demo_batch_size`` of them from the demonstrations
        when there are any (baselines).

        :return: The samples and the number of demonstration transitions at their end
        """
        buffer = self.replay_buffer
        assert isinstance(buffer, HindsightReplayBuffer)
        if self.demo_buffer is None:
            return buffer.sample(batch_size, env=self._vec_normalize_env), 0
        agent = buffer.sample(batch_size - self.demo_batch_size, env=self._vec_normalize_env)
        demo = self.demo_buffer.sample(self.demo_batch_size, env=self._vec_normalize_env)
        merged = type(agent)(
            observations={key: th.cat((agent.observations[key], demo.observations[key])) for key in agent.observations},
            actions=th.cat((agent.actions, demo.actions)),
            next_observations={
                key: th.cat((agent.next_observations[key], demo.next_observations[key])) for key in agent.next_observations
            },
            dones=th.cat((agent.dones, demo.dones)),
            rewards=th.cat((agent.rewards, demo.rewards)),
            discounts=None if agent.discounts is None or demo.discounts is None else th.cat((agent.discounts, demo.discounts)),
        )
        return merged, self.demo_batch_size

    def _actor_loss(self, observations: dict[str, th.Tensor], actions: th.Tensor, n_demo: int) -> tuple[th.Tensor, dict]:
        """
        Actor loss: ``-Q(s, pi(s)) + action_l2 * pi(s)^2`` (baselines), and with demonstrations the behaviour-cloning
        loss on the demo transitions, optionally only where the critic prefers the demo action (Q-filter; Nair et
        al. 2018, https://arxiv.org/abs/1709.10089):
        ``prm_loss_weight * (-Q + action_l2 * pi^2) + aux_loss_weight * sum_demo ||pi(s) - a||^2``.

        :param observations: Batch observations
        :param actions: Batch actions (the last ``n_demo`` are demonstrations)
        :param n_demo: Number of demonstration transitions at the end of the batch
        :return: The loss and the statistics to log
        """
        actions_pi = self.actor(observations)  # type: ignore[attr-defined]
        q_pi = self.critic.q1_forward(observations, actions_pi)  # type: ignore[attr-defined]
        stats: dict[str, float] = {}
        l2_loss = self.action_l2 * actions_pi.pow(2).mean()
        # Baselines: pi_loss += action_l2 * mean((pi / max_u)^2); actions are already in [-1, 1].
        loss = -q_pi.mean() + l2_loss
        stats["action_l2_loss"] = l2_loss.item()
        if self.bc_loss and n_demo > 0:
            demo_obs = {key: value[-n_demo:] for key, value in observations.items()}
            squared_error = (actions_pi[-n_demo:] - actions[-n_demo:]).pow(2).sum(dim=1, keepdim=True)
            if self.q_filter:
                with th.no_grad():
                    keep = (self.critic.q1_forward(demo_obs, actions[-n_demo:]) > q_pi[-n_demo:]).float()  # type: ignore[attr-defined]
                stats["q_filter_accept_rate"] = keep.mean().item()
                squared_error = squared_error * keep
            cloning_loss = squared_error.sum()
            stats["bc_loss"] = cloning_loss.item()
            loss = self.prm_loss_weight * loss + self.aux_loss_weight * cloning_loss
        return loss, stats

    def _check_schedule(self, spec: GoalEnvSpec) -> None:
        """Make the update schedule work with several envs and refuse buffers an episode cannot fit in."""
        train_freq = self.train_freq
        if isinstance(train_freq, tuple) and str(train_freq[1]).lower().endswith("episode") and self.env.num_envs > 1:
            if spec.max_episode_steps is None:
                raise ValueError(
                    f"train_freq={train_freq} counts episodes, which SB3 supports with one env only; with "
                    f"{self.env.num_envs} envs and no time limit pass train_freq in steps"
                )
            # n episodes of each of the envs stepping in lock-step (baselines' rollout_batch_size per worker).
            self.train_freq = (int(train_freq[0]) * spec.max_episode_steps, "step")
        train_freq = self.train_freq
        counts_steps = not (isinstance(train_freq, tuple) and str(train_freq[1]).lower().endswith("episode"))
        first_episode_end = None if spec.max_episode_steps is None else spec.max_episode_steps * self.env.num_envs
        if counts_steps and first_episode_end is not None and self.learning_starts < first_episode_end:  # type: ignore[attr-defined]
            warnings.warn(
                f"learning_starts={self.learning_starts} is shorter than the first episode ({spec.max_episode_steps} "  # type: ignore[attr-defined]
                f"steps x {self.env.num_envs} envs): relabelling samples finished episodes only, so training will fail "
                f"with 'Unable to sample before the end of the first episode' unless an episode terminates earlier. "
                f"Set learning_starts >= {first_episode_end}.",
                stacklevel=3,
            )
        per_env = self.buffer_size // self.env.num_envs  # type: ignore[attr-defined]
        if spec.max_episode_steps is not None and per_env <= spec.max_episode_steps:
            raise ValueError(
                f"buffer_size={self.buffer_size} holds {per_env} transitions per env, not more than one episode "  # type: ignore[attr-defined]
                f"({spec.max_episode_steps} steps): relabelling needs whole episodes in the buffer"
            )

    def set_env(self, env: Any, force_reset: bool = True) -> None:
        super().set_env(env, force_reset=force_reset)  # type: ignore[misc]
        if isinstance(self.replay_buffer, HindsightReplayBuffer):
            # The relabelling buffer recomputes rewards with the env's compute_reward: use the new env from now on.
            self.replay_buffer.set_env(self.env)
        if self.demo_file is not None:
            if self.demo_buffer is None:
                # Loaded without an env: the demonstrations (checked against the env) could not be loaded then. The
                # normaliser's saved statistics already include them.
                self._load_demo_buffer(update_normalizer=False)
            else:
                self.demo_buffer.env = self.env

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        action, buffer_action = super()._sample_action(learning_starts, action_noise, n_envs)  # type: ignore[misc]
        random_eps = self.random_eps_at(self._current_progress_remaining)  # type: ignore[attr-defined]
        if random_eps > 0 and self.num_timesteps >= learning_starts:
            # Baselines rollout: with probability random_eps, replace the (noisy) action by a uniform one.
            random_mask = np.random.rand(n_envs) < random_eps
            if random_mask.any():
                buffer_action = buffer_action.copy()
                n_random = int(random_mask.sum())
                buffer_action[random_mask] = np.random.uniform(-1.0, 1.0, size=(n_random, *buffer_action.shape[1:]))
                action = self.policy.unscale_action(buffer_action)
        return action, buffer_action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        assert isinstance(replay_buffer, HindsightReplayBuffer) and isinstance(new_obs, dict)
        problems, next_episode_problems = find_non_finite(new_obs, reward, dones, infos, self.num_timesteps)
        if problems or next_episode_problems:
            if self.non_finite == "raise":
                raise NonFiniteObservationError(next(iter({**problems, **next_episode_problems}.values())))
            for env_idx, message in problems.items():
                if env_idx not in self._discarded_envs:
                    warnings.warn(f"{message}: the rest of this episode of env {env_idx} is not learned from", stacklevel=2)
                    # The episode stored so far ends at the last finite step (bootstrapped like a time limit).
                    if replay_buffer.close_episode(env_idx):
                        self.policy.normalizer.update(*replay_buffer.episode_for_normalizer(env_idx))
                    self._discarded_envs.add(env_idx)
            new_obs, reward = zero_non_finite(new_obs, reward, infos, {**problems, **next_episode_problems})
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]
        for done_idx in np.flatnonzero(dones):
            env_idx = int(done_idx)
            if env_idx in self._discarded_envs:
                replay_buffer.discard_last_episode(env_idx)
                self._discarded_envs.discard(env_idx)
                continue
            # Baselines DDPG.store_episode: update o_stats/g_stats with the episode's relabelled transitions.
            observations, goals = replay_buffer.episode_for_normalizer(env_idx)
            self.policy.normalizer.update(observations, goals)
            self._record_achieved_goal_move(replay_buffer, env_idx)
        for env_idx, message in next_episode_problems.items():
            # The episode that just ended was finite; the one starting from a non-finite observation is skipped.
            warnings.warn(f"{message}: the episode of env {env_idx} starting there is not learned from", stacklevel=2)
            self._discarded_envs.add(env_idx)

    def _record_achieved_goal_move(self, replay_buffer: HindsightReplayBuffer, env_idx: int) -> None:
        """
        Remember how far the achieved goal moved over the episode of env ``env_idx`` that just ended (for Fetch
        Push/Slide/PickAndPlace: whether the agent moved the object at all, the first thing those tasks must learn).
        """
        achieved = replay_buffer.episode_achieved_goals(replay_buffer.last_episode_indices(env_idx), env_idx)
        moves: deque[float] | None = getattr(self, "_achieved_goal_moves", None)
        if moves is None:  # created here: models saved before this statistic existed load without it
            moves = deque(maxlen=getattr(self, "_stats_window_size", 100))
            self._achieved_goal_moves = moves
        moves.append(float(np.linalg.norm(achieved[-1] - achieved[0])))

    def random_eps_at(self, progress_remaining: float) -> float:
        """
        :param progress_remaining: SB3's remaining progress of ``learn`` (1 at the start, 0 at the end)
        :return: The probability of a uniformly random action at that point (``random_eps``, or its schedule's value)
        """
        return float(self.random_eps(progress_remaining)) if callable(self.random_eps) else self.random_eps

    def dump_logs(self) -> None:
        """SB3's logs, plus ``rollout/achieved_goal_move`` (mean distance between the achieved goals at the start and
        the end of the recent training episodes) and, when it is scheduled, ``rollout/random_eps``."""
        moves = getattr(self, "_achieved_goal_moves", None)
        if moves:
            self.logger.record("rollout/achieved_goal_move", float(np.mean(moves)))
        if callable(self.random_eps):
            self.logger.record("rollout/random_eps", self.random_eps_at(self._current_progress_remaining))  # type: ignore[attr-defined]
        super().dump_logs()  # type: ignore[misc]

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: Any = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, Any]:
        if reset_num_timesteps or self._last_obs is None:  # type: ignore[attr-defined]
            self._discarded_envs.clear()  # the env is reset: no episode is being skipped
        if reset_num_timesteps and getattr(self, "_achieved_goal_moves", None) is not None:
            self._achieved_goal_moves.clear()  # as SB3 clears its episode statistics
        return super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)  # type: ignore[misc]

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])  # type: ignore[attr-defined]
        assert self.replay_buffer is not None

        actor_losses, critic_losses, q_means, target_means, clipped = [], [], [], [], []
        actor_stats: dict[str, list[float]] = {}
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data, n_demo = self._sample_batch(batch_size)

            with th.no_grad():
                next_actions = self.actor_target(replay_data.next_observations)  # type: ignore[attr-defined]
                if self.target_noise_clip > 0 and self.target_policy_noise > 0:
                    # TD3 target policy smoothing (absent in DDPG, where target_noise_clip = 0).
                    noise = th.randn_like(next_actions) * self.target_policy_noise
                    next_actions = (next_actions + noise.clamp(-self.target_noise_clip, self.target_noise_clip)).clamp(-1, 1)
                next_q_values = th.cat(self.critic_target(replay_data.next_observations, next_actions), dim=1)  # type: ignore[attr-defined]
                next_q_values, _ = th.min(next_q_values, dim=1, keepdim=True)
                # n-step batches carry gamma^k per transition (SB3's convention), one-step ones use gamma.
                discounts = self.gamma if replay_data.discounts is None else replay_data.discounts
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
                if self.return_bounds is not None:
                    # Baselines clip_return: a return can never leave [r_min, r_max] / (1 - gamma).
                    low, high = self.return_bounds
                    clipped.append(((target_q_values < low) | (target_q_values > high)).float().mean().item())
                    target_q_values = target_q_values.clamp(low, high)
                target_means.append(target_q_values.mean().item())

            current_q_values = self.critic(replay_data.observations, replay_data.actions)  # type: ignore[attr-defined]
            q_means.append(current_q_values[0].mean().item())
            critic_loss = sum(F.mse_loss(current_q, target_q_values) for current_q in current_q_values)
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()  # type: ignore[attr-defined]
            critic_loss.backward()
            self.critic.optimizer.step()  # type: ignore[attr-defined]

            if self._n_updates % self.policy_delay == 0:
                actor_loss, stats = self._actor_loss(replay_data.observations, replay_data.actions, n_demo)
                for key, value in stats.items():
                    actor_stats.setdefault(key, []).append(value)
                actor_losses.append(actor_loss.item())
                self.actor.optimizer.zero_grad()  # type: ignore[attr-defined]
                actor_loss.backward()
                self.actor.optimizer.step()  # type: ignore[attr-defined]

            if self._n_updates % self.target_update_interval == 0:
                self._update_targets()

        self._log_train_stats(actor_losses, critic_losses, actor_stats, q_means, target_means, clipped)

    def _update_targets(self) -> None:
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)  # type: ignore[attr-defined]
        polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)  # type: ignore[attr-defined]
        polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)  # type: ignore[attr-defined]
        polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)  # type: ignore[attr-defined]

    def _log_train_stats(
        self,
        actor_losses: list[float],
        critic_losses: list[float],
        actor_stats: dict[str, list[float]],
        q_means: list[float],
        target_means: list[float],
        clipped: list[float],
    ) -> None:
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
        for key, values in actor_stats.items():
            self.logger.record(f"train/{key}", np.mean(values))
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/q_mean", np.mean(q_means))
        self.logger.record("train/target_q_mean", np.mean(target_means))
        if clipped:
            self.logger.record("train/clipped_target_fraction", np.mean(clipped))
        normalizer = self.policy.normalizer
        self.logger.record("train/normalizer/obs_mean_abs", normalizer.obs.mean.abs().mean().item())
        self.logger.record("train/normalizer/obs_std_mean", normalizer.obs.std.mean().item())
        self.logger.record("train/normalizer/goal_std_mean", normalizer.goal.std.mean().item())
        self.logger.record("train/normalizer/count", normalizer.obs.count.item(), exclude="tensorboard")
