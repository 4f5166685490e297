"""I-JEPA multi-block masking on a token grid; masks extend as tubes across time tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MaskConfig:
    """Multi-block mask geometry (I-JEPA defaults)."""

    num_targets: int = 4
    target_scale: tuple[float, float] = (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)
    min_context: int = 4
    max_tries: int = 20
    # One mask for the whole batch instead of one per sample: every sample's pooled context
    # then covers the same positions, so what varies over the batch (what the regulariser
    # on the pooled context sees) is the frames, not where each sample's context lay.
    shared: bool = False

    def __post_init__(self) -> None:
        if self.num_targets < 1:
            raise ValueError(f"mask: {self.num_targets} target blocks; need at least 1")
        for name, (lo, hi) in (("target", self.target_scale), ("context", self.context_scale)):
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"mask: {name} scale {lo}-{hi}; need 0 < low <= high <= 1 "
                                 "(a share of the frame)")


def _block_size(
    gen: torch.Generator, grid_hw: tuple[int, int], scale: tuple[float, float],
    aspect: tuple[float, float],
) -> tuple[int, int]:
    gh, gw = grid_hw
    u = torch.rand(2, generator=gen).tolist()
    s = scale[0] + u[0] * (scale[1] - scale[0])
    # Aspect sampled log-uniformly so 0.75 and 1.5 are equally likely tilts.
    log_a = math.log(aspect[0]) + u[1] * (math.log(aspect[1]) - math.log(aspect[0]))
    a = math.exp(log_a)
    area = s * gh * gw
    h = max(1, min(gh, round(math.sqrt(area * a))))
    w = max(1, min(gw, round(math.sqrt(area / a))))
    return h, w


def _place(gen: torch.Generator, grid_hw: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    gh, gw = grid_hw
    h, w = hw
    top = int(torch.randint(0, gh - h + 1, (1,), generator=gen))
    left = int(torch.randint(0, gw - w + 1, (1,), generator=gen))
    m = torch.zeros(gh, gw, dtype=torch.bool)
    m[top : top + h, left : left + w] = True
    return m


def _to_tube_idx(spatial_mask: Tensor, t: int) -> Tensor:
    """Spatial [gh, gw] mask -> sorted token indices over all t time slices."""
    s = spatial_mask.flatten().nonzero().squeeze(1)
    n = spatial_mask.numel()
    return (torch.arange(t)[:, None] * n + s[None]).flatten()


def sample_masks(
    batch: int, grid: tuple[int, int, int], cfg: MaskConfig = MaskConfig(),
    gen: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Return (context_idx [B, Nc], target_idx [B, M, Nt]) token indices for one batch.

    Block sizes are drawn once per batch (as in I-JEPA) so every sample's target blocks hold
    the same number of tokens; context blocks lose the target tokens and are then randomly
    subsampled to the batch minimum so the batch stacks without padding.
    """
    gen = gen if gen is not None else torch.Generator().manual_seed(int(torch.randint(2**31, ())))
    if cfg.shared and batch > 1:
        ctx_idx, tgt_idx = sample_masks(1, grid, cfg, gen)
        return ctx_idx.expand(batch, -1), tgt_idx.expand(batch, -1, -1)
    t, gh, gw = grid
    hw = (gh, gw)
    tsize = _block_size(gen, hw, cfg.target_scale, cfg.target_aspect)
    csize = _block_size(gen, hw, cfg.context_scale, (1.0, 1.0))
    contexts, targets = [], []
    for _ in range(batch):
        for _ in range(cfg.max_tries):
            tmasks = [_place(gen, hw, tsize) for _ in range(cfg.num_targets)]
            ctx = _place(gen, hw, csize)
            for tm in tmasks:
                ctx &= ~tm
            if int(ctx.sum()) >= cfg.min_context:
                break
        else:
            # Give up on overlap-free context: keep the complement of the targets instead.
            ctx = ~torch.stack(tmasks).any(0)
        contexts.append(_to_tube_idx(ctx, t))
        targets.append(torch.stack([_to_tube_idx(tm, t) for tm in tmasks]))
    n_ctx = min(len(c) for c in contexts)
    if n_ctx < 1:
        raise ValueError(f"mask: {cfg.num_targets} target blocks of {cfg.target_scale[0]}-"
                         f"{cfg.target_scale[1]} of the frame left no context token; use "
                         "fewer or smaller target blocks")
    ctx_idx = torch.stack(
        [c[torch.randperm(len(c), generator=gen)[:n_ctx].sort().values] for c in contexts]
    )
    return ctx_idx, torch.stack(targets)
