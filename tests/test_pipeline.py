"""Drop-in use in SB3 pipelines: callbacks, evaluation, monitors, subprocess envs, set_env, load-and-continue, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMALL_KWARGS, make_fetch_reach, make_point_env, params_equal
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecMonitor

from sb3_hher import HerDDPG, HerTD3

ALGOS = [HerDDPG, HerTD3]


def small_model(algo, env, **kwargs):
    return algo("MultiInputPolicy", env, **{**SMALL_KWARGS, "seed": 0, **kwargs})


@pytest.mark.parametrize("algo", ALGOS)
def test_eval_callback(algo, tmp_path):
    eval_env = make_point_env(monitor=True)
    callback = EvalCallback(
        eval_env, n_eval_episodes=3, eval_freq=30, best_model_save_path=str(tmp_path), log_path=str(tmp_path), verbose=0
    )
    model = small_model(algo, make_point_env())
    model.learn(90, callback=callback)
    evaluations = np.load(tmp_path / "evaluations.npz")
    np.testing.assert_array_equal(evaluations["timesteps"], [30, 60, 90])
    assert evaluations["results"].shape == (3, 3)
    assert evaluations["successes"].shape == (3, 3)  # read from info["is_success"]
    assert np.isfinite(callback.best_mean_reward)
    best = algo.load(tmp_path / "best_model.zip", env=make_point_env())
    assert best.policy.normalizer.obs.count.item() > 0


def test_stop_training_on_reward_threshold():
    stop = StopTrainingOnRewardThreshold(reward_threshold=-1e9)
    callback = EvalCallback(make_point_env(monitor=True), callback_on_new_best=stop, n_eval_episodes=2, eval_freq=30)
    model = small_model(HerDDPG, make_point_env())
    model.learn(1_000, callback=callback)
    assert model.num_timesteps == 30


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoint_callback(algo, tmp_path):
    callback = CheckpointCallback(save_freq=30, save_path=str(tmp_path), name_prefix="her", save_replay_buffer=True)
    model = small_model(algo, make_point_env())
    model.learn(60, callback=callback)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "her_30_steps.zip",
        "her_60_steps.zip",
        "her_replay_buffer_30_steps.pkl",
        "her_replay_buffer_60_steps.pkl",
    ]
    resumed = algo.load(tmp_path / "her_60_steps.zip", env=make_point_env())
    # CheckpointCallback runs on_step after env.step and before the step is stored: the 60th transition, and the
    # training after that episode, come after the checkpoint.
    assert resumed.num_timesteps == 60
    assert resumed.policy.normalizer.obs.count.item() == 50
    with pytest.warns(UserWarning, match="truncated"):
        resumed.load_replay_buffer(tmp_path / "her_replay_buffer_60_steps.pkl")
    assert resumed.replay_buffer.pos == 59
    resumed.learn(30, reset_num_timesteps=False)
    assert resumed.num_timesteps >= 90


@pytest.mark.parametrize("algo", ALGOS)
def test_evaluate_policy(algo):
    model = small_model(algo, make_point_env())
    model.learn(40)
    eval_env = make_point_env(max_episode_steps=10, monitor=True)
    rewards, lengths = evaluate_policy(model, eval_env, n_eval_episodes=5, deterministic=True, return_episode_rewards=True)
    assert lengths == [10] * 5
    assert all(-10.0 <= reward <= 0.0 for reward in rewards)
    mean_reward, std_reward = evaluate_policy(model, eval_env, n_eval_episodes=5)
    assert -10.0 <= mean_reward <= 0.0 and std_reward >= 0.0


def test_vec_monitor_and_subprocess_fetch():
    """Baselines' workers the SB3 way: FetchReach in subprocesses, compute_reward called across the process boundary."""
    env = VecMonitor(SubprocVecEnv([make_fetch_reach] * 2, start_method="fork"))
    try:
        model = small_model(HerDDPG, env, learning_starts=100, train_freq=50, batch_size=64)
        assert model.gamma == pytest.approx(0.98) and model.return_bounds == pytest.approx((-50.0, 0.0))
        model.learn(200)
        assert model._n_updates > 0
        assert len(model.ep_info_buffer) == 4 and all(info["l"] == 50 for info in model.ep_info_buffer)
        assert len(model.ep_success_buffer) == 4
        mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=2)
        assert -50.0 <= mean_reward <= 0.0
    finally:
        env.close()


@pytest.mark.parametrize("algo", ALGOS)
def test_set_env(algo):
    model = small_model(algo, make_point_env())
    model.learn(40)
    new_env = DummyVecEnv([lambda: make_point_env(max_episode_steps=10)])
    model.set_env(new_env)
    assert model.get_env() is new_env
    model.learn(40, reset_num_timesteps=False)
    assert model.num_timesteps == 80
    assert model.replay_buffer.pos == 80


def test_set_env_then_close_old_subprocess_env():
    old_env = SubprocVecEnv([make_point_env], start_method="fork")
    new_env = SubprocVecEnv([make_point_env], start_method="fork")
    try:
        model = small_model(HerDDPG, old_env)
        model.learn(40)
        model.set_env(new_env)
        old_env.close()
        model.learn(40, reset_num_timesteps=False)
    finally:
        new_env.close()


@pytest.mark.parametrize("algo", ALGOS)
def test_load_with_env_and_continue(algo, tmp_path):
    model = small_model(algo, make_point_env(monitor=True), tensorboard_log=str(tmp_path / "tb"))
    model.learn(40)
    model.save(tmp_path / "model.zip")
    env = DummyVecEnv([lambda: make_point_env(monitor=True)])
    loaded = algo.load(tmp_path / "model.zip", env=env, tensorboard_log=str(tmp_path / "tb"))
    assert loaded.get_env() is env and loaded.replay_buffer.env is env
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.num_timesteps == 80
    assert loaded.policy.normalizer.obs.count.item() == 80
    assert loaded._n_updates > model._n_updates


def run_seeded(algo, n_envs: int, seed: int, steps: int = 100):
    env = DummyVecEnv([make_point_env] * n_envs)
    model = small_model(algo, env, seed=seed, train_freq=10, learning_starts=20)
    model.learn(steps)
    return model


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("n_envs", [1, 2])
def test_same_seed_same_run(algo, n_envs):
    first, second = run_seeded(algo, n_envs, seed=3), run_seeded(algo, n_envs, seed=3)
    assert first._n_updates == second._n_updates > 0
    assert params_equal(first, second)
    for key in first.replay_buffer.observations:
        np.testing.assert_array_equal(first.replay_buffer.observations[key], second.replay_buffer.observations[key])
    np.testing.assert_array_equal(first.replay_buffer.actions, second.replay_buffer.actions)
    assert [info["r"] for info in first.ep_info_buffer] == [info["r"] for info in second.ep_info_buffer]
    other = run_seeded(algo, n_envs, seed=4)
    assert not params_equal(first, other)


def test_same_seed_same_run_fetch():
    def run():
        model = small_model(HerDDPG, make_fetch_reach(), learning_starts=60, train_freq=(1, "episode"))
        model.learn(150)
        return model

    first, second = run(), run()
    assert first._n_updates > 0
    assert params_equal(first, second)
    np.testing.assert_array_equal(first.replay_buffer.actions, second.replay_buffer.actions)
