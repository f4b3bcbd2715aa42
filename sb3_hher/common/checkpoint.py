"""
Checkpoints that resume training exactly: model, replay buffer, random states and the env's simulator state.

SB3's ``save``/``save_replay_buffer`` keep weights, optimisers, hyperparameters and transitions; a run resumed from
them alone differs from an uninterrupted one because the random generators (numpy, torch, python, the action
space's, the env's) and the env's simulator state are lost. ``save_checkpoint`` stores those too, and
``load_checkpoint`` restores them, so that::

    model.learn(N); save_checkpoint(model, "ckpt")          # N at an episode boundary of every env
    model = load_checkpoint(HerDDPG, "ckpt", env); model.learn(M, reset_num_timesteps=False)

gives the same parameters, normaliser statistics and buffer as ``model.learn(N); model.learn(M, reset_num_timesteps=False)``
in one process (CPU; the same library versions).

Exact env restore is supported for ``DummyVecEnv`` (possibly inside ``VecEnvWrapper``s) of MuJoCo envs
(gymnasium-robotics Fetch, PointMaze, ...: the full MuJoCo integration state, the goal and the env's random
generator) and of any env whose unwrapped class defines ``get_state()``/``set_state(state)``. Other envs
(``SubprocVecEnv`` included) can be checkpointed with ``exact=False``: training then resumes from a fresh episode.

Every file is written to a temporary name and renamed, and ``state.pkl`` is written last: a process killed while
checkpointing leaves the previous complete checkpoint loadable.

A checkpoint that travels (committed to git, copied to another machine) does not need the pickled replay buffer,
which holds every observation twice: ``save_replay_actions`` stores only the actions of the stored steps (16 bytes a
step for Fetch instead of about 280) and a digest of the buffer, and ``rebuild_replay_buffer`` steps a fresh env,
seeded as the training env was, through those actions to refill the buffer (MuJoCo is deterministic), then checks the
digest. ``load_checkpoint(..., replay_env=...)`` does this when ``replay_buffer.pkl`` is absent.

A hierarchy (``HHER`` built with ``record_decisions=True``) keeps one buffer per level, filled from its levels'
decisions rather than from env actions alone: its ``replay_actions.npz`` holds every level's logged decisions
(``HHER.decision_arrays``) and the digest of all level buffers, and the rebuild replays them
(``HHER.rebuild_replay_buffers``).
"""

from __future__ import annotations

import copy
import hashlib
import os
import warnings
import pickle
import random
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

ModelT = TypeVar("ModelT", bound=BaseAlgorithm)

MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"
STATE_FILE = "state.pkl"
ACTIONS_FILE = "replay_actions.npz"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or restored as asked."""


def _innermost(env: VecEnv) -> VecEnv:
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    return env


def _mujoco_state(unwrapped: Any) -> dict[str, Any]:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    physics = np.empty(mujoco.mj_stateSize(unwrapped.model, spec))
    mujoco.mj_getState(unwrapped.model, unwrapped.data, physics, spec)
    return {"kind": "mujoco", "physics": physics, "goal": copy.deepcopy(getattr(unwrapped, "goal", None))}


def _set_mujoco_state(unwrapped: Any, state: dict[str, Any]) -> None:
    import mujoco

    mujoco.mj_setState(unwrapped.model, unwrapped.data, state["physics"], mujoco.mjtState.mjSTATE_INTEGRATION)
    if state["goal"] is not None:
        unwrapped.goal = copy.deepcopy(state["goal"])
    mujoco.mj_forward(unwrapped.model, unwrapped.data)


def get_env_states(env: VecEnv) -> list[dict[str, Any]]:
    """
    Simulator state and random generator of every sub-env.

    :param env: A ``DummyVecEnv``, possibly wrapped in ``VecEnvWrapper``s
    :return: One state per sub-env
    """
    inner = _innermost(env)
    if not isinstance(inner, DummyVecEnv):
        raise CheckpointError(
            f"Exact checkpoints need a DummyVecEnv (the sub-envs' states are read in process), got {type(inner).__name__}: "
            "use exact=False"
        )
    states = []
    for index, sub_env in enumerate(inner.envs):
        unwrapped = sub_env.unwrapped
        if hasattr(unwrapped, "get_state") and hasattr(unwrapped, "set_state"):
            state = {"kind": "custom", "state": copy.deepcopy(unwrapped.get_state())}
        elif (
            hasattr(unwrapped, "model") and hasattr(unwrapped, "data") and type(unwrapped.data).__module__.startswith("mujoco")
        ):
            state = _mujoco_state(unwrapped)
        else:
            raise CheckpointError(
                f"Sub-env {index} ({type(unwrapped).__name__}) is neither a MuJoCo env nor defines get_state()/set_state(): "
                "its state cannot be saved, use exact=False"
            )
        state["np_random"] = copy.deepcopy(unwrapped.np_random.bit_generator.state)
        states.append(state)
    return states


def set_env_states(env: VecEnv, states: list[dict[str, Any]]) -> None:
    """
    Restore what ``get_env_states`` saved. The env must have been reset (gymnasium's order enforcing).

    :param env: A ``DummyVecEnv`` with as many sub-envs as were saved
    :param states: The saved states
    """
    inner = _innermost(env)
    if not isinstance(inner, DummyVecEnv) or len(inner.envs) != len(states):
        raise CheckpointError(
            f"The checkpoint holds {len(states)} env states; the env must be a DummyVecEnv with as many envs"
        )
    for sub_env, state in zip(inner.envs, states, strict=True):
        unwrapped: Any = sub_env.unwrapped  # a MuJoCo env or one with get_state/set_state, checked when saved
        if state["kind"] == "custom":
            unwrapped.set_state(copy.deepcopy(state["state"]))
        else:
            _set_mujoco_state(unwrapped, state)
        unwrapped.np_random.bit_generator.state = copy.deepcopy(state["np_random"])


def _atomic_pickle(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        pickle.dump(obj, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def replay_buffer_digest(buffer: HerReplayBuffer) -> str:
    """
    :param buffer: A HER replay buffer
    :return: SHA-256 of everything ``rebuild_replay_buffer`` restores: the stored part of the observation, action,
        reward, done, timeout and episode arrays
    """
    stored = buffer.buffer_size if buffer.full else buffer.pos
    digest = hashlib.sha256()
    arrays = [*(buffer.observations[key] for key in sorted(buffer.observations))]
    arrays += [*(buffer.next_observations[key] for key in sorted(buffer.next_observations))]
    arrays += [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts, buffer.ep_start, buffer.ep_length]
    for array in arrays:
        digest.update(np.ascontiguousarray(array[:stored]).tobytes())
    digest.update(np.asarray([buffer.pos, int(buffer.full)], dtype=np.int64).tobytes())
    if hasattr(buffer, "penalty_actions"):
        # A hierarchy level's LevelReplayBuffer: its subgoal-test penalty transitions too.
        n_penalty = buffer.n_penalty  # type: ignore[attr-defined]
        penalty = [buffer.penalty_observations[key] for key in sorted(buffer.penalty_observations)]  # type: ignore[attr-defined]
        penalty += [buffer.penalty_next_observations[key] for key in sorted(buffer.penalty_next_observations)]  # type: ignore[attr-defined]
        penalty += [buffer.penalty_actions, buffer.penalty_rewards]  # type: ignore[attr-defined]
        for array in penalty:
            digest.update(np.ascontiguousarray(array[:n_penalty]).tobytes())
        digest.update(np.asarray([buffer.penalty_pos, int(buffer.penalty_full)], dtype=np.int64).tobytes())  # type: ignore[attr-defined]
    return digest.hexdigest()


def _is_hierarchy(model: BaseAlgorithm) -> bool:
    """Whether the model keeps one buffer per level and replays logged decisions (``HHER``)."""
    return callable(getattr(model, "decision_arrays", None)) and callable(getattr(model, "rebuild_replay_buffers", None))


def _model_digest(model: BaseAlgorithm) -> str | None:
    """:return: Digest of the model's replay buffer(s), ``None`` where there is no HER buffer to digest"""
    if _is_hierarchy(model):
        buffers = getattr(model, "replay_buffers", [])
        if not all(isinstance(buffer, HerReplayBuffer) for buffer in buffers):
            return None
        return hashlib.sha256("".join(replay_buffer_digest(buffer) for buffer in buffers).encode()).hexdigest()
    buffer = getattr(model, "replay_buffer", None)
    return replay_buffer_digest(buffer) if isinstance(buffer, HerReplayBuffer) else None


def _stored_steps(model: BaseAlgorithm, buffer: HerReplayBuffer) -> int:
    """
    :return: Steps per env written into ``buffer`` since training started: a buffer that is ``full`` with ``pos`` 0
        has been filled exactly once (nothing overwritten, e.g. a run whose budget is its buffer size) only when this
        equals its size
    """
    return int(model.num_timesteps) // buffer.n_envs


def _replayable_buffer(model: BaseAlgorithm) -> HerReplayBuffer:
    buffer = getattr(model, "replay_buffer", None)
    if not isinstance(buffer, HerReplayBuffer):
        raise CheckpointError(
            f"Replay actions need a HerReplayBuffer (episodes stored in order), got {type(buffer).__name__}: keep the "
            "pickled replay buffer instead"
        )
    if buffer.full and _stored_steps(model, buffer) > buffer.buffer_size:
        raise CheckpointError(
            "The replay buffer has wrapped around (its oldest episodes are overwritten), so its content cannot be "
            "replayed from the first step: keep the pickled replay buffer instead"
        )
    if getattr(model, "_vec_normalize_env", None) is not None:
        raise CheckpointError("Replay actions do not support VecNormalize (the buffer stores unnormalized data)")
    if not isinstance(model.action_space, spaces.Box):
        raise CheckpointError(f"Replay actions need a Box action space, got {type(model.action_space).__name__}")
    return buffer


def save_replay_actions(model: BaseAlgorithm, path: str | Path) -> Path:
    """
    Store the compact form of the model's replay buffer in the checkpoint folder ``path``: the buffer actions of
    every stored step and the buffer's digest (``replay_buffer_digest``). ``rebuild_replay_buffer`` refills a buffer
    from them. A hierarchy (``HHER`` built with ``record_decisions=True``) stores every level's logged decisions
    instead (``HHER.decision_arrays``) and the digest of all its level buffers.

    :param model: A model with a ``HerReplayBuffer`` (or subclass) that has not wrapped around, or an ``HHER`` whose
        decision log covers its buffers; at an episode boundary of every env
    :param path: Checkpoint folder (created if needed)
    :return: The file written
    """
    env = model.get_env()
    if _is_hierarchy(model):
        try:
            arrays = model.decision_arrays()  # type: ignore[attr-defined]
        except ValueError as error:
            raise CheckpointError(str(error)) from error
    else:
        buffer = _replayable_buffer(model)
        stored = buffer.buffer_size if buffer.full else buffer.pos
        arrays = {"actions": buffer.actions[:stored]}
    if env is not None and not _at_episode_boundary(model, env):
        raise CheckpointError("Replay actions must be saved at an episode boundary of every env")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ACTIONS_FILE
    tmp = folder / f"{ACTIONS_FILE}.tmp.npz"
    np.savez_compressed(tmp, **arrays, digest=np.array(_model_digest(model)))
    os.replace(tmp, target)
    return target


def rebuild_replay_buffer(
    model: BaseAlgorithm,
    path: str | Path,
    env: VecEnv,
    strict: bool = False,
    progress_bar: bool = False,
) -> bool:
    """
    Refill the model's (empty) replay buffer by stepping ``env`` through the actions saved by
    ``save_replay_actions``, storing each transition as SB3's ``OffPolicyAlgorithm._store_transition`` does.

    :param model: The loaded model; its replay buffer must be empty
    :param path: Checkpoint folder, or the actions file itself
    :param env: A fresh env built as the training env was (same id, wrappers, number of envs and ``seed``); it is
        seeded with ``model.seed`` as SB3 seeds the training env, then reset, and left wherever the last action took it
    :param strict: Raise ``CheckpointError`` when the rebuilt buffer differs from the saved one (another MuJoCo build,
        another env version); by default warn and keep the rebuilt transitions, which are still the env's answers to
        the same actions. A hierarchy whose replay diverges so far that a level is asked for a decision that was never
        logged (a subgoal reached at another step) cannot go on: that raises ``CheckpointError`` either way
    :param progress_bar: Show a tqdm progress bar
    :return: Whether the rebuilt buffer equals the saved one exactly
    """
    file = Path(path)
    if file.is_dir():
        file = file / ACTIONS_FILE
    if _is_hierarchy(model):
        return _rebuild_hierarchy(model, file, env, strict, progress_bar)
    buffer = _replayable_buffer(model)
    if buffer.pos != 0:
        raise CheckpointError(f"rebuild_replay_buffer needs an empty replay buffer, this one holds {buffer.pos} steps")
    if env.num_envs != buffer.n_envs:
        raise CheckpointError(f"The buffer was filled by {buffer.n_envs} envs, the replay env has {env.num_envs}")
    with np.load(file) as data:
        actions, expected = data["actions"], str(data["digest"])
    if actions.shape[1:] != buffer.actions.shape[1:]:
        raise CheckpointError(f"Saved actions have shape {actions.shape[1:]}, the buffer stores {buffer.actions.shape[1:]}")
    if model.seed is not None:
        env.seed(model.seed)
    steps: Any = range(len(actions))
    if progress_bar:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="rebuilding replay buffer", unit="step")
    # SB3's own _store_transition (terminal observations, timeouts), not an algorithm's override: sb3-hher's also feeds
    # the normaliser, whose loaded statistics already hold these episodes. It moves the model's last observation,
    # restored afterwards.
    saved_last = (model._last_obs, model._last_original_obs)  # type: ignore[attr-defined]
    model._last_obs = env.reset()  # type: ignore[attr-defined,assignment]
    try:
        for step in steps:
            buffer_action = actions[step]
            new_obs, rewards, dones, infos = env.step(model.policy.unscale_action(buffer_action))
            OffPolicyAlgorithm._store_transition(model, buffer, buffer_action, new_obs, rewards, dones, infos)  # type: ignore[arg-type]
    finally:
        model._last_obs, model._last_original_obs = saved_last  # type: ignore[attr-defined]
    return _check_rebuilt(model, file, expected, strict, stacklevel=3)


