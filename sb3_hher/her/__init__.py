from sb3_hher.her.her_ddpg import HerDDPG
from sb3_hher.her.her_td3 import HerTD3
from sb3_hher.her.her_tqc import HerTQC

__all__ = ["HerDDPG", "HerTD3", "HerTQC"]
