"""
Training that survives being killed: checkpoint after every chunk, and rerunning the same command continues
from the last complete checkpoint, to the same result as an uninterrupted run.

    python examples/resumable_training.py --env FetchReach-v4 --total-timesteps 20000 --chunk 2000 --checkpoint ckpt

With ``--portable`` every checkpoint also stores the replay buffer compactly (``replay_actions.npz``: the actions of a
flat agent, every level's logged decisions for ``--algo hher``): the checkpoint folder without its large
``replay_buffer.pkl`` still resumes, on this machine or another, by replaying them in a fresh env.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_hher import HHER, HerDDPG, HerTD3
from sb3_hher.common.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from sb3_hher.common.goal_env import make_goal_env

ALGOS: dict[str, type[HerDDPG | HerTD3 | HHER]] = {"her_ddpg": HerDDPG, "her_td3": HerTD3, "hher": HHER}


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
    parser.add_argument("--portable", action="store_true", help="also store the replay buffer compactly (see above)")
    args = parser.parse_args()
    th.set_num_threads(1)
    algo = ALGOS[args.algo]

    def make_env() -> DummyVecEnv:
        return DummyVecEnv([lambda: make_goal_env(args.env)])

    env = make_env()
    if checkpoint_exists(args.checkpoint):
        # replay_env is used only where the checkpoint holds replay_actions.npz but no (current) replay_buffer.pkl.
        model = load_checkpoint(algo, args.checkpoint, env, replay_env=make_env())
        print(f"resumed at {model.num_timesteps} steps", flush=True)
    else:
        env.seed(args.seed)
        extra = {"record_decisions": True} if algo is HHER and args.portable else {}
        model = algo("MultiInputPolicy", env, seed=args.seed, gradient_steps=args.gradient_steps, **extra)
    while model.num_timesteps < args.total_timesteps:
        model.learn(min(args.chunk, args.total_timesteps - model.num_timesteps), reset_num_timesteps=False)
        save_checkpoint(model, args.checkpoint, replay_actions=args.portable)
        print(f"checkpoint at {model.num_timesteps} steps", flush=True)
    if args.save_params:
        state = {key: value.cpu().numpy() for key, value in model.policy.state_dict().items()}
        np.savez(args.save_params, num_timesteps=model.num_timesteps, **state)


if __name__ == "__main__":
    main()
