"""Named hyperparameter sets of the flat agents, shared by the benchmark runner, the examples and the zoo configs.

Each preset is the keyword arguments of ``HerDDPG``/``HerTD3``. ``vanilla_kwargs`` turns one into the closest
vanilla SB3 (``DDPG``/``TD3`` + ``HerReplayBuffer``) configuration: same networks, learning rate, batch, update
schedule, discount, relabelling and Gaussian noise, without what sb3-hher adds.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

# One env on a 2-core CPU: one update of 256 transitions per env step (2.5x baselines' one-worker replay ratio, half
# of rl-zoo3's TQC agent), target networks moved every step with tau 0.005 (TQC's one-env setting), 1,000 random
# warm-up steps.
_ONE_UPDATE_PER_STEP: dict[str, Any] = {
    "batch_size": 256,
    "train_freq": 1,
    "gradient_steps": 1,
    "target_update_interval": 1,
    "tau": 0.005,
    "learning_starts": 1000,
}

PRESETS: dict[str, dict[str, Any]] = {
    # baselines her/experiment/config.py DEFAULT_PARAMS, one worker (2 episodes + 40 updates of 256 per cycle).
    "baselines": {},
    # HerDDPG/HerTD3 on the schedule above: about 15 ms per FetchPush step on one CPU thread (3 x 256 networks).
    "fetch-one-env": dict(_ONE_UPDATE_PER_STEP),
    # The same schedule with 3 x 512 networks (actor and critic): the first HerDDPG recipe that learned FetchPush with
    # one env here (pilot seed 0: 0.58 at 230k, 0.78 at 270k, docs/benchmarks/pilots), where 3 x 256 stayed at the
    # never-touch level; about 40 ms per FetchPush step on one CPU thread.
    "fetch-wide-one-env": {**_ONE_UPDATE_PER_STEP, "policy_kwargs": {"net_arch": [512, 512, 512]}},
    # "Virtual workers" for FetchPush with one env: the per-update dynamics of baselines with 8 MPI workers (the
    # TianhongDai port solves Push in ~40k updates that way), i.e. batches of 8 x 256 = 2048, target networks moved
    # with polyak 0.95 once every 40 updates, on the data of one env: 10 updates per 50-step episode (410 replayed
    # transitions per env step, about 20 ms per FetchPush step on one CPU thread with 3 x 256 networks).
    "fetch-push-one-env": {
        "batch_size": 2048,
        "train_freq": (1, "episode"),
        "gradient_steps": 10,
        "target_update_interval": 40,
        "tau": 0.05,
        "learning_starts": 1000,
    },
    # HerTQC on the same schedule, which is its constructor defaults written out: about 37 ms per FetchPush step on
    # one CPU thread (3 x 256 networks, 2 critics of 25 quantiles).
    "tqc-one-env": dict(_ONE_UPDATE_PER_STEP),
}


def get_preset(name: str) -> dict[str, Any]:
    """
    :param name: Name of a preset in ``PRESETS``
    :return: A copy of its keyword arguments
    """
    if name not in PRESETS:
        raise KeyError(f"Unknown preset {name!r}, choose one of {sorted(PRESETS)}")
    return dict(PRESETS[name])


# HerTQC's constructor defaults, which vanilla TQC must share when a preset leaves them out.
TQC_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "buffer_size": 1_000_000,
    "learning_starts": 1000,
    "batch_size": 256,
    "tau": 0.005,
    "train_freq": 1,
    "gradient_steps": 1,
    "target_update_interval": 1,
    "ent_coef": "auto",
    "target_entropy": "auto",
    "top_quantiles_to_drop_per_net": 2,
    "n_sampled_goal": 4,
    "goal_selection_strategy": "future",
}


# HerTQC keys not passed to vanilla TQC as they are: what HerTQC adds (left out on purpose), the relabelling settings
# (they go to HerReplayBuffer's kwargs), and gamma / policy_kwargs (resolved and cleaned below).
HER_TQC_ONLY = {
    "clip_return",
    "clip_positive_returns",
    "random_eps",
    "non_finite",
    "n_sampled_goal",
    "goal_selection_strategy",
    "gamma",
    "policy_kwargs",
}


def _resolve_gamma(merged: dict[str, Any], max_episode_steps: int | None) -> float:
    gamma = merged.get("gamma")
    if gamma is None:
        if max_episode_steps is None:
            raise ValueError("gamma=None needs the env's time limit")
        gamma = 1.0 - 1.0 / max_episode_steps
    return float(gamma)


def _vanilla_policy_kwargs(merged: dict[str, Any]) -> dict[str, Any]:
    policy_kwargs = dict(merged.get("policy_kwargs", {}))
    policy_kwargs.setdefault("net_arch", [256, 256, 256])
    for key in ("clip_obs", "norm_eps", "norm_clip"):
        policy_kwargs.pop(key, None)
    return policy_kwargs


def _vanilla_replay_buffer_kwargs(merged: dict[str, Any]) -> dict[str, Any]:
    """
    :param merged: sb3-hher keyword arguments
    :return: ``replay_buffer_kwargs`` of SB3's ``HerReplayBuffer``: the relabelling settings, plus those of the given
        ``replay_buffer_kwargs`` that ``HerReplayBuffer`` also takes; ``HindsightReplayBuffer``'s own (episode
        priorities, ...) are what sb3-hher adds, left out like the normaliser
    """
    import inspect

    accepted = set(inspect.signature(HerReplayBuffer).parameters) - {"buffer_size", "observation_space", "action_space", "env"}
    given = dict(merged.get("replay_buffer_kwargs") or {})
    # As in sb3-hher's algorithms, relabelling settings given in replay_buffer_kwargs win over the constructor's.
    return {
        "n_sampled_goal": merged["n_sampled_goal"],
        "goal_selection_strategy": merged["goal_selection_strategy"],
        **{key: value for key, value in given.items() if key in accepted},
    }


def vanilla_tqc_kwargs(her_kwargs: dict[str, Any], max_episode_steps: int | None) -> dict[str, Any]:
    """
    The vanilla sb3-contrib ``TQC`` + SB3 ``HerReplayBuffer`` configuration matching a ``HerTQC`` one: same
    networks, quantiles, learning rate, batch, update schedule, entropy settings, discount and relabelling,
    without the normaliser, the return clipping and the random actions.

    :param her_kwargs: Keyword arguments of ``HerTQC`` (a preset, possibly with overrides)
    :param max_episode_steps: The env's time limit, to resolve ``gamma = 1 - 1/T`` like sb3-hher does
    :return: Keyword arguments of sb3-contrib's ``TQC``
    """
    import inspect

    from sb3_contrib import TQC

    merged = {**TQC_DEFAULTS, **her_kwargs}
    if int(merged.get("n_steps", 1)) > 1:
        raise ValueError("n_steps > 1 has no vanilla counterpart: SB3 ignores n_steps with HerReplayBuffer")
    unknown = set(merged) - set(inspect.signature(TQC).parameters) - HER_TQC_ONLY
    if unknown:
        raise ValueError(f"HerTQC settings {sorted(unknown)} have no vanilla TQC counterpart")
    passed = {key: value for key, value in merged.items() if key not in HER_TQC_ONLY and key != "n_steps"}
    return {
        **passed,
        "gamma": _resolve_gamma(merged, max_episode_steps),
        "replay_buffer_class": HerReplayBuffer,
        "replay_buffer_kwargs": _vanilla_replay_buffer_kwargs(merged),
        "policy_kwargs": _vanilla_policy_kwargs(merged),
    }


def vanilla_kwargs(her_kwargs: dict[str, Any], n_actions: int, max_episode_steps: int | None) -> dict[str, Any]:
    """
    The vanilla SB3 configuration matching an sb3-hher one (same networks and schedule, SB3's own machinery).

    ``tau`` is passed as it is: SB3's ``DDPG``/``TD3`` have no ``target_update_interval`` and move their targets by
    ``tau`` after every (delayed) actor update, so with the ``baselines`` defaults (``tau=0.05`` once every 40
    updates in sb3-hher) the vanilla targets move about 40x faster. That is what an SB3 user gets by typing
    baselines' values into SB3, the comparison REFERENCE.md's vanilla anchors make; a per-update equivalent would be
    ``1 - (1 - tau) ** (1 / target_update_interval)``.

    :param her_kwargs: Keyword arguments of ``HerDDPG``/``HerTD3`` (a preset, possibly with overrides)
    :param n_actions: Action dimension (for the Gaussian noise)
    :param max_episode_steps: The env's time limit, to resolve ``gamma = 1 - 1/T`` like sb3-hher does
    :return: Keyword arguments of SB3's ``DDPG``/``TD3``
    """
    import numpy as np

    defaults = {
        "learning_rate": 1e-3,
        "buffer_size": 1_000_000,
        "learning_starts": 100,
        "batch_size": 256,
        "tau": 0.05,
        "train_freq": (2, "episode"),
        "gradient_steps": 40,
        "noise_eps": 0.2,
        "n_sampled_goal": 4,
        "goal_selection_strategy": "future",
    }
    merged = {**defaults, **her_kwargs}
    gamma = _resolve_gamma(merged, max_episode_steps)
    policy_kwargs = _vanilla_policy_kwargs(merged)
    return {
        "learning_rate": merged["learning_rate"],
        "buffer_size": merged["buffer_size"],
        "learning_starts": merged["learning_starts"],
        "batch_size": merged["batch_size"],
        "tau": merged["tau"],
        "gamma": gamma,
        "train_freq": merged["train_freq"],
        "gradient_steps": merged["gradient_steps"],
        "action_noise": NormalActionNoise(np.zeros(n_actions), merged["noise_eps"] * np.ones(n_actions)),
        "replay_buffer_class": HerReplayBuffer,
        "replay_buffer_kwargs": _vanilla_replay_buffer_kwargs(merged),
        "policy_kwargs": policy_kwargs,
    }
