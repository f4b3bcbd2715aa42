"""Unusable envs and invalid hyperparameters fail at construction with a message that says what is wrong."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import pytest
from conftest import SMALL_KWARGS, PointGoalEnv, make_point_env
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from stable_baselines3.td3.policies import MultiInputPolicy as TD3MultiInputPolicy

from sb3_hher import HerDDPG, HerTD3
from sb3_hher.common.goal_env import GoalEnvError
from sb3_hher.her.core import NonFiniteObservationError

ALGOS = [HerDDPG, HerTD3]


class BoxObservationEnv(PointGoalEnv):
    """Flat observations: no goal structure at all."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32)

    def reset(self, **kwargs):
        obs, info = super().reset(**kwargs)
        return np.concatenate([obs["observation"], obs["desired_goal"]]), info

    def step(self, action):
        obs, *rest = super().step(action)
        return np.concatenate([obs["observation"], obs["desired_goal"]]), *rest


class NoDesiredGoalEnv(PointGoalEnv):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = spaces.Dict(
            {key: space for key, space in self.observation_space.spaces.items() if key != "desired_goal"}
        )

    def _obs(self) -> dict[str, np.ndarray]:
        obs = super()._obs()
        del obs["desired_goal"]
        return obs


class NoComputeRewardEnv(gym.Env):
    """A Dict goal observation space but no compute_reward method."""

    def __init__(self) -> None:
        super().__init__()
        self._inner = PointGoalEnv()
        self.observation_space = self._inner.observation_space
        self.action_space = self._inner.action_space

    def reset(self, **kwargs):
        return self._inner.reset(**kwargs)

    def step(self, action):
        return self._inner.step(action)


class ScalarRewardEnv(PointGoalEnv):
    """compute_reward written for one goal: on a batch it returns one number."""

    def compute_reward(self, achieved_goal, desired_goal, info) -> float:
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal))
        return -float(distance > self.distance_threshold)


class LoopRewardEnv(PointGoalEnv):
    """compute_reward that fails on a batch (it indexes the info dict)."""

    def compute_reward(self, achieved_goal, desired_goal, info: dict[str, Any]) -> float:
        scale = info.get("scale", 1.0)
        return -float(np.linalg.norm(achieved_goal - desired_goal) > self.distance_threshold) * scale


class DiscreteActionEnv(PointGoalEnv):
    def __init__(self) -> None:
        super().__init__()
        self.action_space = spaces.Discrete(4)

    def step(self, action):
        return super().step(np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][int(action)], dtype=np.float32))


class NonFiniteAtStep(gym.Wrapper):
    """Injects NaN (or inf) into one key of the observation, or into the reward, at a given step of the first episode."""

    def __init__(self, env: gym.Env, key: str, step: int = 5, value: float = np.nan) -> None:
        super().__init__(env)
        self.key, self.at_step, self.value = key, step, value
        self.n_steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.n_steps += 1
        if self.n_steps == self.at_step:
            if self.key == "reward":
                reward = self.value
            else:
                obs = {key: value.copy() for key, value in obs.items()}
                obs[self.key][0] = self.value
        return obs, reward, terminated, truncated, info


def build(algo, env, **kwargs):
    return algo("MultiInputPolicy", env, **{**SMALL_KWARGS, "seed": 0, **kwargs})


@pytest.mark.parametrize("algo", ALGOS)
def test_box_observation_space(algo):
    with pytest.raises(
        GoalEnvError, match=r"Dict observation space with keys \['observation', 'achieved_goal', 'desired_goal'\]"
    ):
        build(algo, TimeLimit(BoxObservationEnv(), 10))


@pytest.mark.parametrize("algo", ALGOS)
def test_dict_without_desired_goal(algo):
    with pytest.raises(GoalEnvError, match=r"lacks the key\(s\) \['desired_goal'\]"):
        build(algo, TimeLimit(NoDesiredGoalEnv(), 10))


