"""
How often does a trained agent's greedy policy move the object, and how often does it succeed? Loads a saved model
(any sb3-hher algorithm, HHER included: its ``predict`` carries the active subgoals in ``state``), runs seeded
deterministic episodes and prints how many moved the achieved goal (for Fetch Push/Slide/PickAndPlace: the object)
by more than a threshold, the successes, and the failures by kind: reached the goal on the way and left it (pushed
through it or off it), object fell off the table, object not moved (ended where it started), object moved but ended
short of the goal. Then the median start goal distance of failures and successes (are the failures the far goals?),
the median final goal distance and the median closest gripper-object distance.

    MUJOCO_GL=egl python examples/greedy_object_moves.py docs/benchmarks/fetchpush-v4-hher/checkpoints/hher_seed0/model.zip

The numbers of docs/benchmarks/fetchpush-v4-hher/notes.md are this script's defaults (20 episodes seeded
1000-1019, 1 cm). ``examples/object_moves.py`` counts the same thing over the episodes a run trained on.
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np

from sb3_hher import HHER, HerDDPG, HerTD3, HerTQC
from sb3_hher.common.goal_env import get_success, make_goal_env


ALGORITHMS = {"hher": HHER, "her_ddpg": HerDDPG, "her_td3": HerTD3, "her_tqc": HerTQC}


def greedy_object_moves(
    model: Any,
    env: gym.Env,
    n_episodes: int = 20,
    seed: int = 1000,
    threshold: float = 0.01,
    fall_height: float = 0.1,
) -> dict[str, Any]:
    """
    :param model: A trained model (``predict`` with ``state`` and ``episode_start``, as every SB3 algorithm)
    :param env: A goal env whose achieved goal is the object (Fetch Push/Slide/PickAndPlace)
    :param n_episodes: Deterministic episodes to run, seeded ``seed``, ``seed + 1``, ...
    :param seed: Seed of the first episode
    :param threshold: Displacement of the achieved goal that counts as moved (m)
    :param fall_height: Drop of the achieved goal below its start height that counts as fallen off the table (m)
    :return: Episode counts ``moved`` (the achieved goal ended more than ``threshold`` from its start), ``successes``,
        ``left_goal`` (failures that were a success at an earlier step) and ``fell`` (the other failures whose object
        ended ``fall_height`` below its start); per episode arrays ``success``, ``moved_episodes``,
        ``reached_episodes`` (a success at some step), ``fell_episodes``, ``closest`` (the smallest gripper-object
        distance), ``start_distance`` and ``final_distance`` (the achieved goal's distance to the desired goal at the
        start and at the end)
    """
    closest, start_distance, final_distance = [], [], []
    success_episodes, moved_episodes, reached_episodes, fell_episodes = [], [], [], []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        start = obs["achieved_goal"].copy()
        state, episode_start, done = None, np.array([True]), False
        nearest, reached = np.inf, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
            episode_start = np.array([False])
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            nearest = min(nearest, float(np.linalg.norm(obs["observation"][:3] - obs["achieved_goal"])))
            success = bool(get_success(info))
            reached |= success
        closest.append(nearest)
        start_distance.append(float(np.linalg.norm(start - obs["desired_goal"])))
        final_distance.append(float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])))
        success_episodes.append(success)
        moved_episodes.append(bool(np.linalg.norm(obs["achieved_goal"] - start) > threshold))
        reached_episodes.append(reached)
        fell_episodes.append(bool(start[2] - obs["achieved_goal"][2] > fall_height))
    success_mask, reached_mask = np.array(success_episodes, dtype=bool), np.array(reached_episodes, dtype=bool)
    fell_mask, moved_mask = np.array(fell_episodes, dtype=bool), np.array(moved_episodes, dtype=bool)
    kinds = failure_kinds(success_mask, reached_mask, fell_mask, moved_mask)
    return {
        "moved": int(moved_mask.sum()),
        "successes": int(success_mask.sum()),
        "left_goal": int(kinds["left the goal"].sum()),
        "fell": int(kinds["object off the table"].sum()),
        "success": success_mask,
        "moved_episodes": moved_mask,
        "reached_episodes": reached_mask,
        "fell_episodes": fell_mask,
        "closest": np.array(closest),
        "start_distance": np.array(start_distance),
        "final_distance": np.array(final_distance),
    }


def failure_kinds(success: np.ndarray, reached: np.ndarray, fell: np.ndarray, moved: np.ndarray) -> dict[str, np.ndarray]:
    """
    Sort failed episodes into kinds, each failure in exactly one.

    :param success: Per episode, success at the last step
    :param reached: Per episode, success at some step
    :param fell: Per episode, the object ended below the table top
    :param moved: Per episode, the object ended away from its start
    :return: Masks ``"left the goal"`` (reached it and left), ``"object off the table"`` (else fell), ``"not moved"``
        (else ended where it started) and ``"short of the goal"`` (the rest)
    """
    failed = ~success
    rest = failed & ~reached & ~fell
    return {
        "left the goal": failed & reached,
        "object off the table": failed & ~reached & fell,
        "not moved": rest & ~moved,
        "short of the goal": rest & moved,
    }


def failure_summary(result: dict[str, Any]) -> str:
    """
    :param result: What ``greedy_object_moves`` returns
    :return: One line: the failures by kind (``failure_kinds``) and the median start goal distance of failures and
        successes
    """
    kinds = failure_kinds(result["success"], result["reached_episodes"], result["fell_episodes"], result["moved_episodes"])
    failed = ~result["success"]
    start = result["start_distance"]

    def median(values: np.ndarray) -> str:
        return f"{np.median(values):.3f} m" if len(values) else "-"

    counts = ", ".join(f"{kind} {int(mask.sum())}" for kind, mask in kinds.items())
    return (
        f"failures {int(failed.sum())}: {counts}; median start goal distance of failures {median(start[failed])}, "
        f"of successes {median(start[~failed])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A saved sb3-hher model (.zip)")
    parser.add_argument("--algo", default="hher", choices=sorted(ALGORITHMS), help="The saved model's algorithm")
    parser.add_argument("--env", default="FetchPush-v4")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000, help="Seed of the first episode (then +1 per episode)")
    parser.add_argument("--threshold", type=float, default=0.01, help="Object displacement that counts as moved (m)")
    parser.add_argument(
        "--goal-threshold",
        type=float,
        default=None,
        help="HHER only: replace the saved goal_threshold (distance at which lower levels return control at the env's "
        "goal), e.g. 0.05 for a model saved before it existed; 0 turns it off",
    )
    parser.add_argument(
        "--hold-goal",
        choices=("saved", "on", "off"),
        default="saved",
        help="HHER only: whether the top level holds the current state once the env's goal is achieved (hold_goal); "
        "'saved' keeps the model's setting, 'on' tries it on a model trained without it",
    )
    args = parser.parse_args()

    env = make_goal_env(args.env)
    model = ALGORITHMS[args.algo].load(args.model, env=env, device="cpu")
    if args.goal_threshold is not None:
        if not isinstance(model, HHER):
            parser.error("--goal-threshold applies to HHER models only")
        model.policy.goal_threshold = args.goal_threshold or None
    if args.hold_goal != "saved":
        if not isinstance(model, HHER):
            parser.error("--hold-goal applies to HHER models only")
        model.policy.hold_goal = args.hold_goal == "on"
        try:
            model.policy.check_hold_goal()
        except ValueError as error:
            parser.error(str(error))
    result = greedy_object_moves(model, env, args.episodes, args.seed, args.threshold)
    print(
        f"object moved in {result['moved']}/{args.episodes} episodes, success {result['successes']}/{args.episodes}, "
        f"failures that reached the goal and left it {result['left_goal']}, "
        f"median final goal distance {np.median(result['final_distance']):.3f} m, "
        f"median closest gripper-object distance {np.median(result['closest']):.3f} m"
    )
    print(failure_summary(result))


if __name__ == "__main__":
    main()
