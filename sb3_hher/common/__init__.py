from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.goal_env import GoalEnvError, GoalEnvSpec, check_goal_env, get_success
from sb3_hher.common.normalizer import GoalObsNormalizer, RunningNormalizer
from sb3_hher.common.policies import GoalPolicy, GoalTQCPolicy, NormalizedGoalExtractor

__all__ = [
    "GoalEnvError",
    "GoalEnvSpec",
    "GoalObsNormalizer",
    "GoalPolicy",
    "GoalTQCPolicy",
    "HindsightReplayBuffer",
    "NormalizedGoalExtractor",
    "RunningNormalizer",
    "check_goal_env",
    "get_success",
]
