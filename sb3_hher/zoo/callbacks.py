"""Tuning callback: prune and rank sb3-hher's trials on test success rate instead of mean reward."""

from __future__ import annotations

import numpy as np
import optuna
from rl_zoo3.callbacks import TrialEvalCallback
from stable_baselines3.common.vec_env import VecEnv


class SuccessTrialEvalCallback(TrialEvalCallback):
    """
    rl-zoo3's ``TrialEvalCallback`` that, for sb3-hher's algorithms, reports the test success rate to Optuna
    instead of the mean reward (a sparse goal-reaching reward mostly counts steps away from the goal).

    The value reported after the k-th evaluation is the mean of the k success rates measured so far: the area
    under the success curve. Pruners compare trials on it at equal steps, and the trial's final value (what zoo's
    objective returns, ``last_mean_reward``) ranks a trial that learns sooner above one that gets there later,
    which also separates trials that all end at 100 % on easy tasks (FetchReach). Other algorithms, and envs that
    report no ``info["is_success"]``, keep zoo's mean reward.

    :param eval_env: The env used for evaluation
    :param trial: The Optuna trial
    :param n_eval_episodes: Test episodes per evaluation
    :param eval_freq: Evaluate every ``eval_freq`` calls of the callback
    :param deterministic: Deterministic actions during evaluation
    :param verbose: Verbosity
    :param best_model_save_path: Where to save the best model (None: not saved)
    :param log_path: Where to save ``evaluations.npz`` (None: not saved)
    """

    def __init__(
        self,
        eval_env: VecEnv,
        trial: optuna.Trial,
        n_eval_episodes: int = 5,
        eval_freq: int = 10000,
        deterministic: bool = True,
        verbose: int = 0,
        best_model_save_path: str | None = None,
        log_path: str | None = None,
    ) -> None:
        super().__init__(
            eval_env,
            trial,
            n_eval_episodes=n_eval_episodes,
            eval_freq=eval_freq,
            deterministic=deterministic,
            verbose=verbose,
            best_model_save_path=best_model_save_path,
            log_path=log_path,
        )
        self.success_rates: list[float] = []

    def _reports_success(self) -> bool:
        from sb3_hher.zoo.registration import zoo_algorithms

        return isinstance(self.model, tuple(zoo_algorithms().values()))

    def _on_step(self) -> bool:
        if not self._reports_success():
            return super()._on_step()
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return True
        # EvalCallback's evaluation (skipping zoo's reporting): fills _is_success_buffer for this evaluation.
        continue_training = super(TrialEvalCallback, self)._on_step()
        if self._is_success_buffer:
            self.success_rates.append(float(np.mean(self._is_success_buffer)))
            self.last_mean_reward = float(np.mean(self.success_rates))
            self.logger.record("eval/success_rate_auc", self.last_mean_reward)
        self.eval_idx += 1
        self.trial.report(self.last_mean_reward, self.eval_idx)
        if self.trial.should_prune():
            self.is_pruned = True
            return False
        return continue_training
