"""HerDDPG / HerTD3: return clipping, exploration, action L2, target update schedule, normaliser feeding, logging."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch as th
from conftest import SMALL_KWARGS, make_fetch_reach, make_point_env
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
from torch.nn import functional as F

from sb3_hher import HerDDPG, HerTD3
from sb3_hher.common.goal_env import GoalEnvError
from sb3_hher.her import core, presets

ALGOS = [HerDDPG, HerTD3]


def make_model(algo, env=None, **kwargs):
    params = {**SMALL_KWARGS, "seed": 0, **kwargs}
    return algo("MultiInputPolicy", env if env is not None else make_point_env(), **params)


def collected_model(algo, steps: int = 40, **kwargs):
    """A model whose buffer holds ``steps`` transitions and which has not trained yet."""
    model = make_model(algo, learning_starts=10_000, **kwargs)
    model.learn(steps)
    assert model._n_updates == 0
    return model


def set_constant_output(network: th.nn.Module, value: float) -> None:
    """Make the last linear layer of ``network`` output ``value`` whatever its input."""
    last = [module for module in network.modules() if isinstance(module, th.nn.Linear)][-1]
    with th.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


# --- Return bounds ------------------------------------------------------------------------------------------------


def test_return_bounds_fetch_reach(fetch_env):
    model = HerDDPG("MultiInputPolicy", fetch_env, buffer_size=1_000)
    # gamma = 1 - 1/T with T = 50 (baselines), targets clipped to [-1/(1-gamma), 0] = [-50, 0].
    assert model.gamma == pytest.approx(0.98)
    assert model.return_bounds == pytest.approx((-50.0, 0.0))


@pytest.mark.parametrize("algo", ALGOS)
def test_return_bounds_follow_reward_range(algo):
    negative = make_model(algo, make_point_env(max_episode_steps=10, reward_range=(-1.0, 0.0)), gamma=None)
    assert negative.gamma == pytest.approx(0.9)
    assert negative.return_bounds == pytest.approx((-10.0, 0.0))
    # PointMaze-like {0, 1} rewards: clipping to [-1/(1-gamma), 0] would be wrong.
    positive = make_model(algo, make_point_env(max_episode_steps=20, reward_range=(0.0, 1.0)), gamma=None)
    assert positive.gamma == pytest.approx(0.95)
    assert positive.return_bounds == pytest.approx((0.0, 20.0))


def test_numeric_clip_return():
    assert make_model(HerDDPG, clip_return=7.0).return_bounds == (-7.0, 0.0)
    assert make_model(HerDDPG, clip_return=7.0, clip_positive_returns=False).return_bounds == (-7.0, float("inf"))
    assert make_model(HerDDPG, clip_return=None).return_bounds is None
    positive_env = make_point_env(reward_range=(0.0, 1.0))
    with pytest.raises(GoalEnvError, match="clip_positive_returns"):
        make_model(HerDDPG, positive_env, clip_return=7.0)
    assert make_model(HerDDPG, positive_env, clip_return=7.0, clip_positive_returns=False).return_bounds == (
        -7.0,
        float("inf"),
    )


def test_explicit_gamma_is_kept():
    model = make_model(HerDDPG, gamma=0.9)
    assert model.gamma == 0.9
    assert model.return_bounds == pytest.approx((-10.0, 0.0))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("reward_range", [(-1.0, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize("next_q", [1_000.0, -1_000.0])
def test_td_targets_stay_within_return_bounds(algo, reward_range, next_q, monkeypatch):
    model = collected_model(algo, env=make_point_env(reward_range=reward_range), gamma=0.9)
    low, high = model.return_bounds
    assert high - low == pytest.approx(10.0)
    set_constant_output(model.critic_target, next_q)

    targets = []

    def recording_mse_loss(prediction, target, *args, **kwargs):
        targets.append(target.detach().clone())
        return F.mse_loss(prediction, target, *args, **kwargs)

    monkeypatch.setattr(core, "F", types.SimpleNamespace(mse_loss=recording_mse_loss))
    model.train(gradient_steps=3, batch_size=32)
    assert targets
    values = th.cat(targets)
    # Every unclipped target r + 0.9 * next_q is out of range, so every target sits on the violated bound.
    expected = high if next_q > 0 else low
    assert th.all(values == expected), values.unique()
    assert model.logger.name_to_value["train/clipped_target_fraction"] == 1.0
    assert model.logger.name_to_value["train/target_q_mean"] == pytest.approx(expected)


def test_no_clipping_when_disabled(monkeypatch):
    model = collected_model(HerDDPG, gamma=0.9, clip_return=None)
    set_constant_output(model.critic_target, 1_000.0)
    targets = []

    def recording_mse_loss(prediction, target):
        targets.append(target.detach().clone())
        return F.mse_loss(prediction, target)

    monkeypatch.setattr(core, "F", types.SimpleNamespace(mse_loss=recording_mse_loss))
    model.train(gradient_steps=1, batch_size=32)
    # r in {-1, 0}: r + 0.9 * 1000 with no clip.
    assert set(targets[0].unique().tolist()) <= {899.0, 900.0}
    assert "train/clipped_target_fraction" not in model.logger.name_to_value


@pytest.mark.parametrize("algo", ALGOS)
def test_n_step_targets_use_the_batch_discounts(algo, monkeypatch):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's "n_steps is ignored with a custom buffer" must not fire
        model = collected_model(algo, gamma=0.9, clip_return=None, n_steps=3)
    assert model.n_steps == 3 and model.replay_buffer.n_steps == 3 and model.replay_buffer.gamma == 0.9
    set_constant_output(model.critic_target, 10.0)
    batches, targets = [], []
    sample = model.replay_buffer.sample

    def recording_sample(*args, **kwargs):
        batches.append(sample(*args, **kwargs))
        return batches[-1]

    def recording_mse_loss(prediction, target):
        targets.append(target.detach().clone())
        return F.mse_loss(prediction, target)

    monkeypatch.setattr(model.replay_buffer, "sample", recording_sample)
    monkeypatch.setattr(core, "F", types.SimpleNamespace(mse_loss=recording_mse_loss))
    model.train(gradient_steps=1, batch_size=64)
    batch = batches[0]
    assert batch.discounts is not None
    # gamma^k with k = 1..3 steps taken (fewer than 3 near the end of an episode).
    distance = (batch.discounts - th.tensor([0.9, 0.81, 0.729])).abs().min(dim=1).values
    assert th.all(distance < 1e-6) and th.any(batch.discounts < 0.8)
    th.testing.assert_close(targets[0], batch.rewards + (1 - batch.dones) * batch.discounts * 10.0)


def test_invalid_n_steps():
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        make_model(HerDDPG, n_steps=0)


# --- Exploration --------------------------------------------------------------------------------------------------


def saturated_explorer(algo, random_eps: float):
    """A model past learning_starts whose deterministic action is always (0.9, 0.9), with no Gaussian noise."""
    model = make_model(algo, learning_starts=0, random_eps=random_eps, noise_eps=0.0)
    model.learn(1)  # Sets up _last_obs.
    set_constant_output(model.actor.mu, float(np.arctanh(0.9)))
    assert model.action_noise is None
    return model


@pytest.mark.parametrize("algo", ALGOS)
def test_random_eps_one_gives_uniform_actions(algo):
    model = saturated_explorer(algo, random_eps=1.0)
    np.random.seed(0)
    actions, buffer_actions = zip(
        *(model._sample_action(model.learning_starts, None, n_envs=1) for _ in range(1_000)), strict=True
    )
    actions = np.concatenate(actions)
    np.testing.assert_allclose(actions, np.concatenate(buffer_actions), atol=1e-6)  # action space is [-1, 1]
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    # Pearson's chi-square test of uniformity on 10 bins per dimension (9 degrees of freedom, 99.9% quantile 27.9):
    # the policy itself would put every action at 0.9.
    for dim in range(actions.shape[1]):
        counts, _ = np.histogram(actions[:, dim], bins=10, range=(-1.0, 1.0))
        expected = len(actions) / 10
        assert np.sum((counts - expected) ** 2 / expected) < 27.9, counts


@pytest.mark.parametrize("random_eps", [0.0, 0.3])
def test_random_eps_fraction(random_eps):
    model = saturated_explorer(HerDDPG, random_eps=random_eps)
    np.random.seed(1)
    actions = np.concatenate([model._sample_action(model.learning_starts, None, n_envs=1)[0] for _ in range(1_000)])
    policy_action = np.isclose(actions, 0.9, atol=1e-5).all(axis=1)
    assert np.mean(~policy_action) == pytest.approx(random_eps, abs=0.05)


def test_uniform_warmup_before_learning_starts():
    model = make_model(HerDDPG, learning_starts=10_000, random_eps=0.0, noise_eps=0.0)
    model.learn(1)
    set_constant_output(model.actor.mu, float(np.arctanh(0.9)))
    actions = np.concatenate([model._sample_action(model.learning_starts, None, n_envs=1)[0] for _ in range(500)])
    assert actions.std() > 0.4


# --- Training step ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("action_l2", [0.0, 2.5])
def test_action_l2_term_logged(algo, action_l2, monkeypatch):
    model = collected_model(algo, action_l2=action_l2)
    batch = model.replay_buffer.sample(32)
    monkeypatch.setattr(model.replay_buffer, "sample", lambda *args, **kwargs: batch)
    with th.no_grad():
        expected_l2 = action_l2 * model.actor(batch.observations).pow(2).mean().item()
    # One actor update: the first policy_delay gradient steps change the critic only before it.
    model.train(gradient_steps=model.policy_delay, batch_size=32)
    logged = model.logger.name_to_value
    if action_l2 == 0:
        assert logged.get("train/action_l2_loss", 0.0) == 0.0
    else:
        assert expected_l2 > 0
        assert logged["train/action_l2_loss"] == pytest.approx(expected_l2, rel=1e-5)
    assert "train/actor_loss" in logged and "train/q_mean" in logged


def flat_params(module: th.nn.Module) -> th.Tensor:
    return th.cat([param.detach().flatten() for param in module.parameters()]).clone()


@pytest.mark.parametrize("algo", ALGOS)
def test_targets_updated_every_interval(algo):
    tau = 0.3
    model = collected_model(algo, target_update_interval=3, tau=tau)
    actor_target, critic_target = flat_params(model.actor_target), flat_params(model.critic_target)
    for step in (1, 2):
        model.train(gradient_steps=1, batch_size=32)
        assert th.equal(flat_params(model.actor_target), actor_target), f"actor target changed after {step} steps"
        assert th.equal(flat_params(model.critic_target), critic_target), f"critic target changed after {step} steps"
        assert not th.equal(flat_params(model.critic), critic_target)
    model.train(gradient_steps=1, batch_size=32)
    # Third gradient step: one polyak update towards the current online networks.
    th.testing.assert_close(flat_params(model.critic_target), (1 - tau) * critic_target + tau * flat_params(model.critic))
    th.testing.assert_close(flat_params(model.actor_target), (1 - tau) * actor_target + tau * flat_params(model.actor))
    actor_target, critic_target = flat_params(model.actor_target), flat_params(model.critic_target)
    model.train(gradient_steps=2, batch_size=32)
    assert th.equal(flat_params(model.critic_target), critic_target)
    model.train(gradient_steps=1, batch_size=32)
    assert not th.equal(flat_params(model.critic_target), critic_target)


class NormalizerCountRecorder(BaseCallback):
    """Records (steps stored so far, normaliser count) before each transition is stored."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, float, float]] = []

    def _on_step(self) -> bool:
        normalizer = self.model.policy.normalizer
        # on_step runs after env.step and before the transition is stored.
        stored = self.num_timesteps - self.training_env.num_envs
        self.records.append((stored, normalizer.obs.count.item(), normalizer.goal.count.item()))
        return True


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("n_envs", [1, 2])
def test_normalizer_fed_once_per_episode(algo, n_envs):
    episode_length = 10
    env = DummyVecEnv([lambda: make_point_env(max_episode_steps=episode_length)] * n_envs)
    model = make_model(algo, env, learning_starts=10_000, train_freq=1)
    recorder = NormalizerCountRecorder()
    model.learn(35 * n_envs, callback=recorder)
    for stored, obs_count, goal_count in recorder.records:
        steps_per_env = stored // n_envs
        expected = (steps_per_env // episode_length) * episode_length * n_envs
        assert obs_count == goal_count == expected, (stored, obs_count)
    normalizer = model.policy.normalizer
    assert normalizer.obs.count.item() == 30 * n_envs
    # The observation statistics are exactly those of the stored observations of the finished episodes.
    observations = model.replay_buffer.observations["observation"][:30].reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(normalizer.obs.mean.numpy(), observations.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(normalizer.obs.var.numpy(), observations.var(axis=0), rtol=1e-4, atol=1e-7)


def test_predict_uses_normalizer():
    model = collected_model(HerDDPG)
    obs = model.env.reset()
    before = model.predict(obs, deterministic=True)[0]
    model.policy.normalizer.obs.update(np.random.default_rng(0).normal(3.0, 2.0, size=(100, 4)))
    after = model.predict(obs, deterministic=True)[0]
    assert not np.allclose(before, after)


# --- Vectorised envs, callbacks, progress bar, logging --------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("vec_env_class", [DummyVecEnv, SubprocVecEnv])
def test_two_envs(algo, vec_env_class):
    kwargs = {"start_method": "fork"} if vec_env_class is SubprocVecEnv else {}
    env = vec_env_class([make_point_env] * 2, **kwargs)
    try:
        # SB3 collects whole episodes only with one env: train every 10 steps (one episode of each env).
        model = make_model(algo, env, train_freq=10)
        model.learn(60)
        assert model.num_timesteps == 60
        assert model.replay_buffer.pos == 30
        assert model.policy.normalizer.obs.count.item() == 60
        assert model._n_updates > 0
        # Both envs' columns hold their own episodes.
        achieved = model.replay_buffer.observations["achieved_goal"][:30]
        assert not np.allclose(achieved[:, 0], achieved[:, 1])
    finally:
        env.close()


@pytest.mark.parametrize("algo", ALGOS)
def test_default_schedule_with_two_envs(algo):
    env = DummyVecEnv([make_point_env] * 2)
    kwargs = {key: value for key, value in SMALL_KWARGS.items() if key != "train_freq"}
    model = algo("MultiInputPolicy", env, seed=0, **kwargs)
    model.learn(60)
    assert model._n_updates > 0


class CountingCallback(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.n_steps = 0
        self.started = self.ended = False

    def _on_training_start(self) -> None:
        self.started = True

    def _on_step(self) -> bool:
        self.n_steps += 1
        return True

    def _on_training_end(self) -> None:
        self.ended = True


@pytest.mark.parametrize("algo", ALGOS)
def test_callbacks_and_progress_bar(algo):
    model = make_model(algo)
    callback = CountingCallback()
    model.learn(50, callback=[callback], progress_bar=True)
    assert callback.started and callback.ended
    assert callback.n_steps == 50


@pytest.mark.parametrize("algo", ALGOS)
def test_tensorboard_logging(algo, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_model(algo, make_point_env(monitor=True), tensorboard_log=str(tmp_path))
    model.learn(80, log_interval=1)
    runs = list(tmp_path.iterdir())
    assert [run.name for run in runs] == [f"{algo.__name__}_1"]
    accumulator = EventAccumulator(str(runs[0]))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = {
        "train/q_mean",
        "train/target_q_mean",
        "train/critic_loss",
        "train/actor_loss",
        "train/action_l2_loss",
        "train/clipped_target_fraction",
        "train/normalizer/obs_std_mean",
        "train/normalizer/goal_std_mean",
        "rollout/success_rate",
        "rollout/ep_rew_mean",
        "rollout/achieved_goal_move",
    }
    assert expected <= tags, expected - tags
    q_means = [event.value for event in accumulator.Scalars("train/q_mean")]
    assert all(np.isfinite(q_means))
    # The point is the achieved goal: its moves over the last episodes, recomputed from the buffer.
    buffer = model.replay_buffer
    ends = np.flatnonzero(buffer.dones[: buffer.pos, 0])
    starts = np.concatenate(([0], ends[:-1] + 1))
    moves = np.linalg.norm(
        buffer.next_observations["achieved_goal"][ends, 0] - buffer.observations["achieved_goal"][starts, 0], axis=1
    )
    assert list(model._achieved_goal_moves) == pytest.approx(list(moves[-len(model._achieved_goal_moves) :]))
    assert accumulator.Scalars("rollout/achieved_goal_move")[-1].value == pytest.approx(np.mean(model._achieved_goal_moves))


# --- FetchReach smoke test ----------------------------------------------------------------------------------------


def test_fetch_reach_defaults_run(fetch_env):
    model = HerDDPG("MultiInputPolicy", fetch_env, buffer_size=2_000, seed=0)
    assert model.batch_size == 256 and model.gradient_steps == 40 and model.target_update_interval == 40
    assert model.tau == pytest.approx(0.05) and model.n_sampled_goal == 4 and model.replay_buffer.her_ratio == 0.8
    assert model.random_eps == 0.3 and model.action_l2 == 1.0
    assert [layer.out_features for layer in model.actor.mu if isinstance(layer, th.nn.Linear)] == [256, 256, 256, 4]
    assert model.policy.clip_obs == 200.0 and model.policy.norm_clip == 5.0 and model.policy.norm_eps == 0.01
    model.learn(200)
    # Cycles of 2 episodes of 50 steps; SB3 trains once num_timesteps > learning_starts (100): 40 gradient steps.
    assert model.num_timesteps == 200
    assert model._n_updates == 40
    assert model.policy.normalizer.obs.count.item() == 200
    assert model.policy.normalizer.obs.size == 10 and model.policy.normalizer.goal.size == 3


def test_fetch_make_helper():
    env = make_fetch_reach()
    try:
        assert env.spec.max_episode_steps == 50
    finally:
        env.close()


def test_env_id_string_without_importing_gymnasium_robotics():
    # The one-liner: an env id alone works, without importing gymnasium_robotics first (fresh interpreter,
    # since this test session has registered the robotics envs already).
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; from sb3_hher import HerDDPG, HerTD3, HHER\n"
        "assert 'FetchReach-v4' not in gym.registry\n"
        "for cls in (HerDDPG, HerTD3, HHER):\n"
        "    model = cls('MultiInputPolicy', 'FetchReach-v4', buffer_size=2_000)\n"
        "    assert model.get_env().num_envs == 1\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("algo", [HerDDPG, HerTD3])
def test_critic_layer_norm(algo, tmp_path):
    env = make_point_env()
    kwargs = {**SMALL_KWARGS, "policy_kwargs": {**SMALL_KWARGS.get("policy_kwargs", {}), "critic_layer_norm": True}}
    model = algo("MultiInputPolicy", env, seed=0, **kwargs)
    for critic in (model.critic, model.critic_target):
        for idx, q_net in enumerate(critic.q_networks):
            n_hidden = sum(isinstance(layer, th.nn.Linear) for layer in q_net) - 1
            assert sum(isinstance(layer, th.nn.LayerNorm) for layer in q_net) == n_hidden > 0
            assert q_net is getattr(critic, f"qf{idx}")
    # The optimiser trains the normalisation parameters too; the actor has none.
    optimised = {id(p) for group in model.critic.optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in model.critic.parameters() if p.requires_grad)
    assert not any(isinstance(layer, th.nn.LayerNorm) for layer in model.actor.modules())
    model.learn(300)
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=env)
    assert loaded.policy.critic_layer_norm
    for p, q in zip(model.critic.parameters(), loaded.critic.parameters(), strict=True):
        assert th.equal(p, q)


# --- random_eps schedules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_random_eps_schedule(algo, tmp_path):
    from stable_baselines3.common.utils import LinearSchedule

    model = make_model(algo, random_eps=LinearSchedule(1.0, 0.0, 0.5), noise_eps=0.0, learning_starts=0)
    assert model.random_eps_at(1.0) == 1.0 and model.random_eps_at(0.5) == 0.0
    model.learn(40)  # the schedule reached 0 at half of learn: the last actions are the greedy policy's
    model._current_progress_remaining = 1.0
    model._last_obs = model.env.reset()
    greedy, _ = model.predict(model._last_obs, deterministic=True)
    np.random.seed(0)
    actions = np.array([model._sample_action(0, None, 1)[0][0] for _ in range(20)])
    assert not np.any(np.all(np.isclose(actions, greedy[0]), axis=1))  # random_eps 1: uniform actions only
    model._current_progress_remaining = 0.0
    assert all(np.allclose(model._sample_action(0, None, 1)[0], greedy) for _ in range(5))
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=make_point_env())
    assert loaded.random_eps_at(1.0) == 1.0 and loaded.random_eps_at(0.25) == 0.0
    with pytest.raises(ValueError, match="random_eps is a probability"):
        make_model(algo, random_eps=LinearSchedule(1.5, 0.3, 0.5))


# --- Presets --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(presets.PRESETS) - {"tqc-one-env"}))
@pytest.mark.parametrize("algo", ALGOS)
def test_flat_presets_build_ours_and_vanilla(name, algo):
    """Every flat preset is a valid HerDDPG/HerTD3 configuration, and has a vanilla SB3 counterpart that builds."""
    from stable_baselines3 import DDPG

    kwargs = {**presets.get_preset(name), "buffer_size": 5_000, "policy_kwargs": {"net_arch": [32, 32]}}
    env = make_point_env()
    model = algo("MultiInputPolicy", env, seed=0, **kwargs)
    for key in ("batch_size", "gradient_steps", "target_update_interval", "tau", "learning_starts"):
        if key in kwargs:
            assert getattr(model, key) == kwargs[key], key
    vanilla = DDPG("MultiInputPolicy", env, seed=0, **presets.vanilla_kwargs(kwargs, 2, 50))
    assert (vanilla.batch_size, vanilla.gradient_steps) == (model.batch_size, model.gradient_steps)
    assert vanilla.train_freq == model.train_freq


def test_push_preset_replays_baselines_eight_worker_batches():
    """fetch-push-one-env: baselines' per-update dynamics with 8 MPI workers (batch 8 x 256, polyak 0.95 every 40
    updates) at 10 updates per 50-step Fetch episode."""
    preset = presets.get_preset("fetch-push-one-env")
    assert preset["batch_size"] == 8 * 256
    assert (preset["tau"], preset["target_update_interval"]) == (0.05, 40)
    assert preset["train_freq"] == (1, "episode") and preset["batch_size"] * preset["gradient_steps"] / 50 > 400
