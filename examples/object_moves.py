"""
How often did an agent move the object while it trained? Reads a replay buffer saved by ``model.save_replay_buffer``
(the benchmark runner keeps one per run under ``<out>/checkpoints/<algo>_seed<k>/replay_buffer.pkl``) and prints,
per block of stored episodes, the fraction in which the achieved goal (for Fetch Push/Slide/PickAndPlace: the
object) moved by more than a threshold.

    python examples/object_moves.py docs/benchmarks/pilots/fetchpush-ebp/checkpoints/her_ddpg_seed0/replay_buffer.pkl

For reference, on FetchPush-v4 uniformly random actions move the object by more than 1 cm in about 17 % of
episodes; Gaussian noise around a zero action (std 0.2, 30 % uniform steps) in about 7 %.
"""

from __future__ import annotations

import argparse
import pickle

import numpy as np


def object_moves(buffer_path: str, env_idx: int = 0) -> np.ndarray:
    """
    :param buffer_path: A pickled ``HindsightReplayBuffer``
    :param env_idx: Which env's episodes to read
    :return: For each finished episode, oldest first, the largest distance of the achieved goal from its start (the
        logged ``rollout/achieved_goal_move`` is the mean start-to-end distance instead)
    """
    with open(buffer_path, "rb") as file:
        buffer = pickle.load(file)
    # Storage order from the oldest slot: after the buffer has wrapped, the oldest transitions start at `pos`.
    order = np.roll(np.arange(buffer.buffer_size), -buffer.pos) if buffer.full else np.arange(buffer.pos)
    ends = [pos for pos in order if buffer.ep_length[pos, env_idx] > 0 and buffer.dones[pos, env_idx]]
    moves = []
    for end in ends:
        start, length = int(buffer.ep_start[end, env_idx]), int(buffer.ep_length[end, env_idx])
        achieved = buffer.episode_achieved_goals((start + np.arange(length)) % buffer.buffer_size, env_idx)
        moves.append(float(np.linalg.norm(achieved - achieved[0], axis=1).max()))
    return np.asarray(moves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("buffer", help="replay_buffer.pkl")
    parser.add_argument("--block", type=int, default=100, help="episodes per block")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.05], help="metres")
    parser.add_argument("--env-idx", type=int, default=0, help="which env's episodes (buffers of several envs)")
    args = parser.parse_args()
    moves = object_moves(args.buffer, env_idx=args.env_idx)
    print(f"{len(moves)} episodes")
    for threshold in args.thresholds:
        moved = moves > threshold
        blocks = [f"{moved[i : i + args.block].mean():.2f}" for i in range(0, len(moved), args.block)]
        print(f"moved > {threshold} m: {moved.mean():.3f} overall; per {args.block} episodes: {' '.join(blocks)}")


if __name__ == "__main__":
    main()
