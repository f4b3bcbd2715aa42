"""save / load: identical actions, weights, normaliser statistics and hyperparameters; replay buffer round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from conftest import SMALL_KWARGS, PointGoalEnv, make_point_env, params_equal
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher import GoalPolicy, HerDDPG, HerTD3

ALGOS = [HerDDPG, HerTD3]

# Non-default values of every HER hyperparameter, to see that each one survives a save.
HER_KWARGS = {
    "clip_return": 7.0,
    "clip_positive_returns": False,
    "action_l2": 0.25,
    "random_eps": 0.15,
    "noise_eps": 0.05,
    "target_update_interval": 3,
    "gamma": 0.93,
    "tau": 0.1,
    "n_sampled_goal": 2,
    "n_steps": 3,
}


def trained_model(algo, **kwargs):
    model = algo("MultiInputPolicy", make_point_env(), **{**SMALL_KWARGS, "seed": 0, **kwargs})
    model.learn(60)
    assert model._n_updates > 0 and model.policy.normalizer.obs.count.item() == 60
    return model


def observation_batch(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    env = DummyVecEnv([make_point_env])
    env.seed(seed)
    obs = [env.reset()]
    for _ in range(n - 1):
        obs.append(env.step(np.random.default_rng(len(obs)).uniform(-1, 1, size=(1, 2)))[0])
    return {key: np.concatenate([o[key] for o in obs]) for key in obs[0]}


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load_identical(algo, tmp_path):
    model = trained_model(algo, **HER_KWARGS)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=make_point_env())

    assert params_equal(model, loaded)
    for name in ("obs", "goal"):
        source, target = getattr(model.policy.normalizer, name), getattr(loaded.policy.normalizer, name)
        for stat in ("mean", "var", "count"):
            assert th.equal(getattr(source, stat), getattr(target, stat)), (name, stat)
    obs = observation_batch()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])

    for key, value in HER_KWARGS.items():
        assert getattr(loaded, key) == value, key
    assert loaded.return_bounds == (-7.0, float("inf"))  # baselines: clip_pos_returns=False leaves returns unbounded above
    assert loaded.replay_buffer.n_sampled_goal == 2
    assert loaded.policy.clip_obs == model.policy.clip_obs
    assert loaded.num_timesteps == 60
    # The loaded model trains on.
    loaded.learn(30, reset_num_timesteps=False)
    assert loaded.num_timesteps == 90


def test_policy_kwargs_survive(tmp_path):
    model = trained_model(HerDDPG, policy_kwargs={"net_arch": [16, 8], "clip_obs": 3.0, "norm_clip": 2.0, "norm_eps": 0.1})
    model.save(tmp_path / "model.zip")
    loaded = HerDDPG.load(tmp_path / "model.zip", env=make_point_env())
    assert (loaded.policy.clip_obs, loaded.policy.norm_clip, loaded.policy.norm_eps) == (3.0, 2.0, 0.1)
    assert loaded.policy.normalizer.obs.clip_obs == 3.0 and loaded.policy.normalizer.goal.clip_range == 2.0
    assert params_equal(model, loaded)


@pytest.mark.parametrize("algo", ALGOS)
def test_replay_buffer_round_trip(algo, tmp_path):
    model = trained_model(algo)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    source = model.replay_buffer

    loaded = algo.load(tmp_path / "model.zip", env=make_point_env())
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    target = loaded.replay_buffer
    assert type(target) is type(source)
    assert (target.pos, target.full, target.buffer_size, target.n_envs) == (source.pos, source.full, source.buffer_size, 1)
    for name in ("observations", "next_observations"):
        for key in source.observations:
            np.testing.assert_array_equal(getattr(target, name)[key], getattr(source, name)[key])
    for name in ("actions", "rewards", "dones", "timeouts", "ep_start", "ep_length", "_current_ep_start"):
        np.testing.assert_array_equal(getattr(target, name), getattr(source, name), err_msg=name)
    assert target.her_ratio == source.her_ratio
    assert target.env is loaded.env

    # Relabelling works on the loaded buffer, and training continues from it.
    target.sample(16)
    loaded.learn(30, reset_num_timesteps=False)
    assert target.pos == 90
    np.testing.assert_array_equal(target.observations["observation"][:60], source.observations["observation"][:60])


@pytest.mark.parametrize("algo", ALGOS)
def test_policy_saved_alone(algo, tmp_path):
    model = trained_model(algo)
    model.policy.save(tmp_path / "policy.pth")
    policy = GoalPolicy.load(tmp_path / "policy.pth")
    assert isinstance(policy, GoalPolicy)
    obs = observation_batch()
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert th.equal(policy.normalizer.obs.mean, model.policy.normalizer.obs.mean)
    assert policy.normalizer.goal.count.item() == 60


def test_load_into_other_observation_layout_fails(tmp_path):
    class WiderPointEnv(PointGoalEnv):
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = spaces.Dict(
                {**self.observation_space.spaces, "observation": spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)}
            )

    trained_model(HerDDPG).save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        HerDDPG.load(tmp_path / "model.zip", env=WiderPointEnv())


@pytest.mark.parametrize("algo", [HerDDPG, HerTD3])
def test_load_without_env_predicts_then_learns_after_set_env(algo, tmp_path):
    """SB3 refuses to load HER models without their env; ours load for inference, and learn once given one."""
    model = trained_model(algo)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip")
    assert loaded.get_env() is None and loaded.replay_buffer.env is None
    obs = make_point_env().reset(seed=3)[0]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert params_equal(loaded, model)
    env = make_point_env()
    loaded.set_env(env)
    assert loaded.replay_buffer.env is loaded.get_env()
    loaded.learn(200, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps + 200
