"""Replay buffer memory for 1e6 Fetch transitions (issue 7): within 1.2x of the raw float32 data."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.goal_env import make_goal_env


def resident_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096


def test_million_fetch_transitions_memory() -> None:
    env = DummyVecEnv([lambda: make_goal_env("FetchPush-v4")])
    before = resident_bytes()
    buffer = HindsightReplayBuffer(1_000_000, env.observation_space, env.action_space, env, device="cpu")
    # numpy allocates lazily: write every array as a full buffer would.
    arrays = [*buffer.observations.values(), *buffer.next_observations.values()]
    arrays += [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts, buffer.ep_start, buffer.ep_length]
    for array in arrays:
        array.fill(1)
    used = resident_bytes() - before
    raw = sum(array.nbytes for array in [*buffer.observations.values(), *buffer.next_observations.values()])
    raw += buffer.actions.nbytes + buffer.rewards.nbytes + buffer.dones.nbytes + buffer.timeouts.nbytes
    print(f"1e6 FetchPush transitions: {used / 1e6:.0f} MB resident, {raw / 1e6:.0f} MB raw float32, {used / raw:.2f}x")
    # float32 storage of observation (25), achieved and desired goal (3 + 3) twice, action (4), reward, done, timeout
    assert raw == 1_000_000 * 4 * (2 * (25 + 3 + 3) + 4 + 3)
    assert used <= 1.2 * raw
    assert np.all(buffer.ep_length == 1)
