"""TQC + HER with baselines' normalisation and return clipping: the one-env agent for the Fetch object tasks."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from sb3_contrib import TQC
from sb3_contrib.common.utils import quantile_huber_loss
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import polyak_update

from sb3_hher.common.goal_env import register_env_id
from sb3_hher.common.policies import GoalTQCPolicy
from sb3_hher.her.core import AUTO, BaselinesHerMixin

SelfHerTQC = TypeVar("SelfHerTQC", bound="HerTQC")


class HerTQC(BaselinesHerMixin, TQC):
    """
    Truncated Quantile Critics (sb3-contrib's ``TQC``) with Hindsight Experience Replay and the pieces of baselines'
    HER that are not specific to a deterministic actor: running observation/goal normalisation inside the policy
    (fed with relabelled goals, saved with the model), TD targets clipped to the range of soft returns
    (``clip_return``, applied to every target quantile), optional uniformly random actions (``random_eps``), the
    goal-env checks, ``gamma = 1 - 1/T``, n-step returns with relabelled goals and the non-finite observation
    handling of ``HerDDPG``.

    TQC's stochastic actor with a learned entropy bonus keeps exploring where DDPG's deterministic actor collapses
    (on FetchPush with one env, see the README): this is the package's one-env agent for Push, PickAndPlace and
    Slide. Papers: TQC https://arxiv.org/abs/2005.04269, HER https://arxiv.org/abs/1707.01495.

    Defaults are the one-env setting of the package's FetchPush benchmark: 3 x 256 networks, 2 critics of 25
    quantiles (2 dropped per critic), Adam 1e-3, batch 256, one gradient step per env step, ``tau=0.005`` every
    step, 1,000 uniformly random warm-up steps, future relabelling with k = 4.

    :param policy: The policy model ("MultiInputPolicy" or a ``GoalTQCPolicy`` subclass)
    :param env: A goal-conditioned env (Dict observation with observation/achieved_goal/desired_goal and a
        vectorised ``compute_reward``), or its registered id
    :param learning_rate: Adam learning rate of actor, critics and entropy coefficient
    :param buffer_size: Replay buffer size in transitions
    :param learning_starts: Steps of uniformly random actions before learning starts
    :param batch_size: Minibatch size of each gradient step
    :param tau: Polyak coefficient of each target update
    :param gamma: Discount factor; ``None`` means ``1 - 1/T`` with ``T`` the env's time limit (baselines)
    :param train_freq: Collect this much between two training phases
    :param gradient_steps: Gradient steps per training phase
    :param target_update_interval: Gradient steps between target updates, counted over the whole run (sb3-contrib's
        TQC counts within each training phase, so with ``gradient_steps=1`` it updates every step whatever the
        interval; the two agree at the default of 1)
    :param ent_coef: Entropy coefficient (``"auto"`` learns it, ``"auto_0.1"`` starts it at 0.1)
    :param target_entropy: Target entropy of the learned coefficient (``"auto"``: minus the action dimension)
    :param top_quantiles_to_drop_per_net: Quantiles dropped per critic in the target (TQC's d)
    :param clip_return: Clip every target quantile to the range of soft returns: ``"auto"`` starts from
        ``[r_min, r_max] / (1 - gamma)`` of the env's reward range (``[-1/(1-gamma), 0]`` on Fetch), a number ``c``
        from ``[-c, 0]`` (``[-c, inf)`` with ``clip_positive_returns=False``), and the bounds are widened by the
        entropy bonus the targets contain (``soft_return_bounds``); ``None`` for no clipping
    :param clip_positive_returns: With a numeric ``clip_return``, clip targets above at 0
    :param random_eps: Probability of a uniformly random action while collecting (baselines ``random_eps``), or an
        SB3 schedule of it; 0 by default (the entropy bonus explores)
    :param n_sampled_goal: Relabelled transitions per real one (baselines ``replay_k``)
    :param goal_selection_strategy: Relabelling strategy ("future", "final" or "episode")
    :param n_steps: Length of the TD returns with relabelled goals (see ``HindsightReplayBuffer``)
    :param non_finite: ``"raise"`` on NaN/inf in an observation or reward, or ``"skip"`` that env's episode
    :param action_noise: Extra exploration noise (none by default: the policy is stochastic)
    :param use_sde: Generalised state-dependent exploration (sb3-contrib)
    :param sde_sample_freq: Noise matrix resampling frequency with ``use_sde``
    :param use_sde_at_warmup: gSDE instead of uniform actions during warm-up
    :param replay_buffer_class: A ``HindsightReplayBuffer`` subclass (default ``HindsightReplayBuffer``)
    :param replay_buffer_kwargs: Keyword arguments of the replay buffer
    :param optimize_memory_usage: Not supported with hindsight relabelling
    :param stats_window_size: Episodes averaged in the rollout logs
    :param tensorboard_log: TensorBoard log folder (None: no logging)
    :param policy_kwargs: Policy keyword arguments (``net_arch``, ``n_quantiles``, ``n_critics``, ``clip_obs``,
        ``norm_eps``, ``norm_clip``, ...)
    :param verbose: 0 none, 1 info, 2 debug
    :param seed: Seed of the pseudo random generators
    :param device: Device (cpu, cuda, auto)
    :param _init_setup_model: Whether to build the networks on creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MultiInputPolicy": GoalTQCPolicy}
    policy: GoalTQCPolicy  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[GoalTQCPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float | None = None,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        target_update_interval: int = 1,
        ent_coef: str | float = "auto",
        target_entropy: str | float = "auto",
        top_quantiles_to_drop_per_net: int = 2,
        clip_return: float | str | None = AUTO,
        clip_positive_returns: bool = True,
        random_eps: float | Schedule = 0.0,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        n_steps: int = 1,
        non_finite: str = "raise",
        action_noise: ActionNoise | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
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
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            top_quantiles_to_drop_per_net=top_quantiles_to_drop_per_net,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            # A copy: SB3 writes use_sde into the dict, which a caller may share with a DDPG/TD3 model.
            policy_kwargs=None if policy_kwargs is None else dict(policy_kwargs),
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self._init_her(
            gamma=gamma,
            target_update_interval=target_update_interval,
            action_l2=0.0,
            clip_return=clip_return,
            clip_positive_returns=clip_positive_returns,
            random_eps=random_eps,
            noise_eps=0.0,
            n_sampled_goal=n_sampled_goal,
            goal_selection_strategy=goal_selection_strategy,
            demo_file=None,
            demo_batch_size=0,
            bc_loss=False,
            q_filter=False,
            prm_loss_weight=0.0,
            aux_loss_weight=0.0,
            non_finite=non_finite,
        )
        if _init_setup_model:
            self._setup_model()

    def train(self, gradient_steps: int, batch_size: int = 256) -> None:
        """
        TQC's update (sb3-contrib), with every target quantile clipped to the soft return bounds and the Q, target and
        normaliser statistics of ``HerDDPG`` logged.

        :param gradient_steps: Number of gradient steps
        :param batch_size: Minibatch size
        """
        self.policy.set_training_mode(True)
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        assert self.replay_buffer is not None

        actor_losses, critic_losses, q_means, target_means, clipped = [], [], [], [], []
        ent_coefs, ent_coef_losses = [], []
        n_target_quantiles = self.critic.quantiles_total - self.top_quantiles_to_drop_per_net * self.critic.n_critics
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay_data, _ = self._sample_batch(batch_size)
            discounts = self.gamma if replay_data.discounts is None else replay_data.discounts
            if self.use_sde:
                self.actor.reset_noise()

            actions_pi, log_prob = self.actor.action_log_prob(replay_data.observations)
            log_prob = log_prob.reshape(-1, 1)
            if self.ent_coef_optimizer is not None and self.log_ent_coef is not None:
                ent_coef = th.exp(self.log_ent_coef.detach())
                # The coefficient is fitted on its own (log_prob detached), as in SAC/TQC.
                ent_coef_loss = -(self.log_ent_coef * (log_prob + self.target_entropy).detach()).mean()  # type: ignore[operator]
                ent_coef_losses.append(ent_coef_loss.item())
                self.ent_coef_optimizer.zero_grad()
                ent_coef_loss.backward()
                self.ent_coef_optimizer.step()
            else:
                ent_coef = self.ent_coef_tensor
            ent_coefs.append(ent_coef.item())

            with th.no_grad():
                next_actions, next_log_prob = self.actor.action_log_prob(replay_data.next_observations)
                next_quantiles = self.critic_target(replay_data.next_observations, next_actions)
                # Truncation: sort the pooled quantiles of all critics, drop the top d per critic.
                next_quantiles, _ = th.sort(next_quantiles.reshape(len(next_actions), -1))
                entropy_bonus = -ent_coef * next_log_prob.reshape(-1, 1)
                next_quantiles = next_quantiles[:, :n_target_quantiles] + entropy_bonus
                target_quantiles = replay_data.rewards + (1 - replay_data.dones) * discounts * next_quantiles
                if self.return_bounds is not None:
                    low, high = self.soft_return_bounds(float(entropy_bonus.mean().item()))
                    clipped.append(((target_quantiles < low) | (target_quantiles > high)).float().mean().item())
                    target_quantiles = target_quantiles.clamp(low, high)
                target_means.append(target_quantiles.mean().item())
                target_quantiles = target_quantiles.unsqueeze(dim=1)  # (batch, 1, target quantiles)

            current_quantiles = self.critic(replay_data.observations, replay_data.actions)
            q_means.append(current_quantiles.mean().item())
            critic_loss = quantile_huber_loss(current_quantiles, target_quantiles, sum_over_quantiles=False)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            q_pi = self.critic(replay_data.observations, actions_pi).mean(dim=2).mean(dim=1, keepdim=True)
            actor_loss = (ent_coef * log_prob - q_pi).mean()
            actor_losses.append(actor_loss.item())
            self.actor.optimizer.zero_grad()
            actor_loss.backward()
            self.actor.optimizer.step()

            if self._n_updates % self.target_update_interval == 0:
                self._update_targets()

        self._log_train_stats(actor_losses, critic_losses, {}, q_means, target_means, clipped)
        self.logger.record("train/ent_coef", np.mean(ent_coefs))
        if ent_coef_losses:
            self.logger.record("train/ent_coef_loss", np.mean(ent_coef_losses))

    def soft_return_bounds(self, entropy_bonus: float) -> tuple[float, float]:
        """
        Bounds of a soft (entropy-regularised) return. A soft Q-value is ``sum_t gamma^t r_t`` plus
        ``sum_{t>=1} gamma^t b_t`` with ``b = -ent_coef * log pi`` the entropy bonus of each next step, so with rewards
        in ``[r_min, r_max]`` and a bonus ``b`` per step it lies in
        ``[r_min + gamma * min(0, b), r_max + gamma * max(0, b)] / (1 - gamma)``. Clipping to the reward-only bounds
        would be wrong both ways: early (``ent_coef`` near 1, the bonus positive) nearly every target would be cut at
        0, and once the entropy reaches its negative target every hopeless state's value (below
        ``r_min / (1 - gamma)``) would be flattened to one constant, removing the critic's action gradient there.

        :param entropy_bonus: The per-step bonus ``b`` (``train`` passes the batch mean of ``-ent_coef * log pi(a'|s')``)
        :return: ``(low, high)``, ``return_bounds`` widened by the bonus
        """
        assert self.return_bounds is not None
        low, high = self.return_bounds
        widening = self.gamma / (1.0 - self.gamma)
        return low + widening * min(0.0, entropy_bonus), high + widening * max(0.0, entropy_bonus)

    def _update_targets(self) -> None:
        # TQC has target critics only (the target action comes from the online actor).
        polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
        polyak_update(self.batch_norm_stats, self.batch_norm_stats_target, 1.0)

    def learn(
        self: SelfHerTQC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "HerTQC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfHerTQC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
