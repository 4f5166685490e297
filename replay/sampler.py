"""Slice samplers over a time x env storage where every env column is one stream.

A sampler decides where each slice starts; the base class finds the valid starts of every
stream and turns starts into storage indices. Samplers are a registry (`replay.sampler` in
the config names one; `replay.sampler_options` are its keyword arguments): a new one is a
subclass with `@register_sampler("name")` that overrides `starts`, and nothing else is
edited. The official replay's selectors have counterparts: `uniform` (Uniform; with
`recency` > 0 a Mixture of Uniform and Recency) and `recency` (Recency).
"""

from __future__ import annotations

from typing import Any

import torch
from torchrl.data import SliceSampler
from torchrl.data.replay_buffers.storages import Storage

from replay.torchrl_private import is_full, last_written_row


class StreamSliceSampler(SliceSampler):
    """SliceSampler for a 2-D (time, env) ring storage: each env column is one stream.

    Slices may cross episode boundaries inside a stream (``is_first`` marks restarts,
    as DreamerV3 samples) but never the write cursor nor another env's column. Starts are
    uniform over the valid ones, except that a ``recency`` fraction of each batch draws its
    start with probability proportional to ``(age + 1) ** -recency_exponent`` (age 0 =
    newest possible start). Subclasses change `starts`.
    """

    def __init__(
        self, *, slice_len: int = 1, recency: float = 0.0, recency_exponent: float = 1.0
    ) -> None:
        # The end key is never read: boundaries come from the storage fill and cursor.
        # truncated_key/init_key None: return stored flags untouched, no extra keys.
        super().__init__(
            slice_len=slice_len,
            end_key="is_last",
            truncated_key=None,
            init_key=None,
            strict_length=True,
        )
        if not 0.0 <= recency <= 1.0:
            raise ValueError(f"recency must be a fraction in [0, 1], got {recency}")
        if recency_exponent <= 0:
            raise ValueError(f"recency_exponent must be > 0, got {recency_exponent}")
        self.recency = float(recency)
        self.recency_exponent = float(recency_exponent)
        self._bounds_key: tuple | None = None
        self._bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._cdf: torch.Tensor | None = None

    def _get_stop_and_length(self, storage: Storage, fallback: bool = True):
        # Each column holds one env's steps in time order, so the only boundaries are
        # the fill end (not full) or the write cursor (full): no storage read needed.
        rows, num_envs = int(storage.shape[0]), int(storage.shape[1])
        full = is_full(storage)
        cursor = last_written_row(storage) if full else None
        if full and cursor is None:
            raise RuntimeError("full storage without a write cursor: slices could cross it")
        key = (rows, num_envs, full, cursor)
        if key != self._bounds_key:
            # Same result as torchrl's find_start_stop_traj on all-False end flags, in O(N).
            first, last = ((cursor + 1) % rows, cursor) if full else (0, rows - 1)
            envs = torch.arange(num_envs)
            start = torch.stack([torch.full_like(envs, first), envs], 1)
            stop = torch.stack([torch.full_like(envs, last), envs], 1)
            self._bounds = (start, stop, torch.full_like(envs, rows))
            self._bounds_key = key
        return self._bounds

    def _recent_offsets(self, span: torch.Tensor) -> torch.Tensor:
        """Ages (0 = newest start) drawn from a power law truncated to each ``span``."""
        max_span = int(span.max())
        if self._cdf is None or self._cdf.numel() < max_span:
            ages = torch.arange(max(max_span, 1024), dtype=torch.float64)
            self._cdf = torch.cumsum((ages + 1.0) ** -self.recency_exponent, 0)
        total = self._cdf[span - 1]
        u = torch.rand(span.shape, generator=self._rng, dtype=torch.float64) * total
        age = torch.searchsorted(self._cdf[:max_span], u, right=True)
        return torch.minimum(age, span - 1)

    def starts(self, span: torch.Tensor) -> torch.Tensor:
        """Where each slice starts, as an offset in [0, span) from its stream's oldest valid
        start (span - 1 is the newest); `span` [num_slices] counts the valid starts. Draw
        random numbers from `self._rng`, so a seeded replay samples reproducibly."""
        # float64: float32's 24 bits would favour some starts by ~1% in a stream of 250k.
        rand = torch.rand(span.shape, generator=self._rng, device=span.device,
                          dtype=torch.float64)
        relative = (rand * span).floor().to(torch.long)
        n_recent = int(round(self.recency * span.numel()))
        if n_recent:
            # Which slices are recency draws is random too: the first rows of a batch (the
            # ones a report shows) are no more recent than the rest.
            recent = torch.randperm(span.numel(), generator=self._rng)[:n_recent]
            relative[recent] = span[recent] - 1 - self._recent_offsets(span[recent])
        return relative

    def _get_index(
        self,
        lengths: torch.Tensor,
        start_idx: torch.Tensor,
        stop_idx: torch.Tensor,
        seq_length: int,
        num_slices: int,
        storage_length: int,
        traj_idx: torch.Tensor | None = None,
        *,
        target_seq_length: int | None = None,
        storage: Storage,
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        span = lengths[traj_idx] - seq_length + 1  # number of valid starts per stream
        relative = self.starts(span).to(start_idx.dtype)
        starts = torch.cat(
            [(start_idx[traj_idx, 0] + relative).unsqueeze(1), start_idx[traj_idx, 1:]], 1
        )
        index = self._tensor_slices_from_startend(seq_length, starts, storage_length)
        return self._finalize_index(
            index=index,
            num_slices=num_slices,
            seq_length=seq_length,
            target_seq_length=None,
            mask_flat=None,
            storage=storage,
        )

    def _finalize_index(self, *, index: torch.Tensor, **kwargs: Any):
        # The parent gathers the whole sample once more just to add markers we turned
        # off; skipping that halves the sampling cost.
        return index.to(torch.long).unbind(-1), {}


SAMPLERS: dict[str, type[StreamSliceSampler]] = {}


def register_sampler(name: str):
    """Class decorator: make `replay.sampler=<name>` use this StreamSliceSampler subclass."""

    def add(cls: type[StreamSliceSampler]) -> type[StreamSliceSampler]:
        if not (isinstance(cls, type) and issubclass(cls, StreamSliceSampler)):
            raise TypeError(f"sampler {name!r} must subclass replay.sampler.StreamSliceSampler")
        SAMPLERS[name] = cls
        return cls

    return add


def make_sampler(name: str, **options: Any) -> StreamSliceSampler:
    """The sampler registered as `name`, built with `options`; ValueError (one line) for an
    unknown name or option."""
    if name not in SAMPLERS:
        raise ValueError(f"replay sampler {name!r} unknown; allowed: {', '.join(SAMPLERS)}")
    try:
        return SAMPLERS[name](**options)
    except TypeError as exc:
        raise ValueError(f"replay sampler {name!r}: {exc}") from None


@register_sampler("uniform")
class UniformSampler(StreamSliceSampler):
    """Uniform starts (the official Uniform selector); `recency` > 0 mixes in recent ones."""


@register_sampler("recency")
class RecencySampler(StreamSliceSampler):
    """Every start drawn with probability proportional to (age + 1) ** -recency_exponent
    (the official Recency selector)."""

    def __init__(self, *, slice_len: int = 1, recency_exponent: float = 1.0) -> None:
        super().__init__(slice_len=slice_len, recency=1.0, recency_exponent=recency_exponent)
