"""
Training that survives being killed: checkpoint after every chunk, and rerunning the same command continues
from the last complete checkpoint, to the same result as an uninterrupted run.

    python examples/resumable_training.py --env FetchReach-v4 --total-timesteps 20000 --chunk 2000 --checkpoint ckpt
"""

from __future__ import annotations

import argparse

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher import HerDDPG, HerTD3
from sb3_hher.common.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from sb3_hher.common.goal_env import make_goal_env

ALGOS = {"her_ddpg": HerDDPG, "her_td3": HerTD3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="her_ddpg", choices=sorted(ALGOS))
    parser.add_argument("--env", default="FetchReach-v4")
    parser.add_argument("--total-timesteps", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=2_000, help="steps between checkpoints (whole episodes)")
    parser.add_argument("--checkpoint", default="checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-steps", type=int, default=40)
    parser.add_argument("--save-params", default=None, help="write the final parameters to this .npz")
    args = parser.parse_args()
    th.set_num_threads(1)
    algo = ALGOS[args.algo]

    env = DummyVecEnv([lambda: make_goal_env(args.env)])
    if checkpoint_exists(args.checkpoint):
        model = load_checkpoint(algo, args.checkpoint, env)
        print(f"resumed at {model.num_timesteps} steps", flush=True)
    else:
        env.seed(args.seed)
        model = algo("MultiInputPolicy", env, seed=args.seed, gradient_steps=args.gradient_steps)
    while model.num_timesteps < args.total_timesteps:
        model.learn(min(args.chunk, args.total_timesteps - model.num_timesteps), reset_num_timesteps=False)
        save_checkpoint(model, args.checkpoint)
        print(f"checkpoint at {model.num_timesteps} steps", flush=True)
    if args.save_params:
        state = {key: value.cpu().numpy() for key, value in model.policy.state_dict().items()}
        np.savez(args.save_params, num_timesteps=model.num_timesteps, **state)


if __name__ == "__main__":
    main()
