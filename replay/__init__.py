"""Sequence replay: store steps from N envs, sample [B, T] TensorDicts."""

from replay.sampler import SAMPLERS, StreamSliceSampler, make_sampler, register_sampler
from replay.sequence import NotEnoughDataError, ReplayError, SequenceReplay

__all__ = ["SAMPLERS", "NotEnoughDataError", "ReplayError", "SequenceReplay",
           "StreamSliceSampler", "make_sampler", "register_sampler"]
