import torch

from world_models.vit_jepa.masking import MaskConfig, sample_masks


def _rect(idx: torch.Tensor, gw: int) -> tuple[int, int, bool]:
    rows, cols = idx // gw, idx % gw
    h = int(rows.max() - rows.min() + 1)
    w = int(cols.max() - cols.min() + 1)
    return h, w, h * w == len(idx)


def test_multiblock_geometry_and_no_leak():
    gen = torch.Generator().manual_seed(0)
    cfg = MaskConfig()
    for _ in range(20):
        ctx, tgt = sample_masks(8, (1, 8, 8), cfg, gen)
        assert tgt.shape[:2] == (8, 4)
        assert ctx.shape[0] == 8 and ctx.shape[1] >= cfg.min_context
        for b in range(8):
            assert len(set(ctx[b].tolist())) == ctx.shape[1]  # no duplicates
            assert torch.equal(ctx[b], ctx[b].sort().values)
            for m in range(4):
                h, w, is_rect = _rect(tgt[b, m], 8)
                assert is_rect
                # 0.15-0.2 of 64 tokens, up to integer rounding of the block sides
                assert 0.1 <= h * w / 64 <= 0.3
                assert 0.75 / 2 <= h / w <= 1.5 * 2
                assert not set(tgt[b, m].tolist()) & set(ctx[b].tolist())


def test_context_block_scale_before_removal():
    # With no targets, the context is the raw 0.85-1.0 block (7x7 or 8x8 on an 8x8 grid).
    cfg = MaskConfig(num_targets=1, target_scale=(0.01, 0.01))
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        ctx, tgt = sample_masks(4, (1, 8, 8), cfg, gen)
        assert tgt.shape == (4, 1, 1)  # 1% of 64 tokens rounds to a 1x1 block
        # 8x8 always loses the target token (63); 7x7 loses it or not (48 or 49), and the
        # batch keeps its smallest context.
        assert ctx.shape[1] in {48, 49, 63}


def test_masks_are_tubes_across_time():
    gen = torch.Generator().manual_seed(2)
    ctx, tgt = sample_masks(4, (2, 8, 8), MaskConfig(), gen)
    for b in range(4):
        c = set(ctx[b].tolist())
        for m in range(4):
            t = tgt[b, m]
            first, second = t[t < 64], t[t >= 64] - 64
            assert torch.equal(first, second)
            assert not set(t.tolist()) & c


def test_shared_masks_give_every_sample_the_same_positions():
    gen = torch.Generator().manual_seed(3)
    ctx, tgt = sample_masks(6, (1, 8, 8), MaskConfig(shared=True), gen)
    assert ctx.shape[0] == 6 and tgt.shape[:2] == (6, 4)
    assert all(torch.equal(ctx[b], ctx[0]) and torch.equal(tgt[b], tgt[0]) for b in range(6))
    assert not set(tgt[0].flatten().tolist()) & set(ctx[0].tolist())
