"""Issue 7's drop-in points for HHER: SB3 callbacks, evaluation, monitors, subprocess envs, set_env,
load-and-continue, the policy alone, reproducibility with one and two envs."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

from sb3_hher import HHER
from sb3_hher.common.goal_env import make_goal_env

# buffer_size: SB3's HerReplayBuffer builds one info dict per slot (about 3 s per level for the default 1M).
SMALL = {"batch_size": 32, "gradient_steps": 2, "learning_starts": 50, "seed": 0, "buffer_size": 10_000}


def fetch_env() -> DummyVecEnv:
    return DummyVecEnv([lambda: make_goal_env("FetchReach-v4")])


def small_hher(env, **kwargs) -> HHER:
    return HHER("MultiInputPolicy", env, **{**SMALL, **kwargs})


def same_parameters(a: HHER, b: HHER) -> bool:
    state_a, state_b = a.policy.state_dict(), b.policy.state_dict()
    return state_a.keys() == state_b.keys() and all(th.equal(state_a[key], state_b[key]) for key in state_a)


def test_callbacks_and_evaluate_policy(tmp_path) -> None:
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9)
    eval_callback = EvalCallback(VecMonitor(fetch_env()), callback_on_new_best=stop, n_eval_episodes=2, eval_freq=100)
    checkpoint = CheckpointCallback(save_freq=100, save_path=str(tmp_path), name_prefix="hher")
    model = small_hher(VecMonitor(fetch_env()))
    model.learn(1_000, callback=[checkpoint, eval_callback])
    assert model.num_timesteps == 100  # stopped by the first evaluation
    assert (tmp_path / "hher_100_steps.zip").is_file()
    loaded = HHER.load(tmp_path / "hher_100_steps.zip", env=fetch_env())
    mean_reward, _ = evaluate_policy(loaded, loaded.get_env(), n_eval_episodes=2, deterministic=True)
    assert -50.0 <= mean_reward <= 0.0


def test_subprocess_env_set_env_and_load_and_continue(tmp_path) -> None:
    env = SubprocVecEnv([lambda: make_goal_env("FetchReach-v4")] * 2)
    try:
        model = small_hher(env)
        model.learn(200)
    finally:
        env.close()
    model.set_env(DummyVecEnv([lambda: make_goal_env("FetchReach-v4")] * 2))
    model.learn(100, reset_num_timesteps=False)
    model.save(tmp_path / "model")
    loaded = HHER.load(tmp_path / "model", env=fetch_env())
    loaded.learn(100, reset_num_timesteps=False)
    assert loaded.num_timesteps >= 400


def test_policy_alone_predicts_like_the_model(tmp_path) -> None:
    model = small_hher(fetch_env())
    model.learn(150)
    model.policy.save(tmp_path / "policy.pth")
    policy = type(model.policy).load(tmp_path / "policy.pth")
    obs = model.get_env().reset()
    action_model, state_model = model.predict(obs, deterministic=True)
    action_policy, state_policy = policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(action_model, action_policy)
    for _ in range(5):  # the state carries the subgoals: same trajectory of actions
        obs, *_ = model.get_env().step(action_model)
        action_model, state_model = model.predict(obs, state=state_model, deterministic=True)
        action_policy, state_policy = policy.predict(obs, state=state_policy, deterministic=True)
        np.testing.assert_array_equal(action_model, action_policy)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_same_seed_same_run(n_envs: int) -> None:
    def run(seed: int) -> HHER:
        env = DummyVecEnv([lambda: make_goal_env("FetchReach-v4")] * n_envs)
        model = small_hher(env, seed=seed)
        model.learn(200)
        return model

    first, second = run(3), run(3)
    assert same_parameters(first, second)
    assert not same_parameters(first, run(4))
