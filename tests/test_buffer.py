"""HindsightReplayBuffer: relabelled goals come from the right episode and step, rewards are recomputed.

Synthetic episodes encode (episode id, step) in their achieved goals, so every sampled goal says where it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_point_env
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher.common.buffers import HindsightReplayBuffer

# Goals of 2 numbers: (episode id, step). Real desired goals use step -1, which no achieved goal has.
OBS_SPACE = spaces.Dict(
    {
        "observation": spaces.Box(-np.inf, np.inf, shape=(4,), dtype=np.float32),
        "achieved_goal": spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32),
        "desired_goal": spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32),
    }
)
ACTION_SPACE = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)


def encoded_reward(achieved_goal: np.ndarray, desired_goal: np.ndarray, _info) -> np.ndarray:
    """Fetch-style sparse reward on the encoded goals: 0 when equal, -1 otherwise."""
    return np.where(np.all(achieved_goal == desired_goal, axis=-1), 0.0, -1.0).astype(np.float32)


class SyntheticEpisodes:
    """
    Feeds a buffer with episodes of given lengths from ``n_envs`` envs stepping in lock-step, and remembers
    which (episode, step) each storage slot holds.
    """

    def __init__(self, buffer: HindsightReplayBuffer, lengths: list[int]) -> None:
        self.buffer = buffer
        self.n_envs = buffer.n_envs
        self.lengths = lengths
        self.episode_length: dict[int, int] = {}
        self.slots: dict[tuple[int, int], tuple[int, int]] = {}  # (pos, env) -> (episode, step)
        self._next_episode = 0
        self._current = [self._new_episode(env_idx) for env_idx in range(self.n_envs)]
        self.closed: list[tuple[int, int]] = []  # (env, episode) closed by the last add

    def _new_episode(self, env_idx: int) -> list[int]:
        episode = self._next_episode
        self._next_episode += 1
        self.episode_length[episode] = self.lengths[episode % len(self.lengths)]
        return [episode, 0]

    def step(self) -> None:
        obs = {key: np.zeros((self.n_envs, *space.shape), dtype=np.float32) for key, space in OBS_SPACE.spaces.items()}
        next_obs = {key: value.copy() for key, value in obs.items()}
        dones = np.zeros(self.n_envs, dtype=bool)
        infos = [{} for _ in range(self.n_envs)]
        for env_idx, (episode, step) in enumerate(self._current):
            obs["observation"][env_idx] = (episode, step, env_idx, 0)
            obs["achieved_goal"][env_idx] = (episode, step)
            next_obs["observation"][env_idx] = (episode, step + 1, env_idx, 0)
            next_obs["achieved_goal"][env_idx] = (episode, step + 1)
            obs["desired_goal"][env_idx] = next_obs["desired_goal"][env_idx] = (episode, -1)
            self.slots[(self.buffer.pos, env_idx)] = (episode, step)
            if step + 1 == self.episode_length[episode]:
                dones[env_idx] = True
                infos[env_idx]["TimeLimit.truncated"] = True
        rewards = encoded_reward(next_obs["achieved_goal"], next_obs["desired_goal"], infos)
        self.buffer.add(obs, next_obs, np.zeros((self.n_envs, 1), dtype=np.float32), rewards, dones, infos)
        self.closed = []
        for env_idx in np.flatnonzero(dones):
            self.closed.append((int(env_idx), self._current[env_idx][0]))
            self._current[env_idx] = self._new_episode(int(env_idx))
        for env_idx in np.flatnonzero(~dones):
            self._current[env_idx][1] += 1

    def intact(self, episode: int) -> bool:
        """Whether every transition of ``episode`` is still stored."""
        stored = {step for (ep, step) in self.slots.values() if ep == episode}
        return stored == set(range(self.episode_length[episode]))


def make_buffer(
    buffer_size: int, n_envs: int, n_sampled_goal: int, strategy: str = "future", **kwargs
) -> HindsightReplayBuffer:
    env = kwargs.pop("env", None) or DummyVecEnv([make_point_env] * n_envs)
    return HindsightReplayBuffer(
        buffer_size,
        OBS_SPACE,
        ACTION_SPACE,
        env=env,
        device="cpu",
        n_envs=n_envs,
        n_sampled_goal=n_sampled_goal,
        goal_selection_strategy=strategy,
        **kwargs,
    )


def check_goal_origin(goal: np.ndarray, episode: int, step: int, length: int, strategy: str) -> bool:
    """
    Whether ``goal`` is a legal goal for the transition ``step -> step + 1`` of ``episode``: its own desired goal, or
    an achieved goal of the same episode chosen by ``strategy`` (achieved goals after step s are encoded s + 1).
    """
    goal_episode, goal_step = int(goal[0]), int(goal[1])
    if goal_episode != episode:
        return False
    if goal_step == -1:
        return True
    if strategy == "future":
        return step + 1 <= goal_step <= length
    if strategy == "final":
        return goal_step == length
    return 1 <= goal_step <= length


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    n_envs=st.integers(1, 2),
    n_sampled_goal=st.integers(0, 8),
    strategy=st.sampled_from(["future", "final", "episode"]),
    slots_per_env=st.integers(13, 40),
    n_steps=st.integers(12, 120),
)
def test_relabelled_goals_come_from_same_episode(lengths, n_envs, n_sampled_goal, strategy, slots_per_env, n_steps):
    np.random.seed(0)
    # SB3 buffers hold buffer_size // n_envs transitions per env; an episode must be shorter (see test_errors).
    buffer = make_buffer(slots_per_env * n_envs, n_envs, n_sampled_goal, strategy)
    feeder = SyntheticEpisodes(buffer, lengths)
    for _ in range(n_steps):
        feeder.step()
        # episode_for_normalizer: observations of the episode that just ended, in order, and goals from that episode.
        for env_idx, episode in feeder.closed:
            observations, goals = buffer.episode_for_normalizer(env_idx)
            length = feeder.episode_length[episode]
            expected = np.array([(episode, step, env_idx, 0) for step in range(length)], dtype=np.float32)
            np.testing.assert_array_equal(observations, expected)
            assert len(goals) == length
            for step, goal in enumerate(goals):
                assert check_goal_origin(goal, episode, step, length, strategy), (goal, episode, step, length)
    if not (buffer.ep_length > 0).any():
        return  # Nothing complete to sample yet (SB3 raises in that case).

    batch_size = 64
    samples = buffer.sample(batch_size)
    obs = {key: value.numpy() for key, value in samples.observations.items()}
    next_obs = {key: value.numpy() for key, value in samples.next_observations.items()}
    rewards = samples.rewards.numpy().ravel()
    relabelled = obs["desired_goal"][:, 1] != -1
    # Baselines' relabelling fraction: 1 - 1 / (k + 1) of every batch.
    if strategy == "future":
        assert relabelled.sum() == int((1 - 1 / (n_sampled_goal + 1)) * batch_size)
    for i in range(batch_size):
        episode, step = (int(v) for v in obs["achieved_goal"][i])
        length = feeder.episode_length[episode]
        assert feeder.intact(episode), f"sampled episode {episode} was partly overwritten"
        assert 0 <= step < length
        np.testing.assert_array_equal(next_obs["achieved_goal"][i], (episode, step + 1))
        assert int(obs["observation"][i, 0]) == episode and int(obs["observation"][i, 1]) == step
        np.testing.assert_array_equal(obs["desired_goal"][i], next_obs["desired_goal"][i])
        assert check_goal_origin(obs["desired_goal"][i], episode, step, length, strategy), (
            obs["desired_goal"][i],
            episode,
            step,
        )
    np.testing.assert_array_equal(rewards, encoded_reward(next_obs["achieved_goal"], obs["desired_goal"], None))
    # Time-limit ends are bootstrapped through.
    assert not samples.dones.numpy().any()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    n_envs=st.integers(1, 2),
    n_return_steps=st.integers(2, 5),
    strategy=st.sampled_from(["future", "final", "episode"]),
    slots_per_env=st.integers(10, 30),
    n_added=st.integers(10, 80),
)
def test_n_step_returns_stay_in_episode_and_use_the_batch_goal(
    lengths, n_envs, n_return_steps, strategy, slots_per_env, n_added
):
    np.random.seed(1)
    gamma = 0.9
    buffer = make_buffer(slots_per_env * n_envs, n_envs, 4, strategy, n_steps=n_return_steps, gamma=gamma)
    feeder = SyntheticEpisodes(buffer, lengths)
    for _ in range(n_added):
        feeder.step()
    if not (buffer.ep_length > 0).any():
        return
    samples = buffer.sample(64)
    obs = {key: value.numpy() for key, value in samples.observations.items()}
    next_obs = {key: value.numpy() for key, value in samples.next_observations.items()}
    for i in range(64):
        episode, step = (int(v) for v in obs["achieved_goal"][i])
        length = feeder.episode_length[episode]
        assert feeder.intact(episode)
        goal = obs["desired_goal"][i]
        assert check_goal_origin(goal, episode, step, length, strategy)
        n_taken = min(n_return_steps, length - step)  # never past the episode's last transition
        np.testing.assert_array_equal(next_obs["achieved_goal"][i], (episode, step + n_taken))
        np.testing.assert_array_equal(next_obs["observation"][i, :2], (episode, step + n_taken))
        np.testing.assert_array_equal(next_obs["desired_goal"][i], goal)
        expected = sum(
            gamma**j * encoded_reward(np.array([episode, step + j + 1], dtype=np.float32), goal, None) for j in range(n_taken)
        )
        assert samples.rewards[i, 0].item() == pytest.approx(float(expected), abs=1e-5)
        assert samples.discounts[i, 0].item() == pytest.approx(gamma**n_taken, rel=1e-6)
    assert not samples.dones.numpy().any()


def test_one_step_batches_carry_no_discounts():
    buffer = make_buffer(40, 1, 4)
    feeder = SyntheticEpisodes(buffer, [5])
    for _ in range(10):
        feeder.step()
    assert buffer.sample(8).discounts is None


def test_n_step_returns_stop_at_terminations():
    # A terminal transition (done without truncation) ends the return and is not bootstrapped.
    buffer = make_buffer(40, 1, 0, n_steps=3, gamma=0.5)
    for step in range(4):
        obs = {
            "observation": np.array([[0, step, 0, 0]], dtype=np.float32),
            "achieved_goal": np.array([[0, step]], dtype=np.float32),
            "desired_goal": np.array([[0, -1]], dtype=np.float32),
        }
        next_obs = {**obs, "achieved_goal": np.array([[0, step + 1]], dtype=np.float32)}
        done = np.array([step == 3])
        buffer.add(obs, next_obs, np.zeros((1, 1), dtype=np.float32), np.array([-1.0]), done, [{}])
    samples = buffer.sample(200)
    steps = samples.observations["achieved_goal"][:, 1].numpy().astype(int)
    for i, step in enumerate(steps):
        n_taken = min(3, 4 - step)
        assert samples.rewards[i, 0].item() == pytest.approx(-sum(0.5**j for j in range(n_taken)))
        assert samples.dones[i, 0].item() == float(step + n_taken == 4)
    assert set(steps) == {0, 1, 2, 3}


def test_future_includes_the_next_achieved_goal_and_the_final_one():
    """Over many samples, 'future' draws every step from the transition's next achieved goal to the episode's end."""
    np.random.seed(1)
    buffer = make_buffer(100, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [5])
    for _ in range(5):
        feeder.step()
    seen: dict[int, set[int]] = {step: set() for step in range(5)}
    for _ in range(20):
        samples = buffer.sample(256)
        goals = samples.observations["desired_goal"].numpy()
        steps = samples.observations["achieved_goal"].numpy()[:, 1].astype(int)
        for step, goal_step in zip(steps, goals[:, 1].astype(int), strict=True):
            if goal_step != -1:
                seen[step].add(goal_step)
    for step in range(5):
        assert seen[step] == set(range(step + 1, 6)), (step, seen[step])


def test_relabelling_fraction_of_normaliser_goals():
    """relabel_goals replaces each goal independently with probability 1 - 1/(k+1) (0.8 for k = 4)."""
    np.random.seed(2)
    buffer = make_buffer(2_000, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [1_000])
    for _ in range(1_000):
        feeder.step()
    _, goals = buffer.episode_for_normalizer(0)
    assert np.mean(goals[:, 1] != -1) == pytest.approx(0.8, abs=0.05)
    buffer_k0 = make_buffer(100, 1, n_sampled_goal=0)
    feeder = SyntheticEpisodes(buffer_k0, [50])
    for _ in range(50):
        feeder.step()
    _, goals = buffer_k0.episode_for_normalizer(0)
    assert np.all(goals[:, 1] == -1)


def test_compute_reward_callable_replaces_env_method():
    """A given compute_reward is used for relabelled rewards; the env's is never called (here there is no env)."""
    calls = []

    def subgoal_reward(achieved_goal, desired_goal, infos):
        calls.append(len(achieved_goal))
        return np.where(np.all(achieved_goal == desired_goal, axis=-1), 5.0, 3.0)

    np.random.seed(3)
    buffer = HindsightReplayBuffer(
        100, OBS_SPACE, ACTION_SPACE, env=None, device="cpu", n_sampled_goal=4, compute_reward=subgoal_reward
    )
    feeder = SyntheticEpisodes(buffer, [6])
    for _ in range(12):
        feeder.step()
    samples = buffer.sample(50)
    assert calls == [int(0.8 * 50)]
    goals = samples.observations["desired_goal"].numpy()
    next_achieved = samples.next_observations["achieved_goal"].numpy()
    rewards = samples.rewards.numpy().ravel()
    relabelled = goals[:, 1] != -1
    np.testing.assert_array_equal(rewards[relabelled], np.where(np.all(next_achieved == goals, axis=-1), 5.0, 3.0)[relabelled])
    # Real transitions keep the reward the env gave when they were stored.
    np.testing.assert_array_equal(rewards[~relabelled], -1.0)


