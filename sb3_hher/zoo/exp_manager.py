"""rl-zoo3's ``ExperimentManager``, made aware of sb3-hher's configs and replay buffer."""

from __future__ import annotations

import contextvars
import inspect
from typing import Any

import optuna
from rl_zoo3.exp_manager import ExperimentManager

# Replay buffer class of the trial being set up in this thread (Optuna runs ``--n-jobs`` trials in threads).
CURRENT_REPLAY_BUFFER_CLASS: contextvars.ContextVar[Any] = contextvars.ContextVar("sb3_hher_replay_buffer_class", default=None)

_INIT_SIGNATURE = inspect.signature(ExperimentManager.__init__)


class HindsightExperimentManager(ExperimentManager):
    """
    rl-zoo3's ``ExperimentManager`` with two changes, installed by ``sb3_hher.zoo.register()`` as the one zoo's
    ``train`` builds:

    - Without ``-conf``, the hyperparameters of sb3-hher's algorithms come from sb3-hher's ``hyperparams/`` folder,
      and so do those of zoo's own algorithms on the env ids sb3-hher configures for comparison (``td3``/``ddpg`` on
      the ``-v4`` Fetch ids and PointMaze); anything else is read from zoo's files as before.
    - While a tuning trial is set up, the replay buffer class is made visible to zoo's samplers, which decide
      whether to tune HER parameters with ``replay_buffer_class == HerReplayBuffer`` (an equality that a
      ``HerReplayBuffer`` subclass such as ``HindsightReplayBuffer`` fails).

    It takes exactly the arguments of ``rl_zoo3.exp_manager.ExperimentManager``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = _INIT_SIGNATURE.bind(self, *args, **kwargs).arguments.get("config")
        if not config:
            from sb3_hher.zoo.registration import find_config

            path = find_config(self.algo, self.env_name.gym_id)
            if path is not None:
                self.config = str(path)

    def objective(self, trial: optuna.Trial) -> float:
        token = CURRENT_REPLAY_BUFFER_CLASS.set(self._hyperparams.get("replay_buffer_class"))
        try:
            return super().objective(trial)
        finally:
            CURRENT_REPLAY_BUFFER_CLASS.reset(token)
