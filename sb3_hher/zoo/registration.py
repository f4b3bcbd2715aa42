"""
Registration of sb3-hher's algorithms in rl-zoo3.

rl-zoo3 has no plugin API: its algorithm table ``ALGOS`` and its tuning tables ``HYPERPARAMS_SAMPLER`` /
``HYPERPARAMS_CONVERTER`` are module-level dicts that zoo's modules import by name, and its HER handling
recognises SB3's ``HerReplayBuffer`` by equality or by name. ``register()`` updates those tables in place and
teaches the HER checks about ``HindsightReplayBuffer``; see its docstring for the full list.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

from sb3_hher.zoo.hyperparams_opt import (
    EXAMPLE_HHER_PARAMS,
    Sampler,
    adapt_to_constructor,
    constructor_takes,
    convert_her_params,
    convert_her_tqc_params,
    convert_hher_params,
    sample_her_params,
    sample_her_tqc_params,
    sample_hher_params,
)

# Marks a zoo function already wrapped by register(), so that registering twice changes nothing.
_WRAPPED = "_sb3_hher_wrapped"

# sb3-hher's hyperparameter files (zoo format): the repository's top-level hyperparams/ folder, which the package
# reaches through its sb3_hher/hyperparams symlink in a source checkout and carries as package data in a wheel.
PACKAGE_HYPERPARAMS = Path(__file__).resolve().parents[1] / "hyperparams"


def zoo_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """
    sb3-hher's algorithms under their zoo names: ``her_ddpg``, ``her_td3``, ``her_tqc`` and ``hher``.

    :return: Zoo name -> algorithm class
    """
    return dict(_zoo_algorithms())


@functools.cache
def _zoo_algorithms() -> dict[str, type[BaseAlgorithm]]:
    from sb3_hher import HerDDPG, HerTD3, HerTQC

    algorithms: dict[str, type[BaseAlgorithm]] = {"her_ddpg": HerDDPG, "her_td3": HerTD3, "her_tqc": HerTQC}
    try:
        from sb3_hher import HHER  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        algorithms["hher"] = HHER
    return algorithms


def hyperparams_dirs() -> list[Path]:
    """
    Folders searched for sb3-hher's zoo configs: the package's ``hyperparams/`` (the repository's top-level folder in a
    source checkout or editable install, package data in a wheel), then ``./hyperparams`` (a copy next to where zoo
    runs).

    :return: The folders that exist, in search order
    """
    candidates = [PACKAGE_HYPERPARAMS, Path.cwd() / "hyperparams"]
    unique = dict.fromkeys(path.resolve() for path in candidates)
    return [path for path in unique if path.is_dir()]


def find_config(algo: str, env_id: str) -> Path | None:
    """
    The zoo config file sb3-hher provides for ``algo`` on ``env_id``, if any.

    For sb3-hher's algorithms this is ``hyperparams/<algo>.yml``; for zoo's own algorithms it is sb3-hher's file
    only when it has an entry for ``env_id`` (the vanilla SB3 configs sb3-hher compares against), so that zoo's
    files keep serving every other env.

    :param algo: Zoo algorithm name (``her_ddpg``, ``td3``, ...)
    :param env_id: Gymnasium env id
    :return: Path of the file, or None to let zoo use its own
    """
    for directory in hyperparams_dirs():
        path = directory / f"{algo}.yml"
        if not path.is_file():
            continue
        if algo in zoo_algorithms():
            return path
        with open(path) as file:
            configs = yaml.safe_load(file) or {}
        if env_id in configs:
            return path
    return None


def _zoo_tables(name: str) -> Iterator[dict[str, Any]]:
    """Every distinct dict bound to ``name`` in a loaded rl-zoo3 module (zoo imports its tables by name)."""
    seen: set[int] = set()
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "rl_zoo3" or module_name.startswith("rl_zoo3.")):
            continue
        table = getattr(module, name, None)
        if isinstance(table, dict) and id(table) not in seen:
            seen.add(id(table))
            yield table


def _recognise_hindsight_buffer(sampler: Sampler) -> Sampler:
    """
    Wrap one of zoo's samplers so that it tunes HER parameters for any ``HerReplayBuffer`` subclass, not only
    for ``HerReplayBuffer`` itself (zoo decides with ``replay_buffer_class == HerReplayBuffer``).
    """
    if getattr(sampler, _WRAPPED, False):
        return sampler

    @functools.wraps(sampler)
    def wrapped(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
        from sb3_hher.zoo.exp_manager import CURRENT_REPLAY_BUFFER_CLASS

        buffer_class = CURRENT_REPLAY_BUFFER_CLASS.get()
        if isinstance(buffer_class, type) and issubclass(buffer_class, HerReplayBuffer):
            additional_args = {**additional_args, "using_her_replay_buffer": True}
        return sampler(trial, n_actions, n_envs, additional_args)

    setattr(wrapped, _WRAPPED, True)
    return wrapped


def _uses_hindsight_buffer(stats_path: str, hyperparams: dict[str, Any]) -> bool:
    """Whether the run saved under ``stats_path`` used a ``HindsightReplayBuffer`` (sb3-hher algorithm or named)."""
    if "HindsightReplayBuffer" in str(hyperparams.get("replay_buffer_class", "")):
        return True
    args_path = Path(stats_path) / "args.yml"
    if not args_path.is_file():
        return False
    with open(args_path) as file:
        # Zoo writes args.yml with yaml.dump of the parsed arguments and reads it back the same way.
        args = yaml.load(file, Loader=yaml.UnsafeLoader) or {}
    return args.get("algo") in zoo_algorithms()


def _mark_hindsight_buffer_for_enjoy(get_saved_hyperparams: Any) -> Any:
    """
    Wrap ``rl_zoo3.enjoy.get_saved_hyperparams``: ``enjoy`` gives the env to ``load()`` (which a HER replay buffer
    needs) only when ``"HerReplayBuffer" in hyperparams["replay_buffer_class"]``, a substring test on the name
    saved in ``config.yml``. For runs of sb3-hher's algorithms, whose config does not need to name the buffer,
    the name is set in memory (``config.yml`` is not changed; enjoy uses the value for nothing else).
    """
    if getattr(get_saved_hyperparams, _WRAPPED, False):
        return get_saved_hyperparams

    @functools.wraps(get_saved_hyperparams)
    def wrapped(stats_path: str, norm_reward: bool = False, test_mode: bool = False) -> tuple[dict[str, Any], str | None]:
        hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, norm_reward=norm_reward, test_mode=test_mode)
        if "HerReplayBuffer" not in str(hyperparams.get("replay_buffer_class", "")) and _uses_hindsight_buffer(
            stats_path, hyperparams
        ):
            hyperparams["replay_buffer_class"] = "HindsightReplayBuffer (a HerReplayBuffer)"
        return hyperparams, maybe_stats_path

    setattr(wrapped, _WRAPPED, True)
    return wrapped


def register() -> None:
    """
    Make sb3-hher's algorithms usable with rl-zoo3's ``train``/``enjoy``/``record_video``/``benchmark``/plots, with
    the same commands and flags as zoo's own algorithms. Calling it again changes nothing.

    - ``ALGOS`` gets ``her_ddpg`` (``HerDDPG``), ``her_td3`` (``HerTD3``), ``her_tqc`` (``HerTQC``) and ``hher``
      (``HHER``, if importable),
      in every zoo module holding the table.
    - ``HYPERPARAMS_SAMPLER``/``HYPERPARAMS_CONVERTER`` get their tuning samplers and converters
      (``sb3_hher.zoo.hyperparams_opt``); tuning prunes and ranks them on test success rate
      (``sb3_hher.zoo.callbacks.SuccessTrialEvalCallback``).
    - Zoo's ``train`` builds a ``HindsightExperimentManager``: without ``-conf``, configs come from sb3-hher's
      ``hyperparams/`` for its algorithms (and for zoo's on the env ids sb3-hher configures), and zoo's samplers
      tune HER parameters for ``HerReplayBuffer`` subclasses too.
    - Zoo configs may write ``replay_buffer_class: HindsightReplayBuffer``, and ``enjoy`` passes the env to
      ``load()`` for runs that used it, as it does for ``HerReplayBuffer``.

    Zoo does not import gymnasium-robotics: ``python -m sb3_hher.zoo`` registers its envs, from Python call
    ``sb3_hher.common.goal_env.import_robotics()`` (or pass zoo's ``--gym-packages gymnasium_robotics``).
    """
    import rl_zoo3.enjoy
    import rl_zoo3.exp_manager
    import rl_zoo3.hyperparams_opt
    import rl_zoo3.train

    from sb3_hher.common.buffers import HindsightReplayBuffer
    from sb3_hher.zoo.callbacks import SuccessTrialEvalCallback
    from sb3_hher.zoo.exp_manager import HindsightExperimentManager

    algorithms = zoo_algorithms()
    for table in _zoo_tables("ALGOS"):
        table.update(algorithms)

    samplers: dict[str, Sampler] = {
        "her_ddpg": sample_her_params,
        "her_td3": sample_her_params,
        "her_tqc": sample_her_tqc_params,
    }
    converters: dict[str, Any] = {
        "her_ddpg": convert_her_params,
        "her_td3": convert_her_params,
        "her_tqc": convert_her_tqc_params,
    }
    hher = algorithms.get("hher")
    if hher is not None and constructor_takes(hher, adapt_to_constructor(convert_her_params(EXAMPLE_HHER_PARAMS), hher)):
        samplers["hher"] = sample_hher_params
        converters["hher"] = convert_hher_params
    for table in _zoo_tables("HYPERPARAMS_SAMPLER"):
        for name, sampler in list(table.items()):
            if name not in algorithms:
                table[name] = _recognise_hindsight_buffer(sampler)
        table.update(samplers)
    for table in _zoo_tables("HYPERPARAMS_CONVERTER"):
        table.update(converters)

    # Names zoo's ExperimentManager looks up in its module: yaml configs are eval'd there, and its objective builds
    # the trial callback by this name.
    rl_zoo3.exp_manager.HindsightReplayBuffer = HindsightReplayBuffer  # type: ignore[attr-defined]
    rl_zoo3.exp_manager.TrialEvalCallback = SuccessTrialEvalCallback  # type: ignore[misc]
    rl_zoo3.train.ExperimentManager = HindsightExperimentManager  # type: ignore[misc]
    rl_zoo3.enjoy.get_saved_hyperparams = _mark_hindsight_buffer_for_enjoy(rl_zoo3.enjoy.get_saved_hyperparams)
