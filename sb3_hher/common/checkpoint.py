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
"""

from __future__ import annotations

import copy
import os
import pickle
import random
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.her.her_replay_buffer import HerReplayBuffer

ModelT = TypeVar("ModelT", bound=BaseAlgorithm)

MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"
STATE_FILE = "state.pkl"


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
        unwrapped = sub_env.unwrapped
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


def _at_episode_boundary(model: BaseAlgorithm, env: VecEnv) -> bool:
    buffer = getattr(model, "replay_buffer", None)
    if isinstance(buffer, HerReplayBuffer):
        return bool(np.all(buffer._current_ep_start == buffer.pos))  # no episode is partly stored
    try:
        return all(steps == 0 for steps in env.get_attr("_elapsed_steps"))  # gymnasium's TimeLimit
    except AttributeError:
        return False


def _has_replay_buffer(model: BaseAlgorithm) -> bool:
    if not isinstance(model, OffPolicyAlgorithm):
        return False
    # Algorithms keeping several buffers (HHER: one per level) override save_replay_buffer.
    return model.replay_buffer is not None or type(model).save_replay_buffer is not OffPolicyAlgorithm.save_replay_buffer


def save_checkpoint(model: BaseAlgorithm, path: str | Path, exact: bool = True) -> Path:
    """
    Save everything needed to resume training into the folder ``path``.

    :param model: The model (its env must be set)
    :param path: Folder (created if needed)
    :param exact: Also save the env's simulator state (needs an episode boundary of every env and a DummyVecEnv);
        with ``False`` a resumed run starts fresh episodes
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


def load_checkpoint(cls: type[ModelT], path: str | Path, env: VecEnv, device: str = "auto", **kwargs: Any) -> ModelT:
    """
    Load a checkpoint written by ``save_checkpoint`` and restore random and env states: continue with
    ``model.learn(..., reset_num_timesteps=False)``.

    :param cls: The algorithm class
    :param path: Folder of the checkpoint
    :param env: The training env, built as for the original run (a DummyVecEnv for an exact checkpoint)
    :param device: Torch device
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
    if (folder / BUFFER_FILE).is_file() and isinstance(model, OffPolicyAlgorithm):
        # The checkpoint ends at an episode boundary (or starts fresh episodes): nothing to truncate.
        model.load_replay_buffer(folder / BUFFER_FILE, truncate_last_traj=not exact)
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
