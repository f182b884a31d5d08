"""Pushing on what was found: steering vectors, their sweeps with controls, and the Hydra check of self-repair."""

from .apply import Setting, Steering
from .self_repair import Hydra, hydra
from .sweep import SteeringSweep, steer_sweep
from .vectors import (SteeringVector, actadd, channel_direction, from_direction, from_probe, head_direction,
                      in_context_vector, mean_difference, read_pairs)

__all__ = ["Hydra", "Setting", "Steering", "SteeringSweep", "SteeringVector", "actadd", "channel_direction",
           "from_direction", "from_probe", "head_direction", "hydra", "in_context_vector", "mean_difference",
           "read_pairs", "steer_sweep"]
