"""
Log of a hierarchy's decisions during training, so that its replay buffers can be rebuilt instead of pickled.

Every level's buffer of an ``HHER`` run is a function of the env's answers and of the decisions taken while
collecting: level 0's scaled action at every step, and, at the steps where a level above proposes a subgoal, the
scaled subgoal and whether it is tested. MuJoCo is deterministic, so stepping a fresh env (seeded as the training
env) through the same decisions stores the same transitions at every level. ``DecisionLog`` keeps those decisions
in growable arrays (4 bytes per action dimension per step plus one flag per level); ``HHER.decision_arrays`` and
``HHER.rebuild_replay_buffers`` write and replay them, and ``sb3_hher.common.checkpoint`` uses them for portable
checkpoints (``replay_actions.npz`` without the pickled buffers).
"""

from __future__ import annotations

import numpy as np


class DecisionLog:
    """
    The decisions of every level of a hierarchy at each env step, in order.

    ``actions[level][t, env]`` is the scaled action level ``level`` chose for env ``env`` at step ``t`` (NaN where the
    level did not decide at that step: a level above 0 decides only when the attempt of the level below ends);
    ``tested[level][t, env]`` says whether that subgoal was tested (always ``False`` at level 0).

    :param action_dims: Size of the action of each level (level 0 first)
    :param n_envs: Number of envs of the training env
    :param capacity: Steps allocated at first (the arrays double when full)
    """

    def __init__(self, action_dims: list[int], n_envs: int, capacity: int = 1024) -> None:
        self.action_dims = [int(dim) for dim in action_dims]
        self.n_envs = int(n_envs)
        self.steps = 0
        capacity = max(int(capacity), 1)
        self._actions = [np.full((capacity, self.n_envs, dim), np.nan, dtype=np.float32) for dim in self.action_dims]
        self._tested = [np.zeros((capacity, self.n_envs), dtype=bool) for _ in self.action_dims]

    @property
    def n_levels(self) -> int:
        """Number of levels logged."""
        return len(self.action_dims)

    def begin_step(self) -> None:
        """Open the row of a new env step (all levels undecided)."""
        if self.steps == len(self._actions[0]):
            grow = max(self.steps, 1024)
            self._actions = [
                np.concatenate([array, np.full((grow, *array.shape[1:]), np.nan, dtype=np.float32)]) for array in self._actions
            ]
            self._tested = [np.concatenate([array, np.zeros((grow, *array.shape[1:]), dtype=bool)]) for array in self._tested]
        self.steps += 1

    def record(self, level: int, envs: np.ndarray, actions: np.ndarray, tested: np.ndarray | None = None) -> None:
        """
        Record the decisions of ``level`` for some envs at the current step.

        :param level: The deciding level
        :param envs: Indices of the envs it decided for
        :param actions: Its scaled actions, one row per env of ``envs``
        :param tested: Whether each subgoal is tested (levels above 0)
        """
        row = self.steps - 1
        self._actions[level][row, envs] = actions
        if tested is not None:
            self._tested[level][row, envs] = tested

    def decisions(self, step: int, level: int, envs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        :param step: Env step (0-based)
        :param level: The level
        :param envs: Envs it decides for at that step
        :return: The logged scaled actions and test flags
        :raises ValueError: When the log holds no decision of that level for one of these envs at that step (the
            replayed env diverged from the logged run)
        """
        actions = self._actions[level][step, envs]
        if np.isnan(actions).any():
            raise ValueError(
                f"The decision log has no decision of level {level} at step {step} for envs "
                f"{np.asarray(envs)[np.isnan(actions).any(axis=1)].tolist()}: the replayed env diverged from the logged run"
            )
        return actions.copy(), self._tested[level][step, envs].copy()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """:return: The logged steps as arrays ``level_<i>`` (actions) and ``tested_<i>``, for ``np.savez``."""
        arrays: dict[str, np.ndarray] = {}
        for level in range(self.n_levels):
            arrays[f"level_{level}"] = self._actions[level][: self.steps].copy()
            if level > 0:
                arrays[f"tested_{level}"] = self._tested[level][: self.steps].copy()
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray] | np.lib.npyio.NpzFile) -> DecisionLog:
        """
        :param arrays: What ``to_arrays`` returned (or an opened ``.npz`` of it)
        :return: The log
        :raises ValueError: When the arrays are not a decision log
        """
        keys = set(arrays.keys())
        levels = sorted(int(key.split("_")[1]) for key in keys if key.startswith("level_"))
        if not levels or levels != list(range(len(levels))) or any(f"tested_{level}" not in keys for level in levels[1:]):
            raise ValueError(
                f"Not a decision log: expected arrays level_0 ... level_<k> and tested_1 ... tested_<k>, got {sorted(keys)}"
            )
        actions = [np.asarray(arrays[f"level_{level}"], dtype=np.float32) for level in levels]
        steps, n_envs = actions[0].shape[:2]
        if any(array.ndim != 3 or array.shape[:2] != (steps, n_envs) for array in actions):
            raise ValueError(f"Decision log arrays of different steps or envs: {[array.shape for array in actions]}")
        log = cls([array.shape[2] for array in actions], n_envs, capacity=steps)
        log._actions = [array.copy() for array in actions]
        log._tested = [np.zeros((steps, n_envs), dtype=bool)]
        log._tested += [np.asarray(arrays[f"tested_{level}"], dtype=bool).copy() for level in levels[1:]]
        log.steps = steps
        return log
