"""sb3-hher: baselines-quality Hindsight Experience Replay (and Hierarchical HER) for Stable-Baselines3."""

from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.policies import GoalPolicy, GoalTQCPolicy
from sb3_hher.her import HerDDPG, HerTD3, HerTQC
from sb3_hher.hher import HHER

__version__ = "0.1.0"

__all__ = ["HHER", "GoalPolicy", "GoalTQCPolicy", "HerDDPG", "HerTD3", "HerTQC", "HindsightReplayBuffer", "__version__"]
