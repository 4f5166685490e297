"""Sequence replay: steps from N envs in, contiguous [B, T] slices out (TorchRL-backed)."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tensordict import MemoryMappedTensor, TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, ReplayBuffer

from replay.sampler import make_sampler
from replay.torchrl_private import (
    allocate,
    forget_stored_keys,
    load_writer_state,
    rng_of,
    sampler_of,
    set_last_written_row,
    set_length,
    storage_data,
    write_cursor,
    writer_state,
)

# torchrl announces every storage it allocates at INFO, in colour, in the middle of the
# training progress bar; its warnings still show.
logging.getLogger("torchrl").setLevel(logging.WARNING)

META_FILE = "sequence_replay.json"
_STATE_FILE = "state.pt"  # writer cursor, storage length, RNG
_DATA_DIR = "data"  # filled rows, one memmap file per key
_SAVE_THREADS = 4


class ReplayError(ValueError):
    """Bad argument or data given to a SequenceReplay."""


class NotEnoughDataError(ReplayError):
    """Sampling was asked for before enough steps were stored."""


class SequenceReplay:
    """Replay of N parallel env streams, sampled as contiguous [B, T] TensorDict slices.

    ``capacity`` counts steps over all envs: each env keeps ``capacity // num_envs`` rows.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        directory: str | os.PathLike | None = None,
        recency: float = 0.0,
        seed: int | None = None,
        recency_exponent: float = 1.0,
        sampler: str = "uniform",
        sampler_options: Mapping[str, Any] | None = None,
    ) -> None:
        if num_envs < 1:
            raise ReplayError(f"num_envs must be >= 1, got {num_envs}")
        if capacity < num_envs:
            raise ReplayError(
                f"capacity (total steps over all envs) must be >= num_envs={num_envs}, "
                f"got {capacity}"
            )
        self.num_envs = int(num_envs)
        self.rows = int(capacity) // self.num_envs  # steps kept per env stream
        self.capacity = self.rows * self.num_envs
        self.directory = None if directory is None else str(directory)
        self.recency = float(recency)
        self.seed = seed
        # `recency` and `recency_exponent` are the uniform sampler's (kept for old callers).
        options = dict(sampler_options or {})
        if sampler == "uniform":
            options = {"recency": recency, "recency_exponent": recency_exponent, **options}
        try:
            self._sampler = make_sampler(sampler, **options)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        if self.directory is None:
            storage = LazyTensorStorage(self.capacity, ndim=2)
        else:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            # existsok: the directory may hold an earlier run's files (resume).
            storage = LazyMemmapStorage(
                self.capacity, scratch_dir=self.directory, ndim=2, existsok=True
            )
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(int(seed))
        else:
            generator.seed()
        # dim_extend=1: an added [N, 1] chunk is N envs x one time step.
        self._buffer = ReplayBuffer(
            storage=storage, sampler=self._sampler, generator=generator, dim_extend=1
        )
        self._keys: set[str] | None = None
        self.inserted = 0  # steps ever added (over all envs), kept across save/load
        self.sampled = 0  # steps ever returned by sample()

    # ------------------------------------------------------------------ writing
    def add(self, step: TensorDictBase | Mapping[str, Any]) -> None:
        """Store one vector-env step: a TensorDict with batch size [num_envs]."""
        if not isinstance(step, TensorDictBase):
            step = TensorDict(
                {k: torch.as_tensor(v) for k, v in step.items()}, batch_size=[self.num_envs]
            )
        if tuple(step.batch_size) != (self.num_envs,):
            raise ReplayError(
                f"add() expects a step with batch size [{self.num_envs}] (num_envs), "
                f"got {list(step.batch_size)}"
            )
        keys = set(step.keys(include_nested=True, leaves_only=True))
        if self._keys is None:
            self._keys = keys
        elif keys != self._keys:
            raise ReplayError(
                f"add() got keys {sorted(map(str, keys))}, but the replay stores "
                f"{sorted(map(str, self._keys))}"
            )
        self._buffer.extend(step.unsqueeze(1))
        self.inserted += self.num_envs

    # ----------------------------------------------------------------- sampling
    @property
    def steps_per_env(self) -> int:
        """Time steps currently stored per env stream."""
        return len(self._buffer) // self.num_envs

    def __len__(self) -> int:
        return len(self._buffer)

    def can_sample(self, length: int) -> bool:
        """True when a slice of ``length`` contiguous steps is available."""
        return 1 <= length <= self.steps_per_env

    def sample(self, batch_size: int, length: int, return_index: bool = False):
        """Return a TensorDict [batch_size, length] of contiguous steps, one env per row;
        with ``return_index`` also the storage index of every step, a (row, env) pair of
        [batch_size, length] tensors that :meth:`write` takes."""
        if batch_size < 1 or length < 1:
            raise ReplayError(
                f"batch_size and length must be >= 1, got batch_size={batch_size}, length={length}"
            )
        if length > self.rows:
            raise ReplayError(
                f"length={length} exceeds the {self.rows} steps kept per env "
                f"(capacity {self.capacity} / {self.num_envs} envs)"
            )
        if not self.can_sample(length):
            raise NotEnoughDataError(
                f"cannot sample slices of length {length}: only {self.steps_per_env} "
                f"steps per env stored so far ({len(self)} total)"
            )
        self._sampler.slice_len = int(length)
        shape = (int(batch_size), int(length))
        data, info = self._buffer.sample(batch_size=shape[0] * shape[1], return_info=True)
        self.sampled += shape[0] * shape[1]
        data = data.reshape(*shape)
        if not return_index:
            return data
        return data, tuple(i.reshape(*shape) for i in info["index"])

    def write(self, index: tuple[torch.Tensor, torch.Tensor],
              values: Mapping[str, torch.Tensor]) -> None:
        """Overwrite stored keys at a storage ``index`` from :meth:`sample` (or a slice of
        it): ``values[key]`` has the index's shape plus the key's own. DreamerV3's replay
        context writes the latent states computed in training back this way."""
        rows, envs = index
        stored = self._stored_keys("write")
        for key, value in values.items():
            if key not in stored:
                raise ReplayError(f"write() got key {key!r}; the replay stores {sorted(stored)}")
            target = storage_data(self._buffer.storage).get(key)
            expect = (*rows.shape, *target.shape[2:])
            if tuple(value.shape) != expect:
                raise ReplayError(f"write() got {key!r} of shape {tuple(value.shape)}; the "
                                  f"index needs {expect}")
            target[rows, envs] = value.to(target.dtype)

    def write_last(self, values: Mapping[str, Any]) -> None:
        """Overwrite keys of the step added last (one row of ``num_envs`` values each)."""
        if not len(self):
            raise ReplayError("write_last() needs a stored step; add() one first")
        stored = self._stored_keys("write_last")
        row = (write_cursor(self._buffer) - 1) % self.rows
        for key, value in values.items():
            if key not in stored:
                raise ReplayError(f"write_last() got key {key!r}; the replay stores "
                                  f"{sorted(stored)}")
            target = storage_data(self._buffer.storage).get(key)
            value = torch.as_tensor(value)
            if tuple(value.shape) != tuple(target.shape[1:]):
                raise ReplayError(f"write_last() got {key!r} of shape {tuple(value.shape)}; "
                                  f"expected {tuple(target.shape[1:])}")
            target[row] = value.to(target.dtype)

    def add_keys(self, spec: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> list[str]:
        """Give stored data the keys of `spec` ({key: (shape per step, dtype)}) it lacks,
        zero-filled at every row: a run resumed from a replay saved before its agent began
        storing them. Returns the keys added (none for an empty replay: its first `add`
        sets the keys)."""
        if self._keys is None:
            return []
        data = storage_data(self._buffer.storage)
        added = [key for key in spec if key not in self._stored_keys("add_keys")]
        locked = data.is_locked  # memmap storage locks its TensorDict
        if locked:
            data.unlock_()
        try:
            for key in added:
                shape, dtype = spec[key]
                size = (*data.batch_size, *shape)
                if self.directory is None:  # calloc'd: pages cost memory once written
                    value = torch.zeros(size, dtype=dtype)
                else:  # on disk like the rest of the storage
                    # A resume killed before its first checkpoint left this file: start anew.
                    filename = Path(self.directory) / f"{key}.added.memmap"
                    filename.unlink(missing_ok=True)
                    value = MemoryMappedTensor.zeros(size, dtype=dtype, filename=filename)
                data.set(key, value)
                self._keys.add(key)
        finally:
            if locked:
                data.lock_()
            forget_stored_keys(self._buffer.storage)  # or later adds drop the new keys
        return added

    def _stored_keys(self, caller: str) -> set[str]:
        if self._keys is None:
            raise ReplayError(f"{caller}() needs stored steps; the replay is empty")
        return {k if isinstance(k, str) else ".".join(k) for k in self._keys}

    def chronological(self) -> TensorDictBase | None:
        """Every stored step as a [rows, num_envs] TensorDict, oldest row first (the ring
        unrolled at the write cursor once it has wrapped); None when empty."""
        data = self._filled_data()
        if data is None or self.steps_per_env < self.rows:
            return data
        cursor = write_cursor(self._buffer) % self.rows
        return torch.cat([data[cursor:], data[:cursor]], 0)

    @property
    def sampling_generator(self) -> torch.Generator | None:
        """The generator `sample` draws from (its state is saved with the replay)."""
        return rng_of(self._buffer)

    def stats(self) -> dict[str, float]:
        """Metrics under the ``replay/`` namespace."""
        return {
            "replay/steps": float(len(self)),
            "replay/fill": len(self) / self.capacity,
            "replay/inserted": float(self.inserted),
            "replay/sampled": float(self.sampled),
        }

    # -------------------------------------------------------------- persistence
    def _meta(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "inserted": self.inserted,
            "sampled": self.sampled,
            "keys": None if self._keys is None else sorted(map(str, self._keys)),
        }

    def _check_meta(self, meta: Mapping[str, Any]) -> None:
        if meta["capacity"] != self.capacity or meta["num_envs"] != self.num_envs:
            raise ReplayError(
                f"saved replay has capacity={meta['capacity']}, num_envs={meta['num_envs']}; "
                f"this one has capacity={self.capacity}, num_envs={self.num_envs}"
            )

    def _after_restore(self, meta: Mapping[str, Any]) -> None:
        self.inserted, self.sampled = int(meta["inserted"]), int(meta["sampled"])
        # torchrl restores the writer cursor but not the storage's "last written row",
        # which the sampler needs to keep slices off the old/new data seam.
        self._sampler._bounds_key = None
        self._keys = None
        if len(self._buffer):
            set_last_written_row(self._buffer.storage, (write_cursor(self._buffer) - 1) % self.rows)
            self._keys = set(self._buffer.storage[0:1].keys(include_nested=True, leaves_only=True))

    def _compact_state(self) -> dict[str, Any]:
        """Everything but the stored rows: writer cursor, storage length, RNG, counters."""
        buffer = self._buffer
        rng = rng_of(buffer)
        return {
            "meta": self._meta(),
            "filled_rows": self.steps_per_env,
            "storage_len": len(buffer.storage),
            "writer": writer_state(buffer),
            "sampler": sampler_of(buffer).state_dict(),
            "rng": None if rng is None else (rng.get_state().clone(), str(rng.device)),
        }

    def _filled_data(self) -> TensorDictBase | None:
        """The [filled_rows, num_envs] part of the storage (a view), or None when empty."""
        rows = self.steps_per_env
        if rows == 0:
            return None
        return storage_data(self._buffer.storage)[:rows]

    def _restore(self, state: Mapping[str, Any], data: TensorDictBase | None) -> None:
        """Write ``data`` into rows [0, filled_rows) and restore cursor, RNG and counters."""
        self._check_meta(state["meta"])
        rows, storage = int(state["filled_rows"]), self._buffer.storage
        if (data is None) != (rows == 0) or (
            data is not None and tuple(data.batch_size) != (rows, self.num_envs)
        ):
            got = None if data is None else list(data.batch_size)
            raise ReplayError(
                f"saved replay is inconsistent: {rows} filled rows but data of batch size {got}"
            )
        if data is not None:
            allocate(storage, data[0])
            ours = set(storage_data(storage).keys(include_nested=True, leaves_only=True))
            theirs = set(data.keys(include_nested=True, leaves_only=True))
            if ours != theirs:
                raise ReplayError(
                    f"saved replay stores keys {sorted(map(str, theirs))}, but this replay "
                    f"already stores {sorted(map(str, ours))}"
                )
            storage_data(storage)[:rows] = data
        set_length(storage, int(state["storage_len"]))
        load_writer_state(self._buffer, state["writer"])
        sampler_of(self._buffer).load_state_dict(state["sampler"])
        if state["rng"] is not None:
            rng_state, device = state["rng"]
            generator = torch.Generator(device=device)
            generator.set_state(rng_state)
            self._buffer.set_rng(generator)
        self._after_restore(state["meta"])

    def save(self, path: str | os.PathLike) -> None:
        """Write the filled rows, write cursor and sampling RNG to the directory ``path``.

        Only stored steps are written (memory-mapped ``.memmap`` files per key), so the
        size grows with the data, not with the capacity.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        data_dir = path / _DATA_DIR
        if data_dir.exists():
            shutil.rmtree(data_dir)  # an older save's keys/shapes must not linger
        data = self._filled_data()
        if data is not None:
            # copy_existing: an on-disk replay's rows are memmaps already, copy them out.
            data.memmap(data_dir, copy_existing=True, num_threads=_SAVE_THREADS)
        torch.save(self._compact_state(), path / _STATE_FILE)
        # Written last: its presence marks a complete save.
        (path / META_FILE).write_text(json.dumps(self._meta()))

    def load(self, path: str | os.PathLike) -> None:
        """Restore what :meth:`save` wrote; sampling then continues identically."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file() or not (path / _STATE_FILE).is_file():
            raise ReplayError(f"no saved replay in {path} (missing {META_FILE} or {_STATE_FILE})")
        self._check_meta(json.loads(meta_file.read_text()))
        state = torch.load(path / _STATE_FILE, weights_only=True)
        data = None
        if (path / _DATA_DIR).is_dir():
            data = TensorDict.load_memmap(path / _DATA_DIR)
        self._restore(state, data)

    def state_dict(self) -> dict[str, Any]:
        """Stored rows (a copy, without the unfilled capacity), write cursor and RNG state."""
        data = self._filled_data()
        state = self._compact_state()
        state["data"] = None if data is None else data.clone().to_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        saved = state_dict.get("data")
        data = None
        if saved is not None:
            data = TensorDict(saved, batch_size=[state_dict["filled_rows"], self.num_envs])
        self._restore(state_dict, data)

    def __repr__(self) -> str:
        kind = "memory" if self.directory is None else f"memmap:{self.directory}"
        return (
            f"SequenceReplay(len={len(self)}, capacity={self.capacity}, "
            f"num_envs={self.num_envs}, storage={kind}, recency={self.recency})"
        )
