"""Behaviour-cloning loss and Q-filter (issue 6) on hand-made batches."""

from __future__ import annotations

import pytest
import torch as th

from sb3_hher import HerDDPG
from sb3_hher.common.goal_env import make_goal_env


@pytest.fixture(scope="module")
def model() -> HerDDPG:
    return HerDDPG("MultiInputPolicy", make_goal_env("FetchReach-v4"), seed=0, learning_starts=0)


def batch(n: int) -> tuple[dict[str, th.Tensor], th.Tensor]:
    generator = th.Generator().manual_seed(0)
    observations = {
        "observation": th.randn(n, 10, generator=generator),
        "achieved_goal": th.randn(n, 3, generator=generator),
        "desired_goal": th.randn(n, 3, generator=generator),
    }
    return observations, th.rand(n, 4, generator=generator) * 2 - 1


def expected_losses(model: HerDDPG, observations: dict, actions: th.Tensor, n_demo: int, q_filter: bool) -> tuple:
    with th.no_grad():
        pi = model.actor(observations)
        q_pi = model.critic.q1_forward(observations, pi)
        base = -q_pi.mean() + model.action_l2 * pi.pow(2).mean()
        error = (pi[-n_demo:] - actions[-n_demo:]).pow(2).sum(dim=1)
        demo_obs = {key: value[-n_demo:] for key, value in observations.items()}
        keep = (model.critic.q1_forward(demo_obs, actions[-n_demo:]) > q_pi[-n_demo:]).squeeze(1)
        if q_filter:
            error = error * keep.float()
        return base, error.sum(), keep


@pytest.mark.parametrize("q_filter", [False, True])
def test_bc_loss_matches_baselines_formula(model: HerDDPG, q_filter: bool) -> None:
    observations, actions = batch(16)
    model.bc_loss, model.q_filter = True, q_filter
    try:
        loss, stats = model._actor_loss(observations, actions, n_demo=6)
    finally:
        model.bc_loss = model.q_filter = False
    base, cloning, keep = expected_losses(model, observations, actions, 6, q_filter)
    assert stats["bc_loss"] == pytest.approx(cloning.item(), rel=1e-5)
    assert loss.item() == pytest.approx(
        model.prm_loss_weight * base.item() + model.aux_loss_weight * cloning.item(), rel=1e-5, abs=1e-7
    )
    if q_filter:
        assert stats["q_filter_accept_rate"] == pytest.approx(keep.float().mean().item())


def test_q_filter_mask_keeps_only_demo_actions_the_critic_prefers(model: HerDDPG) -> None:
    observations, _ = batch(8)
    with th.no_grad():
        policy_actions = model.actor(observations)
    # Demo actions equal to the policy's: Q(s, a_demo) > Q(s, pi(s)) is false everywhere, nothing is cloned.
    model.bc_loss, model.q_filter = True, True
    try:
        _, stats = model._actor_loss(observations, policy_actions.clone(), n_demo=8)
    finally:
        model.bc_loss = model.q_filter = False
    assert stats["q_filter_accept_rate"] == 0.0
    assert stats["bc_loss"] == 0.0


def test_without_bc_loss_the_demo_part_is_ignored(model: HerDDPG) -> None:
    observations, actions = batch(8)
    with_demo, stats = model._actor_loss(observations, actions, n_demo=4)
    without_demo, _ = model._actor_loss(observations, actions, n_demo=0)
    assert "bc_loss" not in stats
    assert with_demo.item() == pytest.approx(without_demo.item())


def test_bc_loss_needs_demonstrations() -> None:
    with pytest.raises(ValueError, match="demo_file"):
        HerDDPG("MultiInputPolicy", make_goal_env("FetchReach-v4"), bc_loss=True)
    with pytest.raises(ValueError, match="bc_loss=True"):
        HerDDPG("MultiInputPolicy", make_goal_env("FetchReach-v4"), q_filter=True, demo_file="demos.npz")


def test_learning_from_generated_demonstrations(tmp_path) -> None:
    from sb3_hher.demos import generate_demonstrations, save_demonstrations

    demos, _ = generate_demonstrations("FetchReach-v4", n_episodes=4, seed=0)
    path = tmp_path / "demos.npz"
    save_demonstrations(path, demos, env_id="FetchReach-v4")
    model = HerDDPG(
        "MultiInputPolicy",
        make_goal_env("FetchReach-v4"),
        seed=0,
        demo_file=str(path),
        demo_batch_size=32,
        bc_loss=True,
        q_filter=True,
        gradient_steps=5,
    )
    assert model.demo_buffer is not None and model.demo_buffer.size() == 4 * 50
    # The demonstrations fed the normaliser before any env step.
    assert model.policy.normalizer.obs.count.item() == 4 * 50
    model.learn(300)
    model.train(gradient_steps=2, batch_size=model.batch_size)
    assert model.logger.name_to_value["train/bc_loss"] >= 0.0
    assert 0.0 <= model.logger.name_to_value["train/q_filter_accept_rate"] <= 1.0
    model.save(tmp_path / "model")
    loaded = HerDDPG.load(tmp_path / "model", env=make_goal_env("FetchReach-v4"))
    assert loaded.demo_buffer is not None and loaded.demo_buffer.size() == 4 * 50
    assert loaded.bc_loss and loaded.q_filter
    # Loaded without an env (to predict), the demonstrations come back with set_env; the saved normaliser
    # statistics already count them, so they are not fed twice.
    bare = HerDDPG.load(tmp_path / "model")
    assert bare.demo_buffer is None
    bare.set_env(make_goal_env("FetchReach-v4"))
    assert bare.demo_buffer is not None and bare.demo_buffer.size() == 4 * 50
    assert bare.policy.normalizer.obs.count.item() == model.policy.normalizer.obs.count.item()


def test_demo_file_not_matching_the_env_is_refused(tmp_path) -> None:
    from sb3_hher.demos import generate_demonstrations, save_demonstrations

    demos, _ = generate_demonstrations("FetchReach-v4", n_episodes=1, seed=0)
    path = tmp_path / "reach.npz"
    save_demonstrations(path, demos, env_id="FetchReach-v4")
    with pytest.raises(ValueError, match="observation"):
        HerDDPG("MultiInputPolicy", make_goal_env("FetchPush-v4"), demo_file=str(path), bc_loss=True)