def test_env_compute_reward_is_used_by_default():
    np.random.seed(4)
    buffer = make_buffer(100, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [6])
    for _ in range(12):
        feeder.step()
    samples = buffer.sample(200)
    goals = samples.observations["desired_goal"].numpy()
    next_achieved = samples.next_observations["achieved_goal"].numpy()
    # PointGoalEnv.compute_reward: 0 within 0.15 of the goal, -1 elsewhere; encoded goals are 0 or >= 1 apart.
    np.testing.assert_array_equal(samples.rewards.numpy().ravel(), encoded_reward(next_achieved, goals, None))
    assert (samples.rewards.numpy() == 0).any()


def test_compute_reward_is_not_pickled():
    import pickle

    buffer = make_buffer(50, 1, n_sampled_goal=4, compute_reward=encoded_reward)
    feeder = SyntheticEpisodes(buffer, [5])
    for _ in range(7):
        feeder.step()
    restored = pickle.loads(pickle.dumps(buffer))
    assert restored.compute_reward is None and restored.env is None
    for key in OBS_SPACE.spaces:
        np.testing.assert_array_equal(restored.observations[key], buffer.observations[key])
    np.testing.assert_array_equal(restored.ep_length, buffer.ep_length)


@pytest.mark.parametrize("n_envs", [1, 2])
@pytest.mark.parametrize("copy_info_dict", [False, True])
@pytest.mark.parametrize("episode_priority", [None, "energy"])
@pytest.mark.parametrize("n_adds", [0, 7, 30])
def test_pickle_holds_the_stored_rows_only(n_envs, copy_info_dict, episode_priority, n_adds):
    """A buffer not yet full pickles what it holds (not its capacity) and unpickles to the same arrays and batches."""
    import pickle

    buffer = make_buffer(
        30, n_envs, n_sampled_goal=4, copy_info_dict=copy_info_dict, episode_priority=episode_priority, energy_dt=0.04
    )
    feeder = SyntheticEpisodes(buffer, [5, 3])
    for _ in range(n_adds):
        feeder.step()
    data = pickle.dumps(buffer)
    restored = pickle.loads(data)
    for name in ("observations", "next_observations"):
        for key in OBS_SPACE.spaces:
            original, copy = getattr(buffer, name)[key], getattr(restored, name)[key]
            assert copy.shape == original.shape and copy.dtype == original.dtype
            np.testing.assert_array_equal(copy, original)
    for name in ("actions", "rewards", "dones", "timeouts", "ep_start", "ep_length"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(buffer, name))
        assert getattr(restored, name).dtype == getattr(buffer, name).dtype
    assert restored.infos.shape == buffer.infos.shape
    if copy_info_dict:
        assert all(isinstance(info, dict) for info in restored.infos.flat)
        assert [info for info in restored.infos.flat] == [info for info in buffer.infos.flat]
    if episode_priority is not None:
        np.testing.assert_array_equal(restored.transition_priority, buffer.transition_priority)
    assert (restored.pos, restored.full) == (buffer.pos, buffer.full)
    # The copy fills and samples exactly as the original: same batches under the same seed, before and after more
    # episodes (which wrap both around their capacity).
    import copy

    restored.set_env(buffer.env)
    twin = SyntheticEpisodes.__new__(SyntheticEpisodes)
    twin.__dict__.update(copy.deepcopy({key: value for key, value in feeder.__dict__.items() if key != "buffer"}))
    twin.buffer = restored
    for extra in (0, 40):
        for _ in range(extra):
            feeder.step()
            twin.step()
        if buffer.valid_indices().size:
            np.random.seed(extra)
            expected = buffer.sample(8)
            np.random.seed(extra)
            batch = restored.sample(8)
            for key in OBS_SPACE.spaces:
                np.testing.assert_array_equal(batch.observations[key].numpy(), expected.observations[key].numpy())
            np.testing.assert_array_equal(batch.rewards.numpy(), expected.rewards.numpy())


