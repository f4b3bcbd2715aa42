"""Seeded learning tests: baselines' defaults solve FetchReach-v4 in a few thousand steps (about a minute here)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import make_fetch_reach
from gymnasium import spaces
from stable_baselines3.common.envs import BitFlippingEnv

from sb3_hher import HerDDPG

pytestmark = pytest.mark.slow


def success_rate(model, env: gym.Env, n_episodes: int = 20, seed: int = 10_000) -> float:
    """Deterministic test episodes; success read from ``info['is_success']`` at the end of each episode."""
    successes = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes.append(float(info["is_success"]))
    return float(np.mean(successes))


def learn_until(model, eval_env: gym.Env, checkpoints: list[int], threshold: float = 0.9) -> list[tuple[int, float]]:
    """Train up to each checkpoint in turn; stop at the first whose test success reaches ``threshold``."""
    history = []
    for steps in checkpoints:
        model.learn(steps - model.num_timesteps, reset_num_timesteps=False)
        history.append((model.num_timesteps, success_rate(model, eval_env)))
        if history[-1][1] >= threshold:
            break
    return history


@pytest.mark.timeout(240)
def test_her_ddpg_solves_fetch_reach():
    """Baselines' configuration, unchanged but for the buffer size: success >= 0.9 within 4,000 env steps."""
    env, eval_env = make_fetch_reach(), make_fetch_reach()
    try:
        model = HerDDPG("MultiInputPolicy", env, buffer_size=10_000, seed=1)
        history = learn_until(model, eval_env, [2_000, 3_000, 4_000])
    finally:
        env.close()
        eval_env.close()
    assert history[-1][1] >= 0.9, history


class BoxBitFlipping(gym.ObservationWrapper):
    """SB3's BitFlippingEnv with its MultiBinary keys exposed as float Boxes (compute_reward is found through the wrapper)."""

    def __init__(self, env: BitFlippingEnv) -> None:
        super().__init__(env)
        n_bits = env.observation_space["observation"].n
        self.observation_space = spaces.Dict(
            {key: spaces.Box(0.0, 1.0, shape=(n_bits,), dtype=np.float32) for key in env.observation_space.spaces}
        )

    def observation(self, observation):
        return {key: np.asarray(value, dtype=np.float32) for key, value in observation.items()}


def test_her_ddpg_solves_continuous_bit_flipping():
    def make_env() -> gym.Env:
        return BoxBitFlipping(BitFlippingEnv(n_bits=6, continuous=True))

    model = HerDDPG(
        "MultiInputPolicy",
        make_env(),
        gamma=0.95,
        policy_kwargs={"net_arch": [64, 64]},
        batch_size=128,
        learning_starts=200,
        train_freq=50,
        gradient_steps=20,
        target_update_interval=20,
        buffer_size=20_000,
        seed=1,
    )
    # Random actions almost never flip 6 bits into place within 6 steps.
    assert success_rate(model, make_env()) <= 0.1
    history = learn_until(model, make_env(), [2_000, 3_000, 4_000])
    assert history[-1][1] >= 0.9, history


def test_bit_flipping_env_accepted_as_is():
    HerDDPG("MultiInputPolicy", BitFlippingEnv(n_bits=4, continuous=True), gamma=0.9, buffer_size=1_000)