@pytest.mark.parametrize("algo", ALGOS)
def test_env_without_compute_reward(algo):
    with pytest.raises(GoalEnvError, match="no compute_reward"):
        build(algo, TimeLimit(NoComputeRewardEnv(), 10))


def test_non_vectorised_compute_reward():
    with pytest.raises(GoalEnvError, match="not vectorised: called on a batch of 2 goals it returned shape"):
        build(HerDDPG, TimeLimit(ScalarRewardEnv(), 10))


def test_compute_reward_failing_on_batches_is_reported_as_not_vectorised():
    with pytest.raises(GoalEnvError, match="vectorised"):
        build(HerDDPG, TimeLimit(LoopRewardEnv(), 10))


@pytest.mark.parametrize("algo", ALGOS)
def test_discrete_action_space(algo):
    with pytest.raises((GoalEnvError, AssertionError), match="Box"):
        build(algo, TimeLimit(DiscreteActionEnv(), 10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_sampled_goal": -1}, "n_sampled_goal"),
        ({"n_sampled_goal": 2.5}, "n_sampled_goal"),
        ({"random_eps": 1.5}, "random_eps"),
        ({"random_eps": -0.1}, "random_eps"),
        ({"noise_eps": -0.2}, "noise_eps"),
        ({"action_l2": -1.0}, "action_l2"),
        ({"target_update_interval": 0}, "target_update_interval"),
        ({"gamma": 1.0}, "gamma"),
        ({"clip_return": -5.0}, "clip_return"),
        ({"clip_return": "always"}, "clip_return"),
    ],
)
@pytest.mark.parametrize("algo", ALGOS)
def test_invalid_hyperparameters(algo, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build(algo, make_point_env(), **kwargs)


def test_positive_rewards_with_numeric_clip_return():
    with pytest.raises(GoalEnvError, match="clip_return='auto'"):
        build(HerDDPG, make_point_env(reward_range=(0.0, 1.0)), clip_return=50.0)


def test_gamma_none_needs_a_time_limit():
    with pytest.raises(ValueError, match="max_episode_steps"):
        build(HerDDPG, PointGoalEnv(), gamma=None)
    # An explicit gamma works without a time limit.
    assert build(HerDDPG, PointGoalEnv(), gamma=0.9).gamma == 0.9


def test_replay_buffer_must_relabel():
    with pytest.raises(TypeError, match="HindsightReplayBuffer"):
        build(HerDDPG, make_point_env(), replay_buffer_class=DictReplayBuffer)


def test_policy_must_normalise():
    with pytest.raises(TypeError, match="GoalPolicy"):
        HerDDPG(TD3MultiInputPolicy, make_point_env(), **SMALL_KWARGS)


def test_vec_normalize_warns():
    env = VecNormalize(DummyVecEnv([make_point_env]), norm_reward=False)
    with pytest.warns(UserWarning, match="VecNormalize"):
        build(HerDDPG, env)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize(("key", "value"), [("observation", np.nan), ("achieved_goal", np.inf), ("desired_goal", np.nan)])
def test_non_finite_observation_names_key_and_step(algo, key, value):
    env = NonFiniteAtStep(make_point_env(max_episode_steps=10), key=key, step=5, value=value)
    model = build(algo, env, learning_starts=3)
    with pytest.raises(NonFiniteObservationError, match=rf"Observation key '{key}' of env 0 is NaN or inf at step 5"):
        model.learn(20)
    # Nothing of the faulty step was stored.
    assert model.replay_buffer.pos == 4


def test_non_finite_reward():
    env = NonFiniteAtStep(make_point_env(max_episode_steps=10), key="reward", step=7)
    model = build(HerDDPG, env)
    with pytest.raises(NonFiniteObservationError, match="Reward is NaN or inf at step 7"):
        model.learn(20)


def test_non_finite_terminal_observation():
    """The last observation of an episode only exists in info['terminal_observation'] of a VecEnv."""
    env = NonFiniteAtStep(make_point_env(max_episode_steps=10), key="observation", step=10)
    model = build(HerDDPG, env)
    with pytest.raises(NonFiniteObservationError, match="Terminal observation key 'observation' of env 0"):
        model.learn(20)


def test_buffer_shorter_than_an_episode_is_refused_at_construction():
    with pytest.raises(ValueError, match="buffer_size"):
        model = build(HerDDPG, make_point_env(max_episode_steps=10), buffer_size=10, learning_starts=100)
        model.learn(10)


@pytest.mark.parametrize("key", ["observation", "reward"])
def test_non_finite_skip_drops_the_rest_of_the_episode(key):
    env = NonFiniteAtStep(make_point_env(max_episode_steps=10), key=key, step=5)
    model = build(HerDDPG, env, learning_starts=3, non_finite="skip")
    with pytest.warns(UserWarning, match=r"NaN or inf at step 5.*not learned from"):
        model.learn(30)
    buffer = model.replay_buffer
    # Episode 1: the 4 finite transitions were kept as a truncated episode, steps 5-10 are never sampled;
    # episodes 2 and 3 are whole.
    np.testing.assert_array_equal(buffer.ep_length[:4, 0], 4)
    assert buffer.timeouts[3, 0] and buffer.dones[3, 0]
    np.testing.assert_array_equal(buffer.ep_length[4:10, 0], 0)
    np.testing.assert_array_equal(buffer.ep_length[10:30, 0], 10)
    assert sorted(buffer.valid_indices()) == [*range(4), *range(10, 30)]
    # The normaliser saw the kept transitions only, and nothing non-finite reached it or the networks.
    assert model.policy.normalizer.obs.count.item() == 4 + 20
    samples = buffer.sample(64)
    assert all(th.isfinite(value).all() for value in samples.observations.values())
    assert th.isfinite(samples.rewards).all()
    assert all(th.isfinite(parameter).all() for parameter in model.policy.parameters())


def test_non_finite_option_is_validated():
    with pytest.raises(ValueError, match="non_finite"):
        build(HerDDPG, make_point_env(), non_finite="ignore")


class NonFiniteAtSecondReset(gym.Wrapper):
    """NaN in the first observation of the second episode."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.n_resets = 0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.n_resets += 1
        if self.n_resets == 2:
            obs = {key: value.copy() for key, value in obs.items()}
            obs["observation"][0] = np.nan
        return obs, info


def test_non_finite_skip_at_reset_skips_the_new_episode_not_the_finished_one():
    model = build(HerDDPG, NonFiniteAtSecondReset(make_point_env(max_episode_steps=10)), learning_starts=3, non_finite="skip")
    with pytest.warns(UserWarning, match="the episode of env 0 starting there is not learned from"):
        model.learn(30)
    buffer = model.replay_buffer
    np.testing.assert_array_equal(buffer.ep_length[:10, 0], 10)  # the finished episode is whole, its end untouched
    assert buffer.dones[9, 0] and buffer.timeouts[9, 0]  # its time-limit end, as the env reported it
    np.testing.assert_array_equal(buffer.ep_length[10:20, 0], 0)  # the episode that started from NaN
    np.testing.assert_array_equal(buffer.ep_length[20:30, 0], 10)
    assert model.policy.normalizer.obs.count.item() == 20


def test_learning_starts_shorter_than_an_episode_warns():
    import warnings

    from conftest import make_point_env

    from sb3_hher import HerDDPG

    with pytest.warns(UserWarning, match=r"learning_starts=5 is shorter than the first episode \(10 steps"):
        HerDDPG("MultiInputPolicy", make_point_env(), learning_starts=5, train_freq=1, buffer_size=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HerDDPG("MultiInputPolicy", make_point_env(), learning_starts=10, train_freq=1, buffer_size=1000)
        HerDDPG("MultiInputPolicy", make_point_env(), learning_starts=5, train_freq=(1, "episode"), buffer_size=1000)
