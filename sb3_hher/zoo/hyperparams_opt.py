"""
Optuna samplers and converters of sb3-hher's algorithms for ``train -optimize`` (rl-zoo3 ``hyperparams_opt.py``).

A sampler suggests values with ``trial.suggest_*`` and returns the algorithm's keyword arguments; the matching
converter turns the values Optuna stored (``trial.params``) back into the same keyword arguments, which is how
zoo's ``--trial-id``/``--storage``/``--study-name`` reloads a tuned configuration. Every sampler therefore ends by
calling its converter on ``trial.params``, so both always agree.

What is tuned (the knobs of baselines' ``her/experiment/config.py`` that matter most with one env):
TD-target clipping (``clip_return``), update schedule (``train_freq`` and gradient steps per env step, baselines
``n_batches`` per cycle), target-network step size (``tau``, applied once per training phase as baselines does
once per cycle), relabelling ratio (``n_sampled_goal``, baselines ``replay_k``), exploration (``noise_eps``,
``random_eps``), learning rate, batch size and network size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

# Hidden layers of actor and critic, by name (the name is what Optuna stores).
NET_ARCHS: dict[str, list[int]] = {
    "3x64": [64, 64, 64],
    "3x128": [128, 128, 128],
    "2x256": [256, 256],
    "3x256": [256, 256, 256],
    "3x512": [512, 512, 512],
}

# Env steps between two training phases; 100 is baselines' cycle of 2 Fetch episodes.
TRAIN_FREQS = [1, 4, 16, 50, 100]
# Gradient steps per env step (gradient_steps = round(train_freq * ratio), at least 1); 0.4 is baselines' 40
# updates per 100 steps, 1.0 the one-env recipe.
UPDATES_PER_STEP = [0.25, 0.4, 0.5, 1.0]

# Subgoal horizons (H in the HAC paper) tried for the hierarchy.
SUBGOAL_HORIZONS = [5, 10, 15, 20, 25]

Sampler = Callable[["optuna.Trial", int, int, dict[str, Any]], dict[str, Any]]


def convert_her_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Keyword arguments of ``HerDDPG``/``HerTD3`` from the values sampled by ``sample_her_params``.

    Values the converter does not know are passed through unchanged (so a sampler can add its own).

    :param sampled_params: ``trial.params`` of a trial of ``sample_her_params``
    :return: Keyword arguments of the algorithm
    """
    params = dict(sampled_params)
    hyperparams: dict[str, Any] = {}
    if "train_freq" in params:
        train_freq = int(params.pop("train_freq"))
        gradient_steps = max(1, round(train_freq * float(params.pop("updates_per_step", 1.0))))
        hyperparams["train_freq"] = train_freq
        hyperparams["gradient_steps"] = gradient_steps
        # Baselines moves the target networks once per cycle, after the cycle's n_batches updates.
        hyperparams["target_update_interval"] = gradient_steps
    if "clip_return" in params:
        hyperparams["clip_return"] = None if params.pop("clip_return") == "none" else "auto"
    if "net_arch" in params:
        hyperparams["policy_kwargs"] = {"net_arch": list(NET_ARCHS[params.pop("net_arch")])}
    hyperparams.update(params)
    return hyperparams


def _suggest_flat(trial: optuna.Trial) -> None:
    """Suggest what every flat learner tunes (learning rate, batch, networks, schedule, tau, clipping, k)."""
    trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True)
    trial.suggest_categorical("batch_size", [128, 256, 512, 1024])
    trial.suggest_categorical("net_arch", list(NET_ARCHS))
    trial.suggest_categorical("train_freq", TRAIN_FREQS)
    trial.suggest_categorical("updates_per_step", UPDATES_PER_STEP)
    trial.suggest_float("tau", 0.002, 0.1, log=True)
    trial.suggest_categorical("clip_return", ["auto", "none"])
    trial.suggest_int("n_sampled_goal", 1, 8)


def _finish_flat(trial: optuna.Trial, hyperparams: dict[str, Any], additional_args: dict[str, Any]) -> dict[str, Any]:
    """Record the derived gradient steps; tune ``n_sampled_goal`` in ``replay_buffer_kwargs`` when a config sets it
    there (those win over the constructor argument)."""
    trial.set_user_attr("gradient_steps", hyperparams["gradient_steps"])
    her_kwargs = additional_args.get("her_kwargs") or {}
    if "n_sampled_goal" in her_kwargs:
        hyperparams["replay_buffer_kwargs"] = {**her_kwargs, "n_sampled_goal": hyperparams["n_sampled_goal"]}
    return hyperparams


