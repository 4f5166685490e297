"""Every private TorchRL name the replay relies on, in one place.

TorchRL's public `ReplayBuffer` API has no way to overwrite stored values in place (the
replay context's latents), to read the write cursor, or to restore a storage's fill without
re-extending it; `SliceSampler` has no public hook for choosing slice starts. What we need
of its internals goes through the functions here, and `PRIVATE_NAMES` lists the
attributes they touch: `tests/replay/test_torchrl_private.py` checks that each one exists on
the installed TorchRL, so an upgrade that renames one fails there, by name, instead of deep
inside a training run. Tested with torchrl 0.14.1 (the pinned version).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import ReplayBuffer, SliceSampler
from torchrl.data.replay_buffers.storages import TensorStorage

# (class, attribute) pairs used below or overridden by replay.sampler.StreamSliceSampler;
# the test looks each up on a live instance (some are set in __init__).
PRIVATE_NAMES: tuple[tuple[type, str], ...] = (
    (TensorStorage, "_storage"),
    (TensorStorage, "_len"),
    (TensorStorage, "_init"),
    (TensorStorage, "_is_full"),
    (TensorStorage, "_last_cursor_index"),
    (TensorStorage, "_set_last_cursor"),
    (TensorStorage, "_bump_mutation_revision"),
    (TensorStorage, "_storage_keys"),
    (ReplayBuffer, "_writer"),
    (ReplayBuffer, "_sampler"),
    (ReplayBuffer, "_rng"),
    (SliceSampler, "_get_stop_and_length"),
    (SliceSampler, "_get_index"),
    (SliceSampler, "_tensor_slices_from_startend"),
    (SliceSampler, "_finalize_index"),
    (SliceSampler, "_rng"),
)


def storage_data(storage: TensorStorage) -> TensorDictBase:
    """The storage's whole [rows, envs] TensorDict (a view: writes go into the replay)."""
    return storage._storage


def write_cursor(buffer: ReplayBuffer) -> int:
    """The row the next `extend` writes (not yet wrapped to the capacity)."""
    return int(buffer._writer._cursor)


def is_full(storage: TensorStorage) -> bool:
    return bool(storage._is_full)


def last_written_row(storage: TensorStorage) -> int | None:
    """The row written last, as the storage tracks it for samplers (None when unknown)."""
    cursor = storage._last_cursor_index
    return None if cursor is None else int(torch.as_tensor(cursor).reshape(-1)[-1])


def set_last_written_row(storage: TensorStorage, row: int) -> None:
    """What a restore must set again: TorchRL restores the writer's cursor, not this."""
    storage._set_last_cursor(row)


def allocate(storage: TensorStorage, example: TensorDictBase) -> None:
    """Allocate the storage's tensors from one example item, if not done yet."""
    if not storage.initialized:
        storage._init(example)


def set_length(storage: TensorStorage, length: int) -> None:
    """Declare `length` items stored (a restore writes the rows directly)."""
    storage._len = int(length)
    storage._bump_mutation_revision()


def forget_stored_keys(storage: TensorStorage) -> None:
    """Drop the key list a locked (memmap) storage caches at its first write and filters
    every later write by, so that keys added since are written too."""
    storage._storage_keys = None


def writer_state(buffer: ReplayBuffer) -> dict:
    return buffer._writer.state_dict()


def load_writer_state(buffer: ReplayBuffer, state: dict) -> None:
    buffer._writer.load_state_dict(state)


def sampler_of(buffer: ReplayBuffer):
    return buffer._sampler


def rng_of(buffer: ReplayBuffer) -> torch.Generator | None:
    return buffer._rng
