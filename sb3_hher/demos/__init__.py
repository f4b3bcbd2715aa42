"""Demonstrations: scripted Fetch controllers, demonstration files, and their transitions for a replay buffer."""

from sb3_hher.demos.controllers import (
    ControllerStats,
    FetchPickAndPlaceController,
    FetchPushController,
    FetchReachController,
    ScriptedController,
    generate_demonstrations,
    make_controller,
    record_episode,
)
from sb3_hher.demos.io import DemoEpisode, Demonstrations, load_demonstrations, save_demonstrations

__all__ = [
    "ControllerStats",
    "DemoEpisode",
    "Demonstrations",
    "FetchPickAndPlaceController",
    "FetchPushController",
    "FetchReachController",
    "ScriptedController",
    "generate_demonstrations",
    "load_demonstrations",
    "make_controller",
    "record_episode",
    "save_demonstrations",
]