def _check_rebuilt(model: BaseAlgorithm, file: Path, expected: str, strict: bool, stacklevel: int) -> bool:
    exact = _model_digest(model) == expected
    if not exact:
        message = f"The replay buffer rebuilt from {file} differs from the saved one (another MuJoCo build or env version?)"
        if strict:
            raise CheckpointError(message)
        # stacklevel: the frame of rebuild_replay_buffer's caller
        warnings.warn(f"{message}: training continues from the rebuilt transitions", stacklevel=stacklevel)
    return exact


def _rebuild_hierarchy(model: BaseAlgorithm, file: Path, env: VecEnv, strict: bool, progress_bar: bool) -> bool:
    """``rebuild_replay_buffer`` for a hierarchy: replay every level's logged decisions."""
    with np.load(file) as data:
        if "level_0" not in data.files:
            raise CheckpointError(f"{file} holds flat replay actions, not a hierarchy's decisions")
        arrays = {key: data[key] for key in data.files if key != "digest"}
        expected = str(data["digest"])
    try:
        model.rebuild_replay_buffers(arrays, env, progress_bar=progress_bar)  # type: ignore[attr-defined]
    except ValueError as error:
        raise CheckpointError(f"Cannot rebuild the level buffers from {file}: {error}") from error
    return _check_rebuilt(model, file, expected, strict, stacklevel=4)


