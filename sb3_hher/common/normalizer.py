"""Running observation / goal normalisation kept inside the policy (baselines ``her/normalizer.py``).

The statistics are registered ``torch`` buffers, so ``policy.state_dict()`` and ``model.save()`` carry them,
and ``predict`` normalises exactly as training does. Unlike ``VecNormalize``, the goal statistics are fed
with the *relabelled* goals the learner actually trains on.
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn


def _refresh_after_load(module: RunningNormalizer, _incompatible_keys: object) -> None:
    # A module-level function (not a lambda), so that policies holding normalisers can be pickled whole.
    module._refresh()


class RunningNormalizer(nn.Module):
    """
    Running mean / variance of a vector quantity, and the baselines normalisation built on it.

    ``normalize(x) = clip((clip(x, +-clip_obs) - mean) / max(std, eps), +-clip_range)``.

    Statistics are exact (Chan et al.'s parallel update in float64): after any sequence of ``update``
    calls, ``mean`` and ``var`` equal ``numpy.mean``/``numpy.var`` of all the (``clip_obs``-clipped) data seen.
    Before the first update the normaliser is the identity (mean 0, variance 1).

    :param size: Dimension of the normalised vectors
    :param eps: Lower bound on the standard deviation (baselines ``norm_eps``)
    :param clip_range: Normalised values are clipped to ``[-clip_range, clip_range]`` (baselines ``norm_clip``)
    :param clip_obs: Raw values are clipped to ``[-clip_obs, clip_obs]`` before anything else (baselines ``clip_obs``)
    """

    mean: th.Tensor
    var: th.Tensor
    count: th.Tensor
    _mean32: th.Tensor
    _std32: th.Tensor

    def __init__(self, size: int, eps: float = 0.01, clip_range: float = 5.0, clip_obs: float = 200.0) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"RunningNormalizer needs a positive size, got {size}")
        if eps <= 0 or clip_range <= 0 or clip_obs <= 0:
            raise ValueError(f"eps, clip_range and clip_obs must be positive, got {eps}, {clip_range}, {clip_obs}")
        self.size = size
        self.eps = eps
        self.clip_range = clip_range
        self.clip_obs = clip_obs
        self.register_buffer("mean", th.zeros(size, dtype=th.float64))
        self.register_buffer("var", th.ones(size, dtype=th.float64))
        self.register_buffer("count", th.zeros((), dtype=th.float64))
        # float32 copies used by forward, refreshed after every change of the statistics (not saved: derived).
        self.register_buffer("_mean32", th.zeros(size), persistent=False)
        self.register_buffer("_std32", th.ones(size), persistent=False)
        self._refresh()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    @th.no_grad()
    def _refresh(self) -> None:
        self._mean32.copy_(self.mean)
        self._std32.copy_(self.std)

    @property
    def std(self) -> th.Tensor:
        """Standard deviation used to normalise: ``sqrt(max(var, eps^2))``."""
        return th.sqrt(th.clamp(self.var, min=self.eps**2))

    @th.no_grad()
    def update(self, values: np.ndarray | th.Tensor) -> None:
        """
        Add a batch of raw values to the statistics.

        :param values: Array of shape ``(n, size)`` (or ``(size,)``)
        """
        batch = th.as_tensor(np.asarray(values) if not isinstance(values, th.Tensor) else values, dtype=th.float64)
        batch = batch.reshape(-1, self.size).to(self.mean.device)
        if batch.shape[0] == 0:
            return
        if not th.isfinite(batch).all():
            raise ValueError("RunningNormalizer.update received NaN or inf values")
        batch = batch.clamp(-self.clip_obs, self.clip_obs)
        n = float(batch.shape[0])
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        # Chan et al. (1979): combine the sums of squared deviations of both parts.
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.fill_(total)
        self._refresh()

    def forward(self, values: th.Tensor) -> th.Tensor:
        """
        Normalise ``values`` (any leading dimensions, last one of size ``size``).

        :param values: Raw values
        :return: Normalised and clipped values, in the dtype of ``values``
        """
        clipped = values.clamp(-self.clip_obs, self.clip_obs)
        normalized = (clipped - self._mean32.to(values.dtype)) / self._std32.to(values.dtype)
        return normalized.clamp(-self.clip_range, self.clip_range)

    def extra_repr(self) -> str:
        return f"size={self.size}, eps={self.eps}, clip_range={self.clip_range}, clip_obs={self.clip_obs}"


class GoalObsNormalizer(nn.Module):
    """
    The pair of normalisers of a goal-conditioned agent: one for ``observation``, one for goals
    (baselines ``o_stats`` and ``g_stats``).

    :param obs_dim: Size of the ``observation`` vector
    :param goal_dim: Size of the goal vectors
    :param eps: Lower bound on the standard deviation
    :param clip_range: Normalised values are clipped to ``[-clip_range, clip_range]``
    :param clip_obs: Raw values are clipped to ``[-clip_obs, clip_obs]`` first
    """

    def __init__(self, obs_dim: int, goal_dim: int, eps: float = 0.01, clip_range: float = 5.0, clip_obs: float = 200.0):
        super().__init__()
        self.obs = RunningNormalizer(obs_dim, eps=eps, clip_range=clip_range, clip_obs=clip_obs)
        self.goal = RunningNormalizer(goal_dim, eps=eps, clip_range=clip_range, clip_obs=clip_obs)

    def update(self, observations: np.ndarray, goals: np.ndarray) -> None:
        """
        :param observations: Raw ``observation`` vectors, shape ``(n, obs_dim)``
        :param goals: Goals the learner trains on (relabelled ones included), shape ``(n, goal_dim)``
        """
        self.obs.update(observations)
        self.goal.update(goals)
