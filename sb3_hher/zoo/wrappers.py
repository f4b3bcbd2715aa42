"""Env wrappers named in sb3-hher's zoo configs (``env_wrapper: sb3_hher.zoo.wrappers.<name>``)."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym

from sb3_hher.common.goal_env import get_success


class IsSuccessInfo(gym.Wrapper):
    """
    Report the env's success flag as ``info["is_success"]``, the key SB3's ``EvalCallback``, its rollout logger
    and rl-zoo3 (tuning on success rate, ``enjoy``'s success rate) read. PointMaze/AntMaze report
    ``info["success"]`` instead.

    :param env: A goal-conditioned env reporting success under one of ``goal_env.SUCCESS_INFO_KEYS``
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        if "is_success" not in info:
            success = get_success(info)
            if success is not None:
                info = {**info, "is_success": success}
        return observation, reward, terminated, truncated, info