def sample_her_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sampler of ``HerDDPG``/``HerTD3`` hyperparameters.

    :param trial: The Optuna trial
    :param n_actions: Action dimension (unused: exploration noise is ``noise_eps``, a fraction of the action range)
    :param n_envs: Number of envs (unused: ``train_freq`` counts calls of the vectorised env's ``step``)
    :param additional_args: Zoo's extra arguments; ``her_kwargs`` is the config's ``replay_buffer_kwargs``
    :return: Keyword arguments of the algorithm
    """
    _suggest_flat(trial)
    trial.suggest_float("noise_eps", 0.0, 0.5)
    trial.suggest_float("random_eps", 0.0, 0.5)
    return _finish_flat(trial, convert_her_params(trial.params), additional_args)


def convert_her_tqc_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Keyword arguments of ``HerTQC`` from the values sampled by ``sample_her_tqc_params``: as ``convert_her_params``,
    but the target critics move after every gradient step (TQC's schedule, ``tau`` sets their speed).

    :param sampled_params: ``trial.params`` of a trial of ``sample_her_tqc_params``
    :return: Keyword arguments of the algorithm
    """
    hyperparams = convert_her_params(sampled_params)
    hyperparams.pop("target_update_interval", None)
    return hyperparams


def sample_her_tqc_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sampler of ``HerTQC`` hyperparameters: learning rate, batch and network size, update schedule, ``tau``, return
    clipping, relabelling ratio, TQC's dropped quantiles per critic and the uniformly random action probability
    (the entropy coefficient is learned).

    :param trial: The Optuna trial
    :param n_actions: Action dimension (unused)
    :param n_envs: Number of envs (unused: ``train_freq`` counts calls of the vectorised env's ``step``)
    :param additional_args: Zoo's extra arguments; ``her_kwargs`` is the config's ``replay_buffer_kwargs``
    :return: Keyword arguments of the algorithm
    """
    _suggest_flat(trial)
    trial.suggest_int("top_quantiles_to_drop_per_net", 0, 5)
    trial.suggest_float("random_eps", 0.0, 0.3)
    return _finish_flat(trial, convert_her_tqc_params(trial.params), additional_args)


# HHER's names for arguments the flat learners call otherwise (used when HHER's constructor has them instead).
HHER_ALIASES = {"noise_eps": "action_noise_std", "random_eps": "random_action_prob"}


def adapt_to_constructor(hyperparams: dict[str, Any], algorithm: type) -> dict[str, Any]:
    """
    Rename sampled arguments to the names ``algorithm`` uses (``HHER_ALIASES``) and drop the derived
    ``target_update_interval`` when the constructor has no such argument.

    :param hyperparams: Keyword arguments produced by ``convert_her_params``
    :param algorithm: The algorithm class they are meant for
    :return: Keyword arguments for ``algorithm``
    """
    accepted = set(inspect.signature(algorithm).parameters)
    adapted = dict(hyperparams)
    for name, alias in HHER_ALIASES.items():
        if name in adapted and name not in accepted and alias in accepted:
            adapted[alias] = adapted.pop(name)
    if "target_update_interval" not in accepted:
        adapted.pop("target_update_interval", None)
    return adapted


def convert_hher_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """
    Keyword arguments of ``HHER`` from the values sampled by ``sample_hher_params``.

    :param sampled_params: ``trial.params`` of a trial of ``sample_hher_params``
    :return: Keyword arguments of the algorithm
    """
    from sb3_hher import HHER  # type: ignore[attr-defined]

    return adapt_to_constructor(convert_her_params(sampled_params), HHER)


def sample_hher_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Sampler of ``HHER`` hyperparameters: the flat learners' update schedule, learning rate, batch size,
    relabelling ratio and exploration, plus the subgoal horizon (H in the HAC paper) and the subgoal testing
    probability (lambda). Network size and return clipping are left to HHER (its Q-values are bounded by design).

    :param trial: The Optuna trial
    :param n_actions: Action dimension
    :param n_envs: Number of envs
    :param additional_args: Zoo's extra arguments
    :return: Keyword arguments of the algorithm
    """
    trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True)
    trial.suggest_categorical("batch_size", [128, 256, 512, 1024])
    trial.suggest_categorical("train_freq", TRAIN_FREQS)
    trial.suggest_categorical("updates_per_step", UPDATES_PER_STEP)
    trial.suggest_float("tau", 0.002, 0.1, log=True)
    trial.suggest_int("n_sampled_goal", 1, 8)
    trial.suggest_float("noise_eps", 0.0, 0.5)
    trial.suggest_float("random_eps", 0.0, 0.5)
    trial.suggest_categorical("subgoal_horizon", SUBGOAL_HORIZONS)
    trial.suggest_float("subgoal_test_prob", 0.1, 0.5)
    return convert_hher_params(trial.params)


# One value per sampled parameter, to check which keyword arguments a sampler produces.
EXAMPLE_HER_PARAMS: dict[str, Any] = {
    "learning_rate": 1e-3,
    "batch_size": 256,
    "net_arch": "3x256",
    "train_freq": 100,
    "updates_per_step": 0.4,
    "tau": 0.05,
    "clip_return": "auto",
    "n_sampled_goal": 4,
    "noise_eps": 0.2,
    "random_eps": 0.3,
}
EXAMPLE_HER_TQC_PARAMS: dict[str, Any] = {
    **{key: value for key, value in EXAMPLE_HER_PARAMS.items() if key != "noise_eps"},
    "top_quantiles_to_drop_per_net": 2,
}
EXAMPLE_HHER_PARAMS: dict[str, Any] = {
    **{key: value for key, value in EXAMPLE_HER_PARAMS.items() if key not in ("net_arch", "clip_return")},
    "subgoal_horizon": 10,
    "subgoal_test_prob": 0.3,
}


def constructor_takes(algorithm: type, hyperparams: dict[str, Any]) -> bool:
    """
    Whether an algorithm's constructor takes every keyword argument in ``hyperparams``.

    :param algorithm: The algorithm class
    :param hyperparams: Keyword arguments (e.g. a converter's output)
    :return: True if all of them are constructor arguments
    """
    parameters = inspect.signature(algorithm).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return True
    return set(hyperparams) <= set(parameters)
