"""HerTQC: normaliser, clipped target quantiles, save/load, errors, vanilla counterpart and a seeded FetchReach run."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from conftest import SMALL_KWARGS, make_fetch_reach, make_point_env, params_equal
from gymnasium import spaces
from sb3_contrib import TQC
from sb3_contrib.tqc.policies import MultiInputPolicy
from stable_baselines3.common.vec_env import DummyVecEnv
from test_learning import learn_until

from sb3_hher import GoalTQCPolicy, HerTQC
from sb3_hher.common.goal_env import GoalEnvError
from sb3_hher.her import her_tqc
from sb3_hher.her.core import NonFiniteObservationError
from sb3_hher.her.presets import get_preset, vanilla_tqc_kwargs


def make_model(env=None, **kwargs) -> HerTQC:
    params = {**SMALL_KWARGS, "seed": 0, **kwargs}
    return HerTQC("MultiInputPolicy", env if env is not None else make_point_env(), **params)


def collected_model(steps: int = 40, **kwargs) -> HerTQC:
    model = make_model(learning_starts=10_000, **kwargs)
    model.learn(steps)
    assert model._n_updates == 0
    return model


def test_defaults_on_fetch_reach(fetch_env):
    model = HerTQC("MultiInputPolicy", fetch_env, buffer_size=1_000)
    assert isinstance(model.policy, GoalTQCPolicy)
    assert model.gamma == pytest.approx(0.98)
    assert model.return_bounds == pytest.approx((-50.0, 0.0))
    assert model.action_noise is None and model.random_eps == 0.0
    assert model.policy.net_arch == [256, 256, 256]
    assert (model.batch_size, model.tau, model.learning_starts) == (256, 0.005, 1000)


def test_soft_return_bounds_widen_by_the_entropy_bonus():
    model = collected_model(gamma=0.9)
    assert model.return_bounds == pytest.approx((-10.0, 0.0))
    assert model.soft_return_bounds(0.0) == pytest.approx((-10.0, 0.0))
    # A bonus b per step adds gamma * b / (1 - gamma) = 9 b on its side only.
    assert model.soft_return_bounds(-0.5) == pytest.approx((-14.5, 0.0))
    assert model.soft_return_bounds(1.0) == pytest.approx((-10.0, 9.0))


@pytest.mark.parametrize("ent_coef", [0.0, 0.3])
@pytest.mark.parametrize("next_q", [1_000.0, -1_000.0])
def test_target_quantiles_stay_within_soft_return_bounds(ent_coef, next_q, monkeypatch):
    model = collected_model(gamma=0.9, ent_coef=ent_coef)
    low, high = model.return_bounds
    assert (low, high) == pytest.approx((-10.0, 0.0))
    for q_net in model.critic_target.q_networks:
        last = [module for module in q_net.modules() if isinstance(module, th.nn.Linear)][-1]
        with th.no_grad():
            last.weight.zero_()
            last.bias.fill_(next_q)
    targets, bounds = [], []
    original_loss, original_bounds = her_tqc.quantile_huber_loss, model.soft_return_bounds

    def recording_loss(current, target, **kwargs):
        targets.append(target.detach().clone())
        return original_loss(current, target, **kwargs)

    def recording_bounds(entropy_bonus):
        bounds.append(original_bounds(entropy_bonus))
        return bounds[-1]

    monkeypatch.setattr(her_tqc, "quantile_huber_loss", recording_loss)
    monkeypatch.setattr(model, "soft_return_bounds", recording_bounds)
    model.train(gradient_steps=3, batch_size=32)
    assert len(targets) == len(bounds) == 3
    for target, (soft_low, soft_high) in zip(targets, bounds, strict=True):
        # n_quantiles * n_critics minus the dropped ones, one row per transition.
        assert target.shape[1:] == (1, model.critic.quantiles_total - 2 * model.critic.n_critics)
        assert th.allclose(target, th.full_like(target, soft_high if next_q > 0 else soft_low)), target.unique()
        if ent_coef == 0.0:
            assert (soft_low, soft_high) == pytest.approx((low, high))
        else:
            assert soft_low <= low and soft_high >= high
    assert model.logger.name_to_value["train/clipped_target_fraction"] == 1.0
    assert "train/ent_coef" in model.logger.name_to_value


def test_no_clipping_when_disabled(monkeypatch):
    model = collected_model(gamma=0.9, clip_return=None)
    assert model.return_bounds is None
    model.train(gradient_steps=2, batch_size=32)
    assert "train/clipped_target_fraction" not in model.logger.name_to_value


def test_normalizer_fed_with_every_finished_episode():
    env = DummyVecEnv([lambda: make_point_env(max_episode_steps=10)])
    model = make_model(env, learning_starts=10_000, train_freq=1)
    model.learn(35)
    normalizer = model.policy.normalizer
    assert normalizer.obs.count.item() == normalizer.goal.count.item() == 30
    observations = model.replay_buffer.observations["observation"][:30, 0].astype(np.float64)
    np.testing.assert_allclose(normalizer.obs.mean.numpy(), observations.mean(axis=0), rtol=1e-5, atol=1e-7)
    # Actor and critics read through that one normaliser.
    assert model.actor.features_extractor.normalizer is normalizer
    assert model.critic.features_extractor.normalizer is normalizer
    assert model.critic_target.features_extractor.normalizer is normalizer


def test_predict_uses_normalizer():
    model = collected_model()
    obs = model.env.reset()
    before = model.predict(obs, deterministic=True)[0]
    model.policy.normalizer.obs.update(np.random.default_rng(0).normal(3.0, 2.0, size=(100, 4)))
    assert not np.allclose(before, model.predict(obs, deterministic=True)[0])


def test_random_eps_one_gives_uniform_actions():
    model = make_model(random_eps=1.0, learning_starts=0, gradient_steps=0)
    model.learn(200)
    actions = model.replay_buffer.actions[:200, 0]
    # A squashed Gaussian of a fresh policy concentrates near 0; uniform actions fill [-1, 1].
    assert np.abs(actions).max() > 0.95 and abs(actions.mean()) < 0.15 and actions.std() > 0.5


def test_save_load_round_trip(tmp_path):
    kwargs = {"gamma": 0.93, "clip_return": 7.0, "clip_positive_returns": False, "random_eps": 0.1, "n_sampled_goal": 2}
    model = make_model(**kwargs, policy_kwargs={"net_arch": [32, 32], "n_quantiles": 7, "norm_clip": 4.0})
    model.learn(60)
    assert model._n_updates > 0
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = HerTQC.load(tmp_path / "model.zip", env=make_point_env())
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")

    assert params_equal(model, loaded)
    for name in ("obs", "goal"):
        for stat in ("mean", "var", "count"):
            assert th.equal(
                getattr(getattr(model.policy.normalizer, name), stat), getattr(getattr(loaded.policy.normalizer, name), stat)
            )
    obs = model.env.reset()
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for key, value in kwargs.items():
        assert getattr(loaded, key) == value, key
    assert loaded.policy.norm_clip == 4.0 and loaded.critic.n_quantiles == 7
    assert th.equal(model.log_ent_coef, loaded.log_ent_coef)
    assert loaded.replay_buffer.size() == model.replay_buffer.size()
    loaded.learn(30, reset_num_timesteps=False)
    assert loaded.num_timesteps == 90

    # Without an env: predicts the same actions.
    alone = HerTQC.load(tmp_path / "model.zip")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], alone.predict(obs, deterministic=True)[0])


def test_errors():
    box_env = make_point_env()
    box_env.observation_space = spaces.Box(-1, 1, shape=(4,))
    with pytest.raises(GoalEnvError, match="Dict"):
        make_model(box_env)
    with pytest.raises(TypeError, match="normaliser"):
        HerTQC(MultiInputPolicy, make_point_env(), buffer_size=1_000)
    with pytest.raises(ValueError, match="random_eps"):
        make_model(random_eps=1.5)


def test_non_finite_observation_is_refused():
    env = make_point_env()
    original_step = env.step
    calls = {"n": 0}

    def step(action):
        obs, reward, terminated, truncated, info = original_step(action)
        calls["n"] += 1
        if calls["n"] == 3:
            obs = {**obs, "observation": np.full_like(obs["observation"], np.nan)}
        return obs, reward, terminated, truncated, info

    env.step = step
    with pytest.raises(NonFiniteObservationError, match="'observation'"):
        make_model(env).learn(10)


def test_vanilla_counterpart_shares_the_settings(fetch_env):
    her_kwargs = {**get_preset("tqc-one-env"), "policy_kwargs": {"net_arch": [64, 64], "n_quantiles": 10, "norm_clip": 3.0}}
    kwargs = vanilla_tqc_kwargs(her_kwargs, max_episode_steps=50)
    ours = HerTQC("MultiInputPolicy", fetch_env, buffer_size=1_000, **her_kwargs)
    vanilla = TQC("MultiInputPolicy", fetch_env, **{**kwargs, "buffer_size": 1_000})
    for key in ("gamma", "batch_size", "tau", "learning_starts", "target_update_interval", "top_quantiles_to_drop_per_net"):
        assert getattr(ours, key) == pytest.approx(getattr(vanilla, key)), key
    assert ours.learning_rate == vanilla.learning_rate
    assert vanilla.policy.net_arch == ours.policy.net_arch == [64, 64]
    assert vanilla.critic.n_quantiles == ours.critic.n_quantiles == 10
    assert vanilla.replay_buffer.n_sampled_goal == ours.replay_buffer.n_sampled_goal == 4
    assert type(vanilla.replay_buffer).__name__ == "HerReplayBuffer"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_her_tqc_solves_fetch_reach():
    """The package defaults, buffer aside: success >= 0.9 within 3,000 env steps."""
    env, eval_env = make_fetch_reach(), make_fetch_reach()
    try:
        model = HerTQC("MultiInputPolicy", env, buffer_size=10_000, seed=0)
        history = learn_until(model, eval_env, [2_000, 2_500, 3_000])
    finally:
        env.close()
        eval_env.close()
    assert history[-1][1] >= 0.9, history


def test_vanilla_counterpart_refuses_what_it_cannot_match():
    with pytest.raises(ValueError, match="n_steps"):
        vanilla_tqc_kwargs({"n_steps": 3}, max_episode_steps=50)
    with pytest.raises(ValueError, match="no vanilla TQC counterpart"):
        vanilla_tqc_kwargs({"action_l2": 1.0}, max_episode_steps=50)
    # Settings both have are passed through; what HerTQC adds is left out.
    kwargs = vanilla_tqc_kwargs({"use_sde": True, "stats_window_size": 10, "random_eps": 0.2, "clip_return": None}, 50)
    assert kwargs["use_sde"] is True and kwargs["stats_window_size"] == 10
    assert "random_eps" not in kwargs and "clip_return" not in kwargs
    # Buffer settings SB3's HerReplayBuffer has are kept (those in replay_buffer_kwargs win, as in HerTQC);
    # HindsightReplayBuffer's own are what sb3-hher adds.
    buffer_kwargs = {"episode_priority": "energy", "copy_info_dict": True, "n_sampled_goal": 2}
    kwargs = vanilla_tqc_kwargs({"replay_buffer_kwargs": buffer_kwargs}, 50)
    assert kwargs["replay_buffer_kwargs"] == {"n_sampled_goal": 2, "goal_selection_strategy": "future", "copy_info_dict": True}


def test_caller_dicts_are_not_modified():
    policy_kwargs, buffer_kwargs = {"net_arch": [32, 32]}, {"n_sampled_goal": 2}
    make_model(policy_kwargs=policy_kwargs, replay_buffer_kwargs=buffer_kwargs, n_steps=2)
    assert policy_kwargs == {"net_arch": [32, 32]} and buffer_kwargs == {"n_sampled_goal": 2}


def test_train_without_clipping_is_sb3_contrib_tqc():
    """On the same batch, weights and random stream, HerTQC's update is TQC's (clipping off): same parameters."""
    ours = collected_model(gamma=0.9, clip_return=None, tau=0.05, target_update_interval=1)
    theirs = TQC(
        GoalTQCPolicy,
        ours.env,
        learning_rate=ours.learning_rate,
        batch_size=32,
        tau=0.05,
        gamma=0.9,
        learning_starts=10_000,
        policy_kwargs=dict(SMALL_KWARGS["policy_kwargs"]),  # a copy: TQC writes use_sde into it
        seed=1,
    )
    theirs.set_logger(ours.logger)
    theirs.policy.load_state_dict(ours.policy.state_dict())
    batch = ours.replay_buffer.sample(32)
    for model in (ours, theirs):
        model.replay_buffer.sample = lambda *args, **kwargs: batch
        th.manual_seed(123)
        model.train(gradient_steps=3, batch_size=32)
    for (name, mine), (_, reference) in zip(ours.policy.state_dict().items(), theirs.policy.state_dict().items(), strict=True):
        # Float noise only (sums in another order): 1e-5 against updates of about 1e-3.
        assert th.allclose(mine, reference, atol=1e-5), (name, (mine - reference).abs().max())
    assert th.allclose(ours.log_ent_coef, theirs.log_ent_coef)
