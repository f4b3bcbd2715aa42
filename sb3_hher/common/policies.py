"""Goal-conditioned actor-critic policy with the running normaliser inside (baselines ``actor_critic.py``)."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.td3.policies import TD3Policy
from sb3_contrib.tqc.policies import TQCPolicy
from torch import nn

from sb3_hher.common.goal_env import check_goal_observation_space
from sb3_hher.common.normalizer import GoalObsNormalizer


class NormalizedGoalExtractor(BaseFeaturesExtractor):
    """
    Features ``[normalize(observation), normalize(desired_goal)]``: the input of baselines' actor and critic.
    ``achieved_goal`` is not fed to the networks (it is a function of ``observation`` in goal envs).

    :param observation_space: Dict observation space of a goal-conditioned env
    :param normalizer: The policy's normaliser, shared by every network of the policy
    """

    def __init__(self, observation_space: spaces.Dict, normalizer: GoalObsNormalizer) -> None:
        obs_dim, goal_dim = check_goal_observation_space(observation_space)
        super().__init__(observation_space, features_dim=obs_dim + goal_dim)
        self.normalizer = normalizer

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return th.cat(
            [self.normalizer.obs(observations["observation"]), self.normalizer.goal(observations["desired_goal"])], dim=1
        )


def _with_layer_norm(mlp: nn.Sequential) -> nn.Sequential:
    """
    :param mlp: An SB3 ``create_mlp`` network (Linear, activation, ..., Linear)
    :return: The same layers with a ``LayerNorm`` after each hidden ``Linear``
    """
    layers = list(mlp)
    last_linear = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear))
    normed: list[nn.Module] = []
    for i, layer in enumerate(layers):
        normed.append(layer)
        if isinstance(layer, nn.Linear) and i != last_linear:
            normed.append(nn.LayerNorm(layer.out_features))
    return nn.Sequential(*normed)


class _GoalNormalizerMixin:
    """
    What every goal policy of the package shares: one ``GoalObsNormalizer`` (``self.normalizer``, a submodule, so
    its statistics are saved with the weights) built before the networks, and every features extractor reading
    through it, as in baselines where the target networks use the same ``o_stats``/``g_stats``.
    """

    _normalizer_args: tuple[float, float, float]
    normalizer: GoalObsNormalizer
    observation_space: spaces.Space
    features_extractor_class: type[BaseFeaturesExtractor]
    features_extractor_kwargs: dict[str, Any]

    @property
    def clip_obs(self) -> float:
        return self._normalizer_args[0]

    @property
    def norm_eps(self) -> float:
        return self._normalizer_args[1]

    @property
    def norm_clip(self) -> float:
        return self._normalizer_args[2]

    def _build_normalizer(self) -> None:
        obs_dim, goal_dim = check_goal_observation_space(self.observation_space)
        self.normalizer = GoalObsNormalizer(
            obs_dim, goal_dim, eps=self.norm_eps, clip_range=self.norm_clip, clip_obs=self.clip_obs
        )

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        return self.features_extractor_class(
            self.observation_space,
            normalizer=self.normalizer,
            **self.features_extractor_kwargs,  # type: ignore[call-arg]
        )

    def _normalizer_constructor_parameters(self) -> dict[str, Any]:
        return {"clip_obs": self.clip_obs, "norm_eps": self.norm_eps, "norm_clip": self.norm_clip}


class GoalPolicy(_GoalNormalizerMixin, TD3Policy):
    """
    Actor-critic policy for goal-conditioned DDPG/TD3: SB3's ``TD3Policy`` whose networks all read their
    input through one running normaliser of observation and goal (``self.normalizer``). The normaliser's
    statistics are buffers of the policy, so they are saved, loaded and used by ``predict`` like the weights.

    :param observation_space: Dict observation space of a goal-conditioned env
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param net_arch: Hidden layers of actor and critic (baselines: 3 x 256)
    :param activation_fn: Activation function
    :param clip_obs: Raw observations and goals are clipped to ``+-clip_obs`` (baselines ``clip_obs``)
    :param norm_eps: Minimum standard deviation of the normaliser (baselines ``norm_eps``)
    :param norm_clip: Normalised inputs are clipped to ``+-norm_clip`` (baselines ``norm_clip``)
    :param features_extractor_class: Features extractor, called as ``cls(observation_space, normalizer, **kwargs)``
    :param features_extractor_kwargs: Extra keyword arguments of the features extractor
    :param normalize_images: Unused (goal observations are vectors), kept for SB3's signature
    :param optimizer_class: Optimizer
    :param optimizer_kwargs: Optimizer keyword arguments
    :param n_critics: Number of critics (1 for DDPG, 2 for TD3)
    :param share_features_extractor: Share the features extractor between actor and critic
    :param critic_layer_norm: Insert a ``LayerNorm`` after every hidden layer of the critics (before the
        activation), as the high replay-ratio agents do (mrl, REDQ/DroQ-style critics). Off in baselines.
    """

    normalizer: GoalObsNormalizer

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        clip_obs: float = 200.0,
        norm_eps: float = 0.01,
        norm_clip: float = 5.0,
        features_extractor_class: type[BaseFeaturesExtractor] = NormalizedGoalExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        critic_layer_norm: bool = False,
    ):
        self.critic_layer_norm = critic_layer_norm
        # Needed by _build, which TD3Policy.__init__ calls.
        self._normalizer_args = (clip_obs, norm_eps, norm_clip)
        if net_arch is None:
            net_arch = [256, 256, 256]
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_normalizer()
        super()._build(lr_schedule)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> ContinuousCritic:
        critic = super().make_critic(features_extractor)
        if self.critic_layer_norm:
            for idx, q_net in enumerate(critic.q_networks):
                assert isinstance(q_net, nn.Sequential)
                normed = _with_layer_norm(q_net).to(self.device)
                critic.add_module(f"qf{idx}", normed)  # replaces the registered module of the same name
                critic.q_networks[idx] = normed
        return critic

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(**self._normalizer_constructor_parameters(), critic_layer_norm=self.critic_layer_norm)
        return data


MultiInputPolicy = GoalPolicy


class GoalTQCPolicy(_GoalNormalizerMixin, TQCPolicy):
    """
    Goal-conditioned policy for ``HerTQC``: sb3-contrib's ``TQCPolicy`` (squashed-Gaussian actor, distributional
    critics) whose networks all read their input through one running normaliser of observation and goal
    (``self.normalizer``), as ``GoalPolicy`` does for DDPG/TD3 (``critic_layer_norm`` is ``GoalPolicy``'s only).
    The normaliser's statistics are buffers of the policy: saved, loaded and used by ``predict`` like the weights.

    :param observation_space: Dict observation space of a goal-conditioned env
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule
    :param net_arch: Hidden layers of actor and critics (default 3 x 256)
    :param activation_fn: Activation function
    :param clip_obs: Raw observations and goals are clipped to ``+-clip_obs`` (baselines ``clip_obs``)
    :param norm_eps: Minimum standard deviation of the normaliser (baselines ``norm_eps``)
    :param norm_clip: Normalised inputs are clipped to ``+-norm_clip`` (baselines ``norm_clip``)
    :param n_quantiles: Quantiles per critic (TQC's M)
    :param n_critics: Number of critics (TQC's N)
    :param kwargs: Further ``TQCPolicy`` keyword arguments (``use_sde``, ``log_std_init``, ``optimizer_kwargs``, ...)
    """

    normalizer: GoalObsNormalizer

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        clip_obs: float = 200.0,
        norm_eps: float = 0.01,
        norm_clip: float = 5.0,
        features_extractor_class: type[BaseFeaturesExtractor] = NormalizedGoalExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        n_quantiles: int = 25,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        **kwargs: Any,
    ):
        self._normalizer_args = (clip_obs, norm_eps, norm_clip)
        if net_arch is None:
            net_arch = [256, 256, 256]
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            n_quantiles=n_quantiles,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
            **kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_normalizer()
        super()._build(lr_schedule)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        # TQCPolicy leaves share_features_extractor out: policy.save() / GoalTQCPolicy.load() would lose it.
        data.update(self._normalizer_constructor_parameters(), share_features_extractor=self.share_features_extractor)
        return data
