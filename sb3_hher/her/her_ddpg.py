"""DDPG + HER as OpenAI baselines runs it (``baselines/her``), as an SB3 algorithm."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.ddpg import DDPG

from sb3_hher.common.goal_env import register_env_id
from sb3_hher.common.policies import GoalPolicy
from sb3_hher.her.core import AUTO, BaselinesHerMixin

SelfHerDDPG = TypeVar("SelfHerDDPG", bound="HerDDPG")


class HerDDPG(BaselinesHerMixin, DDPG):
    """
    Deep Deterministic Policy Gradient with Hindsight Experience Replay, as OpenAI baselines' ``her``:
    clipped returns, running observation/goal normalisation fed with relabelled goals, action L2 penalty,
    random-action exploration and per-cycle target updates.

    Papers: HER https://arxiv.org/abs/1707.01495, Multi-Goal RL https://arxiv.org/abs/1802.09464,
    DDPG https://arxiv.org/abs/1509.02971

    With no other argument, ``HerDDPG("MultiInputPolicy", "FetchPush-v4")`` is baselines' configuration for one
    worker: 3 x 256 ReLU networks, Adam 1e-3, polyak 0.95 once per cycle (``tau=0.05``,
    ``target_update_interval=40``), cycles of 2 episodes followed by 40 gradient steps of 256 transitions,
    future relabelling with k = 4, ``gamma = 1 - 1/T``, targets clipped to ``[-1/(1-gamma), 0]``,
    ``action_l2=1``, ``random_eps=0.3``, ``noise_eps=0.2``, ``clip_obs=200``, ``norm_eps=0.01``, ``norm_clip=5``.
    Baselines reaches its published Fetch results with 19 MPI workers; one worker of it is slow on Push
    (see the README for the one-env recipe).

    :param policy: The policy model ("MultiInputPolicy" or a ``GoalPolicy`` subclass)
    :param env: A goal-conditioned env (Dict observation with observation/achieved_goal/desired_goal and a
        vectorised ``compute_reward``), or its registered id
    :param learning_rate: Adam learning rate of actor and critic (baselines ``Q_lr``/``pi_lr``)
    :param buffer_size: Replay buffer size in transitions
    :param learning_starts: Steps of uniformly random actions before learning starts
    :param batch_size: Minibatch size of each gradient step
    :param tau: Polyak coefficient of each target update (baselines ``1 - polyak``)
    :param gamma: Discount factor; ``None`` means ``1 - 1/T`` with ``T`` the env's time limit (baselines)
    :param train_freq: Collect this much between two training phases (baselines: 2 episodes per cycle)
    :param gradient_steps: Gradient steps per training phase (baselines ``n_batches``)
    :param target_update_interval: Gradient steps between target updates (baselines: once per cycle,
        i.e. ``n_batches``)
    :param action_l2: Weight of ``mean(pi(s)^2)`` in the actor loss (baselines ``action_l2``)
    :param clip_return: Clip TD targets: ``"auto"`` to ``[r_min, r_max] / (1 - gamma)`` from the env's reward
        range (``[-1/(1-gamma), 0]`` on Fetch, as baselines), a number ``c`` for ``[-c, 0]`` (``[-c, inf)`` with
        ``clip_positive_returns=False``), or ``None`` for no clipping
    :param clip_positive_returns: With a numeric ``clip_return``, clip targets above at 0 (baselines
        ``clip_pos_returns``)
    :param random_eps: Probability of a uniformly random action while collecting (baselines ``random_eps``), or
        an SB3 schedule of it over the remaining progress, e.g. ``LinearSchedule(1.0, 0.3, 0.3)`` from
        ``stable_baselines3.common.utils`` (uniform actions at first, 0.3 after 30 % of ``total_timesteps``).
        As SB3's learning-rate schedules, it follows the progress of one ``learn`` call (the benchmark runner
        makes it follow the whole budget across its chunks)
    :param noise_eps: Std of the Gaussian exploration noise, as a fraction of the action range (baselines
        ``noise_eps``); used when ``action_noise`` is None
    :param n_sampled_goal: Relabelled transitions per real one (baselines ``replay_k``)
    :param goal_selection_strategy: Relabelling strategy ("future" as baselines, "final" or "episode")
    :param n_steps: Length of the TD returns (SB3's ``n_steps``, here with relabelled goals): 1 is baselines'
        one-step target; ``n > 1`` sums up to ``n`` rewards of the episode, recomputed for the transition's goal,
        and bootstraps with ``gamma^n`` (see ``HindsightReplayBuffer``)
    :param demo_file: Demonstrations to learn from (baselines ``demo_file``; baselines' npz layout or
        ``sb3_hher.demos``' format, see ``python -m sb3_hher.demos``); they fill a separate relabelled buffer
    :param demo_batch_size: Demonstration transitions in each batch of ``batch_size`` (baselines ``demo_batch_size``)
    :param bc_loss: Add the behaviour-cloning loss on demonstration transitions to the actor loss (baselines ``bc_loss``)
    :param q_filter: Clone a demo action only where the critic values it above the policy's (baselines ``q_filter``)
    :param prm_loss_weight: Weight of the usual actor loss when ``bc_loss`` (baselines ``prm_loss_weight``)
    :param aux_loss_weight: Weight of the behaviour-cloning loss (baselines ``aux_loss_weight``)
    :param non_finite: What to do when the env returns NaN or inf in an observation or reward: ``"raise"`` a
        ``NonFiniteObservationError`` naming the key, env and step, or ``"skip"``: warn, end the stored episode at the
        last finite step and learn nothing from the rest of that env's episode
    :param action_noise: Custom exploration noise (replaces ``noise_eps``)
    :param replay_buffer_class: A ``HindsightReplayBuffer`` subclass (default ``HindsightReplayBuffer``)
    :param replay_buffer_kwargs: Keyword arguments of the replay buffer
    :param optimize_memory_usage: Not supported with hindsight relabelling
    :param tensorboard_log: TensorBoard log folder (None: no logging)
    :param policy_kwargs: Policy keyword arguments (``net_arch``, ``clip_obs``, ``norm_eps``, ``norm_clip``, ...)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: Seed of the pseudo random generators
    :param device: Device (cpu, cuda, auto)
    :param _init_setup_model: Whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": GoalPolicy}
    policy: GoalPolicy

    def __init__(
        self,
        policy: str | type[GoalPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.05,
        gamma: float | None = None,
        train_freq: int | tuple[int, str] = (2, "episode"),
        gradient_steps: int = 40,
        target_update_interval: int = 40,
        action_l2: float = 1.0,
        clip_return: float | str | None = AUTO,
        clip_positive_returns: bool = True,
        random_eps: float | Schedule = 0.3,
        noise_eps: float = 0.2,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        n_steps: int = 1,
        demo_file: str | None = None,
        demo_batch_size: int = 128,
        bc_loss: bool = False,
        q_filter: bool = False,
        prm_loss_weight: float = 0.001,
        aux_loss_weight: float = 0.0078,
        non_finite: str = "raise",
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
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
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=0.99 if gamma is None else gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            n_steps=n_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self._init_her(
            gamma=gamma,
            target_update_interval=target_update_interval,
            action_l2=action_l2,
            clip_return=clip_return,
            clip_positive_returns=clip_positive_returns,
            random_eps=random_eps,
            noise_eps=noise_eps,
            n_sampled_goal=n_sampled_goal,
            goal_selection_strategy=goal_selection_strategy,
            demo_file=demo_file,
            demo_batch_size=demo_batch_size,
            bc_loss=bc_loss,
            q_filter=q_filter,
            prm_loss_weight=prm_loss_weight,
            aux_loss_weight=aux_loss_weight,
            non_finite=non_finite,
        )
        if _init_setup_model:
            self._setup_model()

    def learn(
        self: SelfHerDDPG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "HerDDPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfHerDDPG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
