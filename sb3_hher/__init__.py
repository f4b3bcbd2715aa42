"""sb3-hher: baselines-quality Hindsight Experience Replay (and Hierarchical HER) for Stable-Baselines3."""

from sb3_hher.common.buffers import HindsightReplayBuffer
from sb3_hher.common.policies import GoalPolicy
from sb3_hher.her import HerDDPG, HerTD3
from sb3_hher.hher import HHER

__version__ = "0.1.0"

__all__ = ["HHER", "GoalPolicy", "HerDDPG", "HerTD3", "HindsightReplayBuffer", "__version__"]
