"""Sequence replay: store steps from N envs, sample [B, T] TensorDicts."""

from replay.sampler import StreamSliceSampler
from replay.sequence import NotEnoughDataError, ReplayError, SequenceReplay

__all__ = ["NotEnoughDataError", "ReplayError", "SequenceReplay", "StreamSliceSampler"]
