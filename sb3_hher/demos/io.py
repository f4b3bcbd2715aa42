"""
Demonstration files: our own npz format, baselines' npz layout, and the transitions a replay buffer stores.

Our format (``format_version`` 1) is one ``.npz`` file (``np.savez_compressed``, no pickled objects) with

=================  ========================  ==============================================================
key                shape                     meaning
=================  ========================  ==============================================================
``observation``    ``(E, T + 1, obs_dim)``   ``obs["observation"]`` after reset and after each of T steps
``achieved_goal``  ``(E, T + 1, goal_dim)``  ``obs["achieved_goal"]``, same steps
``desired_goal``   ``(E, T + 1, goal_dim)``  ``obs["desired_goal"]``, same steps
``action``         ``(E, T, act_dim)``       the action taken at each step
``is_success``     ``(E, T)``                ``info["is_success"]`` after each step (NaN if not reported)
``env_id``         ``()``                    the gymnasium id the episodes were recorded in (str)
``format_version`` ``()``                    1 (int)
=================  ========================  ==============================================================

for E episodes of T steps. Baselines' layout (``her/experiment/data_generation/fetch_data_generation.py``,
read by ``her/ddpg.py`` ``init_demo_buffer``) holds object arrays: ``obs`` (E episodes, each T + 1 observation
dicts), ``acs`` (E x T x act_dim) and ``info`` (E episodes, each T info dicts). :func:`load_demonstrations`
reads both.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from sb3_hher.common.goal_env import GOAL_KEYS, call_compute_reward, check_goal_observation_space, get_success

FORMAT_VERSION = 1
FORMATS = ("sb3_hher", "baselines")
_ARRAY_KEYS = (*GOAL_KEYS, "action", "is_success")
_BASELINES_KEYS = ("obs", "acs", "info")

# The arguments of ``ReplayBuffer.add``: obs, next_obs, action, reward, done, infos.
BufferStep = tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


@dataclass
class DemoEpisode:
    """
    One demonstration episode as ``T`` transitions, ready for a replay buffer.

    :param obs: Observation dict before each step, each value ``(T, dim)``
    :param next_obs: Observation dict after each step, each value ``(T, dim)``
    :param action: Actions, ``(T, act_dim)``
    :param reward: Rewards from the env's ``compute_reward(next achieved_goal, desired_goal, info)``, ``(T,)``
    :param done: ``True`` at the last step only, ``(T,)``; it marks the end of the episode, which is a time
        limit (``infos[-1]["TimeLimit.truncated"]`` is ``True``), so it must not stop bootstrapping
    :param infos: One info dict a step: ``is_success``, and ``TimeLimit.truncated`` at the last step
    """

    obs: dict[str, np.ndarray]
    next_obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    infos: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.action)

    def buffer_steps(
        self,
    ) -> Iterator[
        tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]
    ]:
        """
        The episode step by step, shaped for ``ReplayBuffer.add`` with one env
        (``buffer.add(*step)``: leading dimension 1 on every array, a list of one info dict).

        :return: Iterator of ``(obs, next_obs, action, reward, done, infos)``
        """
        for step in range(len(self)):
            yield (
                {key: value[step : step + 1] for key, value in self.obs.items()},
                {key: value[step : step + 1] for key, value in self.next_obs.items()},
                self.action[step : step + 1],
                self.reward[step : step + 1],
                self.done[step : step + 1],
                [self.infos[step]],
            )


@dataclass
class Demonstrations:
    """
    E demonstration episodes of T steps each (the arrays of our file format, see the module docstring).

    :param observation: ``(E, T + 1, obs_dim)``
    :param achieved_goal: ``(E, T + 1, goal_dim)``
    :param desired_goal: ``(E, T + 1, goal_dim)``
    :param action: ``(E, T, act_dim)``
    :param is_success: ``(E, T)``, NaN where the env reported no success flag
    :param env_id: The gymnasium id the episodes come from, if known
    """

    observation: np.ndarray
    achieved_goal: np.ndarray
    desired_goal: np.ndarray
    action: np.ndarray
    is_success: np.ndarray
    env_id: str | None = field(default=None)

    def __post_init__(self) -> None:
        for key in _ARRAY_KEYS:
            setattr(self, key, np.asarray(getattr(self, key)))
        if self.action.ndim != 3:
            raise ValueError(f"Demonstrations: 'action' must have shape (episodes, steps, act_dim), got {self.action.shape}")
        n_episodes, n_steps = self.action.shape[:2]
        goal_dim = self.achieved_goal.shape[-1] if self.achieved_goal.ndim else None
        expected: dict[str, tuple[int | None, ...]] = {
            "observation": (n_episodes, n_steps + 1, None),
            "achieved_goal": (n_episodes, n_steps + 1, None),
            "desired_goal": (n_episodes, n_steps + 1, goal_dim),
            "is_success": (n_episodes, n_steps),
        }
        problems = []
        for key, shape in expected.items():
            got = getattr(self, key).shape
            if len(got) != len(shape) or any(want not in (None, have) for want, have in zip(shape, got, strict=True)):
                wanted = ", ".join("dim" if want is None else str(want) for want in shape)
                problems.append(f"'{key}' has shape {got}, expected ({wanted})")
        if problems:
            raise ValueError(
                f"Inconsistent demonstrations: 'action' has shape {self.action.shape} (episodes, steps, act_dim), but "
                + "; ".join(problems)
            )

    @property
    def n_episodes(self) -> int:
        """E, the number of episodes."""
        return int(self.action.shape[0])

    @property
    def episode_length(self) -> int:
        """T, the number of steps (transitions) of each episode."""
        return int(self.action.shape[1])

    @property
    def success_rate(self) -> float:
        """Fraction of episodes successful at their last step."""
        return float(np.mean(self.is_success[:, -1] == 1.0))

    def __len__(self) -> int:
        return self.n_episodes

    def select(self, n_episodes: int) -> Demonstrations:
        """
        The first ``n_episodes`` episodes (baselines' ``num_demo``).

        :param n_episodes: How many to keep
        """
        if not 0 < n_episodes <= self.n_episodes:
            raise ValueError(f"Cannot select {n_episodes} episodes out of {self.n_episodes}")
        return replace(self, **{key: getattr(self, key)[:n_episodes] for key in _ARRAY_KEYS})

    def check_env(self, env: gym.Env | VecEnv, source: str = "Demonstrations") -> None:
        """
        Raise a ``ValueError`` naming each array whose per-step shape differs from the env's spaces.

        :param env: The env (or vectorised env) the demonstrations are meant for
        :param source: How to name the demonstrations in the message (e.g. the file name)
        """
        check_goal_observation_space(env.observation_space)
        spaces_by_key = {key: env.observation_space[key] for key in GOAL_KEYS}  # type: ignore[index]
        spaces_by_key["action"] = env.action_space
        env_name = _env_id(env) or "the env"
        problems = []
        for key, space in spaces_by_key.items():
            got = getattr(self, key).shape[2:]
            if got != space.shape:
                what = "action_space" if key == "action" else f"observation_space['{key}']"
                problems.append(f"'{key}': expected per-step shape {space.shape} ({what} of {env_name}), got {got}")
        if problems:
            recorded = f" (recorded in {self.env_id})" if self.env_id else ""
            raise ValueError(f"{source}{recorded} do not match {env_name}: " + "; ".join(problems))
        if self.env_id and env_name != "the env" and self.env_id != env_name:
            warnings.warn(f"{source} were recorded in {self.env_id}, but are used with {env_name}")

    def clip_actions(self, action_space: gym.spaces.Box) -> Demonstrations:
        """
        Clip the actions to the action space, as the env does before applying them (baselines' scripted
        demonstrations are unclipped: ``6 * error``).

        :param action_space: The env's action space
        """
        return replace(self, action=np.clip(self.action, action_space.low, action_space.high).astype(self.action.dtype))

    def iter_episodes(self, env: gym.Env | VecEnv | Callable[..., np.ndarray]) -> Iterator[DemoEpisode]:
        """
        The episodes as transitions with rewards recomputed by the env, for a (demonstration) replay buffer.

        :param env: The env, vectorised env or its ``compute_reward(achieved_goal, desired_goal, info)`` function
        :return: One :class:`DemoEpisode` per episode
        """
        compute_reward = _compute_reward_function(env)
        n_steps = self.episode_length
        done = np.zeros(n_steps, dtype=bool)
        done[-1] = True
        for episode in range(self.n_episodes):
            infos: list[dict[str, Any]] = [{"is_success": float(flag)} for flag in self.is_success[episode]]
            infos[-1]["TimeLimit.truncated"] = True
            obs = {key: getattr(self, key)[episode, :-1] for key in GOAL_KEYS}
            next_obs = {key: getattr(self, key)[episode, 1:] for key in GOAL_KEYS}
            reward = compute_reward(next_obs["achieved_goal"], next_obs["desired_goal"], infos)
            yield DemoEpisode(
                obs=obs,
                next_obs=next_obs,
                action=self.action[episode],
                reward=np.asarray(reward, dtype=np.float32).reshape(n_steps),
                done=done.copy(),
                infos=infos,
            )


def _env_id(env: gym.Env | VecEnv) -> str | None:
    spec = env.get_attr("spec", indices=[0])[0] if isinstance(env, VecEnv) else env.spec
    return None if spec is None else spec.id


def _compute_reward_function(env: gym.Env | VecEnv | Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    if isinstance(env, VecEnv):
        return lambda achieved, desired, infos: call_compute_reward(env, achieved, desired, infos)
    if isinstance(env, gym.Env):
        return env.unwrapped.compute_reward  # type: ignore[attr-defined]
    return env


def save_demonstrations(
    path: str | os.PathLike[str],
    demos: Demonstrations,
    env_id: str | None = None,
    format: str = "sb3_hher",
) -> None:
    """
    Write demonstrations to an ``.npz`` file.

    :param path: Output file (written as given: add the ``.npz`` suffix yourself; missing folders are created)
    :param demos: The demonstrations
    :param env_id: The env they were recorded in; default ``demos.env_id``
    :param format: ``"sb3_hher"`` (our format, see the module docstring) or ``"baselines"`` (the layout of
        baselines' ``fetch_data_generation.py``: object arrays, loaded with ``allow_pickle=True``)
    """
    env_id = demos.env_id if env_id is None else env_id
    if format not in FORMATS:
        raise ValueError(f"Unknown demonstration format {format!r}, expected one of {FORMATS}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:  # a file object: np.savez would append ".npz" to a name without it
        if format == "sb3_hher":
            if env_id is None:
                raise ValueError("save_demonstrations needs the env id (pass env_id=... or set demos.env_id)")
            arrays: dict[str, Any] = {key: getattr(demos, key) for key in _ARRAY_KEYS}
            np.savez_compressed(file, **arrays, env_id=np.array(env_id), format_version=np.array(FORMAT_VERSION))
        else:
            np.savez_compressed(file, **_to_baselines(demos))


def load_demonstrations(path: str | os.PathLike[str], env: gym.Env | VecEnv | None = None) -> Demonstrations:
    """
    Read a demonstration file in our format or in baselines' layout (detected from its keys).

    Baselines' layout stores pickled Python objects: only load such files from sources you trust.

    :param path: The ``.npz`` file
    :param env: If given, check the file against its spaces (``ValueError`` naming each mismatching key, the
        expected and the found shape) and clip the actions to its action space
    :return: The demonstrations
    """
    source = f"Demonstrations in {os.fspath(path)!r}"
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if "format_version" in keys:
            demos = _from_sb3_hher(data, source)
        elif not set(_BASELINES_KEYS) <= keys:
            raise ValueError(
                f"{source}: unknown layout with keys {sorted(keys)}; expected our format "
                f"({[*_ARRAY_KEYS, 'env_id', 'format_version']}) or baselines' ({list(_BASELINES_KEYS)})"
            )
    if "format_version" not in keys:
        with np.load(path, allow_pickle=True) as data:
            demos = _from_baselines(data["obs"], data["acs"], data["info"], source)
    if env is not None:
        demos.check_env(env, source)
        demos = demos.clip_actions(env.action_space)  # type: ignore[arg-type]
    return demos


def _from_sb3_hher(data: Mapping[str, np.ndarray], source: str) -> Demonstrations:
    version = int(data["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{source}: format_version {version} is newer than this sb3_hher reads ({FORMAT_VERSION})")
    missing = [key for key in _ARRAY_KEYS if key not in data]
    if missing:
        raise ValueError(f"{source}: missing array(s) {missing}")
    env_id = str(data["env_id"]) if "env_id" in data else None
    try:
        return Demonstrations(**{key: data[key] for key in _ARRAY_KEYS}, env_id=env_id or None)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error


def _from_baselines(obs: Sequence[Any], acs: Sequence[Any], info: Sequence[Any], source: str) -> Demonstrations:
    if not len(obs) == len(acs) == len(info):
        raise ValueError(f"{source}: 'obs', 'acs' and 'info' hold {len(obs)}, {len(acs)} and {len(info)} episodes")
    if len(acs) == 0:
        raise ValueError(f"{source}: no episodes")
    lengths = [len(episode_actions) for episode_actions in acs]
    n_steps = min(lengths)
    if max(lengths) != n_steps:
        warnings.warn(f"{source}: episodes have {min(lengths)} to {max(lengths)} steps, all cut to {n_steps}")
    arrays: dict[str, list[np.ndarray]] = {key: [] for key in _ARRAY_KEYS}
    for episode, (episode_obs, episode_actions, episode_info) in enumerate(zip(obs, acs, info, strict=True)):
        if len(episode_obs) < n_steps + 1:
            raise ValueError(
                f"{source}: episode {episode} has {len(episode_obs)} observations for {len(episode_actions)} "
                f"actions; baselines' layout has one more observation than actions"
            )
        for key in GOAL_KEYS:
            try:
                arrays[key].append(np.stack([np.asarray(episode_obs[t][key]) for t in range(n_steps + 1)]))
            except (KeyError, IndexError, TypeError) as error:
                raise ValueError(
                    f"{source}: 'obs' must hold, for each episode, observation dicts with keys {list(GOAL_KEYS)} "
                    f"(baselines' layout); episode {episode}: {type(error).__name__}: {error}"
                ) from error
        arrays["action"].append(np.asarray([episode_actions[t] for t in range(n_steps)], dtype=np.float32))
        flags = [get_success(episode_info[t]) if t < len(episode_info) else None for t in range(n_steps)]
        arrays["is_success"].append(np.array([np.nan if flag is None else flag for flag in flags], dtype=np.float32))
    try:
        stacked: dict[str, Any] = {key: np.stack(values) for key, values in arrays.items()}
        return Demonstrations(**stacked)
    except ValueError as error:
        raise ValueError(f"{source}: episodes of different shapes ({error})") from error


def _to_baselines(demos: Demonstrations) -> dict[str, Any]:
    n_episodes, n_steps = demos.n_episodes, demos.episode_length
    obs = np.empty((n_episodes, n_steps + 1), dtype=object)
    info = np.empty((n_episodes, n_steps), dtype=object)
    for episode in range(n_episodes):
        for t in range(n_steps + 1):
            obs[episode, t] = {key: getattr(demos, key)[episode, t] for key in GOAL_KEYS}
        for t in range(n_steps):
            info[episode, t] = {"is_success": demos.is_success[episode, t]}
    return {"obs": obs, "acs": demos.action, "info": info}
