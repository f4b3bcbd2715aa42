"""Exact resume (issue 7): a run checkpointed, killed and resumed ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3 import DDPG, HerReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_hher import HerDDPG, HerTD3, HerTQC
from sb3_hher.common.checkpoint import (
    ACTIONS_FILE,
    BUFFER_FILE,
    CheckpointError,
    load_checkpoint,
    rebuild_replay_buffer,
    save_checkpoint,
)
from sb3_hher.common.goal_env import make_goal_env

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "resumable_training.py"


def make_env() -> DummyVecEnv:
    return DummyVecEnv([lambda: make_goal_env("FetchReach-v4")])


def build(algo: type, seed: int = 3) -> HerDDPG:
    env = make_env()
    env.seed(seed)
    # A small buffer: SB3's HerReplayBuffer builds one info dict per slot (about 3 s for the default 1M).
    return algo("MultiInputPolicy", env, seed=seed, gradient_steps=5, buffer_size=10_000)


def assert_same_training_state(a: HerDDPG, b: HerDDPG) -> None:
    state_a, state_b = a.policy.state_dict(), b.policy.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert th.equal(state_a[key], state_b[key]), key
    assert a.num_timesteps == b.num_timesteps
    buffer_a, buffer_b = a.replay_buffer, b.replay_buffer
    assert buffer_a.pos == buffer_b.pos
    for key in buffer_a.observations:
        np.testing.assert_array_equal(buffer_a.observations[key], buffer_b.observations[key])
        np.testing.assert_array_equal(buffer_a.next_observations[key], buffer_b.next_observations[key])
    np.testing.assert_array_equal(buffer_a.actions, buffer_b.actions)
    np.testing.assert_array_equal(buffer_a.ep_length, buffer_b.ep_length)


@pytest.mark.parametrize("algo", [HerDDPG, HerTD3])
def test_checkpoint_resume_equals_uninterrupted_run(tmp_path: Path, algo: type) -> None:
    reference = build(algo)
    reference.learn(600)

    model = build(algo)
    model.learn(300)
    save_checkpoint(model, tmp_path / "ckpt")
    del model
    resumed = load_checkpoint(algo, tmp_path / "ckpt", make_env())
    resumed.learn(300, reset_num_timesteps=False)
    assert_same_training_state(reference, resumed)


def build_vanilla_ddpg(seed: int = 3) -> DDPG:
    env = make_env()
    env.seed(seed)
    return DDPG("MultiInputPolicy", env, replay_buffer_class=HerReplayBuffer, seed=seed, buffer_size=10_000)


@pytest.mark.parametrize("algo", [HerDDPG, HerTQC, DDPG])
def test_checkpoint_without_pickled_buffer_rebuilds_it_from_actions(tmp_path: Path, algo: type) -> None:
    """A checkpoint carried with replay_actions.npz instead of replay_buffer.pkl resumes to the same result."""
    build_fn = build_vanilla_ddpg if algo is DDPG else lambda: build(algo)
    reference = build_fn()
    reference.learn(600)

    model = build_fn()
    model.learn(300)
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    pickled_size = (tmp_path / "ckpt" / BUFFER_FILE).stat().st_size
    assert (tmp_path / "ckpt" / ACTIONS_FILE).stat().st_size < pickled_size / 10
    (tmp_path / "ckpt" / BUFFER_FILE).unlink()
    del model
    with pytest.raises(CheckpointError, match="replay_env"):
        load_checkpoint(algo, tmp_path / "ckpt", make_env())
    resumed = load_checkpoint(algo, tmp_path / "ckpt", make_env(), replay_env=make_env())
    assert resumed.replay_buffer.pos == 300
    resumed.learn(300, reset_num_timesteps=False)
    assert_same_training_state(reference, resumed)


def test_buffer_filled_exactly_once_is_rebuilt_from_actions(tmp_path: Path) -> None:
    """A run whose budget equals its buffer size (the benchmark runner's default) ends with a buffer that is full but
    never overwritten: its actions are still a complete record; one more episode makes them incomplete."""
    model = HerDDPG("MultiInputPolicy", make_env(), seed=3, gradient_steps=5, buffer_size=200)
    model.learn(200)
    assert model.replay_buffer.full and model.replay_buffer.pos == 0
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    (tmp_path / "ckpt" / BUFFER_FILE).unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = load_checkpoint(HerDDPG, tmp_path / "ckpt", make_env(), replay_env=make_env())
    assert not [warning for warning in caught if "differs" in str(warning.message)], "the rebuilt buffer must be exact"
    assert resumed.replay_buffer.full and resumed.replay_buffer.pos == 0
    np.testing.assert_array_equal(resumed.replay_buffer.actions, model.replay_buffer.actions)
    model.learn(50, reset_num_timesteps=False)
    with pytest.warns(UserWarning, match="wrapped around"):
        save_checkpoint(model, tmp_path / "later", replay_actions=True)
    assert not (tmp_path / "later" / ACTIONS_FILE).exists()


def test_stale_pickled_buffer_is_replaced_by_the_actions(tmp_path: Path) -> None:
    model = build(HerDDPG)
    model.learn(100)
    save_checkpoint(model, tmp_path / "old")
    model.learn(100, reset_num_timesteps=False)
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    # The folder now holds the newer model and actions beside the older pickled buffer.
    (tmp_path / "old" / BUFFER_FILE).replace(tmp_path / "ckpt" / BUFFER_FILE)
    with pytest.warns(UserWarning, match="does not match"):
        resumed = load_checkpoint(HerDDPG, tmp_path / "ckpt", make_env(), replay_env=make_env())
    assert resumed.replay_buffer.pos == 200
    np.testing.assert_array_equal(resumed.replay_buffer.actions, model.replay_buffer.actions)


def test_rebuilt_buffer_that_differs_is_reported(tmp_path: Path) -> None:
    model = build(HerDDPG)
    model.learn(100)
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    fresh = build(HerDDPG)
    fresh.seed = 4  # the replay env is then seeded differently: other goals, another buffer
    with pytest.raises(CheckpointError, match="differs"):
        rebuild_replay_buffer(fresh, tmp_path / "ckpt", make_env(), strict=True)
    with pytest.raises(CheckpointError, match="empty replay buffer"):
        rebuild_replay_buffer(fresh, tmp_path / "ckpt", make_env())
    other = build(HerDDPG)
    other.seed = 4
    with pytest.warns(UserWarning, match="differs"):
        assert not rebuild_replay_buffer(other, tmp_path / "ckpt", make_env())
    assert other.replay_buffer.pos == 100


def test_replay_actions_are_not_kept_without_an_episode_boundary(tmp_path: Path) -> None:
    model = HerDDPG("MultiInputPolicy", make_env(), seed=0, train_freq=1, gradient_steps=1, learning_starts=50)
    model.learn(100)
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    assert (tmp_path / "ckpt" / ACTIONS_FILE).is_file()
    model.learn(20, reset_num_timesteps=False)  # inside the third 50-step episode
    with pytest.warns(UserWarning, match="No replay actions"):
        save_checkpoint(model, tmp_path / "ckpt", exact=False, replay_actions=True)
    assert not (tmp_path / "ckpt" / ACTIONS_FILE).exists()


def test_exact_checkpoint_needs_episode_boundary(tmp_path: Path) -> None:
    model = HerDDPG("MultiInputPolicy", make_env(), seed=0, train_freq=1, gradient_steps=1, learning_starts=50)
    model.learn(120)  # FetchReach episodes last 50 steps: 120 is inside the third one
    with pytest.raises(CheckpointError, match="episode boundary"):
        save_checkpoint(model, tmp_path / "ckpt")


def test_inexact_checkpoint_with_subproc_env(tmp_path: Path) -> None:
    env = SubprocVecEnv([lambda: make_goal_env("FetchReach-v4")])
    try:
        model = HerDDPG("MultiInputPolicy", env, seed=0, gradient_steps=2)
        model.learn(100)
        with pytest.raises(CheckpointError, match="DummyVecEnv"):
            save_checkpoint(model, tmp_path / "exact")
        save_checkpoint(model, tmp_path / "ckpt", exact=False)
        resumed = load_checkpoint(HerDDPG, tmp_path / "ckpt", env)
        assert resumed.num_timesteps == 100
        resumed.learn(100, reset_num_timesteps=False)
        assert resumed.num_timesteps == 200
    finally:
        env.close()


def _run_script(tmp_path: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        str(SCRIPT),
        "--total-timesteps",
        "800",
        "--chunk",
        "200",
        "--gradient-steps",
        "5",
        "--seed",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_killed_training_resumes_to_uninterrupted_result(tmp_path: Path) -> None:
    uninterrupted = _run_script(tmp_path, "--checkpoint", str(tmp_path / "a"), "--save-params", str(tmp_path / "a.npz"))
    output, _ = uninterrupted.communicate(timeout=170)
    assert uninterrupted.returncode == 0, output

    killed = _run_script(tmp_path, "--checkpoint", str(tmp_path / "b"), "--save-params", str(tmp_path / "b.npz"))
    assert killed.stdout is not None
    for line in killed.stdout:  # kill it during the chunk after its second checkpoint
        if "checkpoint at 400" in line:
            killed.send_signal(signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "b.npz").exists()

    resumed = _run_script(tmp_path, "--checkpoint", str(tmp_path / "b"), "--save-params", str(tmp_path / "b.npz"))
    output, _ = resumed.communicate(timeout=170)
    assert resumed.returncode == 0, output
    # The kill lands while the third chunk trains; on a fast machine that chunk may already be checkpointed.
    resumed_at = re.search(r"resumed at (\d+) steps", output)
    assert resumed_at is not None, output
    assert int(resumed_at.group(1)) in (400, 600), output

    reference, result = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert int(result["num_timesteps"]) == 800
    for key in reference.files:
        np.testing.assert_array_equal(reference[key], result[key], err_msg=key)


def test_hher_checkpoint_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    from sb3_hher import HHER

    def build_hher() -> HHER:
        env = make_env()
        env.seed(2)
        return HHER("MultiInputPolicy", env, seed=2, buffer_size=10_000)

    reference = build_hher()
    reference.learn(400)
    model = build_hher()
    model.learn(200)
    save_checkpoint(model, tmp_path / "ckpt")
    resumed = load_checkpoint(HHER, tmp_path / "ckpt", make_env())
    resumed.learn(200, reset_num_timesteps=False)
    state_a, state_b = reference.policy.state_dict(), resumed.policy.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert th.equal(state_a[key], state_b[key]), key
    for level_a, level_b in zip(reference.levels, resumed.levels, strict=True):
        assert level_a.replay_buffer.pos == level_b.replay_buffer.pos
        for key in level_a.replay_buffer.observations:
            np.testing.assert_array_equal(level_a.replay_buffer.observations[key], level_b.replay_buffer.observations[key])


def build_hher(record_decisions: bool = True, seed: int = 2):
    from sb3_hher import HHER

    env = make_env()
    env.seed(seed)
    # A small buffer: SB3's HerReplayBuffer builds one info dict per slot (seconds for the default 1M, per level).
    return HHER("MultiInputPolicy", env, seed=seed, record_decisions=record_decisions, gradient_steps=5, buffer_size=10_000)


def test_hher_checkpoint_without_pickled_buffers_rebuilds_them_from_decisions(tmp_path: Path) -> None:
    """A hierarchy's checkpoint carried with its decision log instead of the pickled level buffers resumes exactly."""
    from sb3_hher import HHER

    reference = build_hher()
    reference.learn(400)
    model = build_hher()
    model.learn(200)
    save_checkpoint(model, tmp_path / "ckpt", replay_actions=True)
    assert (tmp_path / "ckpt" / ACTIONS_FILE).stat().st_size < (tmp_path / "ckpt" / BUFFER_FILE).stat().st_size / 5
    (tmp_path / "ckpt" / BUFFER_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt buffers match the saved digest
        resumed = load_checkpoint(HHER, tmp_path / "ckpt", make_env(), replay_env=make_env())
    for saved, rebuilt in zip(model.replay_buffers, resumed.replay_buffers, strict=True):
        assert (saved.pos, saved.n_penalty) == (rebuilt.pos, rebuilt.n_penalty)
    assert resumed.replay_buffers[1].n_penalty > 0  # subgoal-test penalties are rebuilt too
    resumed.learn(200, reset_num_timesteps=False)
    state_a, state_b = reference.policy.state_dict(), resumed.policy.state_dict()
    for key in state_a:
        assert th.equal(state_a[key], state_b[key]), key
    for level_a, level_b in zip(reference.replay_buffers, resumed.replay_buffers, strict=True):
        assert level_a.pos == level_b.pos
        for key in level_a.observations:
            np.testing.assert_array_equal(level_a.observations[key], level_b.observations[key])
        np.testing.assert_array_equal(level_a.actions, level_b.actions)

    # Loaded from pickled buffers, the model takes the log from the checkpoint, so its next checkpoint is portable too.
    save_checkpoint(resumed, tmp_path / "ckpt2", replay_actions=True)
    again = load_checkpoint(HHER, tmp_path / "ckpt2", make_env())
    assert again.decision_arrays()["level_0"].shape == (400, 1, 4)


def test_hher_decision_log_errors(tmp_path: Path) -> None:
    from sb3_hher import HHER

    model = build_hher(record_decisions=False)
    model.learn(100)
    with pytest.raises(ValueError, match="record_decisions=True"):
        model.decision_arrays()
    with pytest.warns(UserWarning, match=r"No replay actions.*record_decisions"):
        save_checkpoint(model, tmp_path / "plain", replay_actions=True)
    assert not (tmp_path / "plain" / ACTIONS_FILE).exists()

    # A model loaded without its log cannot write one that covers its buffers.
    model = build_hher()
    model.learn(100)
    model.save(tmp_path / "model.zip")
    loaded = HHER.load(tmp_path / "model.zip", env=make_env())
    loaded.learn(100, reset_num_timesteps=False)
    with pytest.raises(ValueError, match="does not cover the 200 steps"):
        loaded.decision_arrays()

    # A callback that stops training drops the step it stops at from the buffers (as SB3): the log no longer fits.
    from stable_baselines3.common.callbacks import BaseCallback

    class StopEarly(BaseCallback):
        def _on_step(self) -> bool:
            return self.num_timesteps < 60

    stopped = build_hher()
    stopped.learn(100, callback=StopEarly())
    with pytest.raises(ValueError, match="callback that stopped training"):
        stopped.decision_arrays()

    # A log whose replay asks for a decision that was never logged names the divergence.
    arrays = model.decision_arrays()
    arrays["level_1"][:] = np.nan
    with pytest.raises(ValueError, match=r"no decision of level 1 at step 0.*diverged"):
        build_hher().rebuild_replay_buffers(arrays, make_env())
    with pytest.raises(ValueError, match="needs empty replay buffers"):
        model.rebuild_replay_buffers(model.decision_arrays(), make_env())


def test_decision_log_grows_and_round_trips() -> None:
    from sb3_hher.hher.decisions import DecisionLog

    log = DecisionLog([4, 3], n_envs=2, capacity=1)
    for step in range(3000):
        log.begin_step()
        log.record(0, np.arange(2), np.full((2, 4), step, dtype=np.float32))
        if step % 10 == 0:
            log.record(1, np.array([1]), np.full((1, 3), -step, dtype=np.float32), np.array([step % 20 == 0]))
    copy = DecisionLog.from_arrays(log.to_arrays())
    assert copy.steps == 3000 and copy.action_dims == [4, 3]
    actions, tested = copy.decisions(20, 1, np.array([1]))
    assert actions.tolist() == [[-20.0] * 3] and tested.tolist() == [True]
    assert copy.decisions(2999, 0, np.arange(2))[0][1, 0] == 2999.0
    with pytest.raises(ValueError, match="level 1 at step 20 for envs \\[0\\]"):
        copy.decisions(20, 1, np.arange(2))
    copy.begin_step()  # a loaded log keeps growing
    assert copy.steps == 3001
    with pytest.raises(ValueError, match="Not a decision log"):
        DecisionLog.from_arrays({"actions": np.zeros((3, 4))})
