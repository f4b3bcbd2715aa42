"""Train a 2-level HHER agent on FetchReach-v4, save it, reload it and report its test success rate.

python examples/hher_fetch_reach.py --timesteps 10000 --seed 0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch as th

from sb3_hher.common.goal_env import get_success, make_goal_env
from sb3_hher.hher import HHER


def success_rate(model: HHER, env_id: str, n_episodes: int, seed: int) -> float:
    """Fraction of test episodes that end at the goal, running the hierarchy with its state (subgoals)."""
    env = make_goal_env(env_id)
    successes = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        state, done, info = None, False, {}
        while not done:
            action, state = model.predict(obs, state=state, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes.append(get_success(info) or 0.0)
    env.close()
    return float(np.mean(successes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="FetchReach-v4")
    parser.add_argument("--timesteps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-levels", type=int, default=2)
    parser.add_argument("--test-episodes", type=int, default=50)
    parser.add_argument("--save-path", default="hher_fetch_reach")
    parser.add_argument("--tensorboard-log", default=None)
    args = parser.parse_args()
    th.set_num_threads(1)

    env = make_goal_env(args.env)
    model = HHER(
        "MultiInputPolicy", env, n_levels=args.n_levels, seed=args.seed, tensorboard_log=args.tensorboard_log, verbose=0
    )
    print(f"H = {model.subgoal_horizon}, subgoal space: {model.subgoal_space}")
    start = time.time()
    model.learn(total_timesteps=args.timesteps)
    print(f"trained {args.timesteps} steps in {time.time() - start:.0f} s")

    model.save(args.save_path)
    model = HHER.load(args.save_path, env=make_goal_env(args.env))
    rate = success_rate(model, args.env, args.test_episodes, seed=10_000)
    print(f"{args.env} test success rate after {args.timesteps} steps: {rate:.2f}")


if __name__ == "__main__":
    main()