def test_pickle_size_follows_the_content_not_the_capacity():
    import pickle

    buffer = make_buffer(20_000, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [5])
    for _ in range(10):
        feeder.step()
    allocated = sum(array.nbytes for array in (*buffer.observations.values(), *buffer.next_observations.values()))
    assert allocated > 1_000_000
    assert len(pickle.dumps(buffer)) < 20_000


def test_full_buffer_pickles_whole():
    import pickle

    buffer = make_buffer(10, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [5])
    for _ in range(13):
        feeder.step()
    assert buffer.full
    restored = pickle.loads(pickle.dumps(buffer))
    for key in OBS_SPACE.spaces:
        np.testing.assert_array_equal(restored.observations[key], buffer.observations[key])
    np.testing.assert_array_equal(restored.ep_start, buffer.ep_start)


def test_last_episode_indices_needs_a_closed_episode():
    buffer = make_buffer(50, 1, n_sampled_goal=4)
    feeder = SyntheticEpisodes(buffer, [5])
    feeder.step()
    with pytest.raises(RuntimeError, match="does not close an episode"):
        buffer.last_episode_indices(0)


def test_invalid_buffer_arguments():
    with pytest.raises(ValueError, match="n_sampled_goal"):
        make_buffer(50, 1, n_sampled_goal=-1)
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        make_buffer(50, 1, n_sampled_goal=4, optimize_memory_usage=True)
