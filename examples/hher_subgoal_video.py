"""Record an episode of a 2-level HHER agent with its subgoals drawn in the scene: a GIF (or MP4) and a PNG plot.

    MUJOCO_GL=egl python examples/hher_subgoal_video.py --env FetchReach-v4 --timesteps 10000
    MUJOCO_GL=egl python examples/hher_subgoal_video.py --load hher_fetch_reach.zip --out docs/hher_fetch_reach
    MUJOCO_GL=egl python examples/hher_subgoal_video.py --env PointMaze_Medium-v3 --load model.zip --frame-every 4

The red sphere is the subgoal level 1 gives level 0 (its radius is the achievement threshold); the env's goal
is drawn by the env itself. Works with Fetch and PointMaze/AntMaze ids.
"""

from __future__ import annotations

import argparse
import os

# Headless rendering: must be set before MuJoCo is imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import imageio.v2 as imageio
import torch as th

from sb3_hher.common.goal_env import make_goal_env
from sb3_hher.hher import HHER
from sb3_hher.hher.visualization import maze_walls, plot_episode, record_episode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="FetchReach-v4")
    parser.add_argument("--timesteps", type=int, default=10_000, help="Training steps (ignored with --load)")
    parser.add_argument("--load", default=None, help="A saved HHER model instead of training one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episode-seed", type=int, default=100)
    parser.add_argument("--out", default="hher_subgoals", help="Output prefix: <out>.gif (or .mp4) and <out>.png")
    parser.add_argument("--mp4", action="store_true", help="Write an MP4 (needs imageio-ffmpeg) instead of a GIF")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--frame-every", type=int, default=1, help="Keep every n-th frame (long maze episodes)")
    args = parser.parse_args()
    if args.frame_every < 1:
        parser.error(f"--frame-every must be >= 1, got {args.frame_every}")
    th.set_num_threads(1)

    if args.load:
        model = HHER.load(args.load, env=make_goal_env(args.env))
    else:
        model = HHER("MultiInputPolicy", make_goal_env(args.env), seed=args.seed)
        model.learn(total_timesteps=args.timesteps)

    env = make_goal_env(args.env, render_mode="rgb_array")
    record = record_episode(model, env, seed=args.episode_seed, render=True)
    walls = maze_walls(env) if args.env.startswith(("PointMaze", "AntMaze")) else None
    env.close()

    frames = record.frames[:: args.frame_every]
    video_path = f"{args.out}.mp4" if args.mp4 else f"{args.out}.gif"
    if args.mp4:
        imageio.mimsave(video_path, frames, fps=args.fps)
    else:
        imageio.mimsave(video_path, frames, duration=1000 / args.fps, loop=0)
    plot_episode(
        record, model.subgoal_space, f"{args.out}.png", title=f"{args.env}: success {record.success:.0f}", walls=walls
    )
    print(f"wrote {video_path} ({len(frames)} frames) and {args.out}.png; episode success {record.success:.0f}")


if __name__ == "__main__":
    main()
