"""
Train HerDDPG (baselines' defaults) on FetchReach-v4, print the test success rate, save the model and a
learning-curve PNG.

    python examples/train_fetch_reach.py --timesteps 5000 --out demo_output
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch as th

from sb3_hher import HerDDPG
from sb3_hher.benchmark import evaluate_success
from sb3_hher.common.goal_env import make_goal_env
from stable_baselines3.common.vec_env import DummyVecEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=5000)
    parser.add_argument("--eval-freq", type=int, default=1000)
    parser.add_argument("--n-eval-episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="demo_output")
    args = parser.parse_args()
    th.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    env = make_goal_env("FetchReach-v4")
    eval_env = DummyVecEnv([lambda: make_goal_env("FetchReach-v4")])
    eval_env.seed(args.seed + 100_000)
    model = HerDDPG("MultiInputPolicy", env, seed=args.seed, verbose=0)

    steps, successes = [0], [evaluate_success(model, eval_env, args.n_eval_episodes)[0]]
    while model.num_timesteps < args.timesteps:
        model.learn(args.eval_freq, reset_num_timesteps=False, progress_bar=True)
        steps.append(model.num_timesteps)
        successes.append(evaluate_success(model, eval_env, args.n_eval_episodes)[0])
        print(f"{model.num_timesteps} steps: test success {successes[-1]:.2f} ({args.n_eval_episodes} episodes)")

    model.save(out / "her_ddpg_fetchreach")
    plt.figure(figsize=(6, 4))
    plt.plot(steps, successes, marker="o")
    plt.xlabel("env steps")
    plt.ylabel("test success rate")
    plt.ylim(-0.02, 1.02)
    plt.title("HerDDPG on FetchReach-v4")
    plt.grid(alpha=0.3)
    plt.tight_layout()
    plt.savefig(out / "fetchreach_learning_curve.png", dpi=120)
    print(f"final test success: {successes[-1]:.2f}")
    print(f"saved {out / 'her_ddpg_fetchreach.zip'} and {out / 'fetchreach_learning_curve.png'}")


if __name__ == "__main__":
    main()
