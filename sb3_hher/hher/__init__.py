"""Hierarchical HER (Hierarchical Actor-Critic, Levy et al. 2019) built from the flat HER learners."""

from sb3_hher.hher.buffers import LevelReplayBuffer
from sb3_hher.hher.hher import HHER
from sb3_hher.hher.policies import HierarchicalPolicy, HierarchyState

__all__ = ["HHER", "HierarchicalPolicy", "HierarchyState", "LevelReplayBuffer"]