def _at_episode_boundary(model: BaseAlgorithm, env: VecEnv) -> bool:
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, HerReplayBuffer):
        return bool(np.all(buffer._current_ep_start == buffer.pos))  # no episode is partly stored
    try:
        return all(steps == 0 for steps in env.get_attr("_elapsed_steps"))  # gymnasium's TimeLimit
    except AttributeError:
        return False


def _has_replay_buffer(model: BaseAlgorithm) -> TypeGuard[OffPolicyAlgorithm]:
    if not isinstance(model, OffPolicyAlgorithm):
        return False
    # Algorithms keeping several buffers (HHER: one per level) override save_replay_buffer.
    return model.replay_buffer is not None or type(model).save_replay_buffer is not OffPolicyAlgorithm.save_replay_buffer


def save_checkpoint(model: BaseAlgorithm, path: str | Path, exact: bool = True, replay_actions: bool = False) -> Path:
    """
    Save everything needed to resume training into the folder ``path``.

    :param model: The model (its env must be set)
    :param path: Folder (created if needed)
    :param exact: Also save the env's simulator state (needs an episode boundary of every env and a DummyVecEnv);
        with ``False`` a resumed run starts fresh episodes
    :param replay_actions: Also write the compact form of the replay buffer (``save_replay_actions``), so that the
        checkpoint can travel without ``replay_buffer.pkl``; where the buffer cannot be replayed (not a
        ``HerReplayBuffer``, wrapped around, not at an episode boundary; for ``HHER``: no decision log, or one that
        does not cover the buffers) a warning says so and no actions file is kept
    :return: The folder
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    env = model.get_env()
    if env is None:
        raise CheckpointError("save_checkpoint needs a model with an env")
    env_states = None
    if exact:
        if not _at_episode_boundary(model, env):
            raise CheckpointError(
                "An exact checkpoint must be taken at an episode boundary of every env (learn() a number of steps that "
                "ends episodes, e.g. a multiple of the episode length with one env), or use exact=False"
            )
        env_states = get_env_states(env)
    model.save(folder / f"{MODEL_FILE}.tmp.zip")
    os.replace(folder / f"{MODEL_FILE}.tmp.zip", folder / MODEL_FILE)
    if _has_replay_buffer(model):
        tmp = folder / f"{BUFFER_FILE}.tmp"
        model.save_replay_buffer(tmp)
        os.replace(tmp, folder / BUFFER_FILE)
    # An actions file left from an earlier checkpoint would not match the buffer just written.
    (folder / ACTIONS_FILE).unlink(missing_ok=True)
    if replay_actions:
        try:
            save_replay_actions(model, folder)
        except CheckpointError as error:
            warnings.warn(f"No replay actions in this checkpoint: {error}", stacklevel=2)
    state = {
        "numpy": np.random.get_state(),
        "random": random.getstate(),
        "torch": th.get_rng_state(),
        "action_space": copy.deepcopy(model.action_space.np_random.bit_generator.state),
        "env_states": env_states,
        "num_timesteps": model.num_timesteps,
    }
    _atomic_pickle(state, folder / STATE_FILE)
    return folder


def checkpoint_exists(path: str | Path) -> bool:
    """:return: Whether ``path`` holds a complete checkpoint."""
    return (Path(path) / STATE_FILE).is_file()


def load_checkpoint(
    cls: type[ModelT],
    path: str | Path,
    env: VecEnv,
    device: str = "auto",
    replay_env: VecEnv | None = None,
    **kwargs: Any,
) -> ModelT:
    """
    Load a checkpoint written by ``save_checkpoint`` and restore random and env states: continue with
    ``model.learn(..., reset_num_timesteps=False)``.

    The replay buffer comes from ``replay_buffer.pkl``; where that file is missing (a checkpoint carried without it)
    or does not match the ``replay_actions.npz`` beside it (written by ``save_replay_actions`` at a later checkpoint),
    it is rebuilt from the saved actions by stepping ``replay_env`` (``rebuild_replay_buffer``).

    :param cls: The algorithm class
    :param path: Folder of the checkpoint
    :param env: The training env, built as for the original run (a DummyVecEnv for an exact checkpoint)
    :param device: Torch device
    :param replay_env: A second env built and seeded as the training env, to rebuild the replay buffer from saved
        actions when needed (closed by the caller)
    :param kwargs: Passed to ``cls.load``
    :return: The model
    """
    folder = Path(path)
    if not checkpoint_exists(folder):
        raise CheckpointError(f"No complete checkpoint in {folder} (missing {STATE_FILE})")
    with open(folder / STATE_FILE, "rb") as file:
        state = pickle.load(file)
    exact = state["env_states"] is not None
    # force_reset=False keeps the saved last observation, which the restored env state continues from.
    model = cls.load(folder / MODEL_FILE, env=env, device=device, force_reset=not exact, **kwargs)
    actions_file = folder / ACTIONS_FILE
    if isinstance(model, OffPolicyAlgorithm):
        loaded = False
        if (folder / BUFFER_FILE).is_file():
            # The checkpoint ends at an episode boundary (or starts fresh episodes): nothing to truncate.
            model.load_replay_buffer(folder / BUFFER_FILE, truncate_last_traj=not exact)
            loaded = True
            # Hashing the loaded buffers is only needed to compare them with an actions file.
            digest = _model_digest(model) if actions_file.is_file() else None
            if digest is not None:
                with np.load(actions_file) as data:
                    expected = str(data["digest"])
                    if digest == expected and _is_hierarchy(model):
                        # The pickled level buffers are current: keep their decision log for the next checkpoint.
                        try:
                            model.load_decision_log({key: data[key] for key in data.files if key != "digest"})  # type: ignore[attr-defined]
                        except ValueError as error:
                            raise CheckpointError(f"{actions_file} does not fit this model: {error}") from error
                if digest != expected:
                    # A pickled buffer left from an older checkpoint than the model and the actions: load the
                    # model again, with the empty buffer it is built with, and rebuild that from the actions.
                    warnings.warn(f"{folder / BUFFER_FILE} does not match {actions_file}: rebuilding it", stacklevel=2)
                    model = cls.load(folder / MODEL_FILE, env=env, device=device, force_reset=not exact, **kwargs)
                    loaded = False
        if not loaded and actions_file.is_file():
            if replay_env is None:
                raise CheckpointError(
                    f"{folder} holds the replay buffer as saved actions ({ACTIONS_FILE}) only: pass replay_env, an env "
                    "built and seeded as the training env, to rebuild it"
                )
            rebuild_replay_buffer(model, folder, replay_env, progress_bar=True)
    if exact:
        model_env = model.get_env()
        assert model_env is not None
        # gymnasium envs must be reset before stepping; the reset state is then overwritten by the saved one.
        model_env.reset()
        set_env_states(model_env, state["env_states"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    th.set_rng_state(state["torch"])
    model.action_space.np_random.bit_generator.state = copy.deepcopy(state["action_space"])
    return model
