"""I-JEPA / V-JEPA pretraining module: context encoder, EMA target encoder, narrow predictor."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from world_models.regularizers import batch_standardise, sigreg, vicreg_terms
from world_models.vit_jepa.masking import MaskConfig, sample_masks
from world_models.vit_jepa.vit import ViT, ViTConfig, gather_tokens, sincos_pos_embed, transformer

REGULARIZERS = ("sigreg", "vicreg", "none")


@dataclass(frozen=True)
class JEPAConfig:
    """Training-objective settings (the encoder architecture lives in ViTConfig)."""

    pred_width: int = 0  # 0 -> half the encoder width
    pred_depth: int = 3
    pred_heads: int = 4
    ema_start: float = 0.996
    ema_end: float = 1.0
    loss: str = "smooth_l1"  # or "mse"
    # Anti-collapse term on the pooled online embedding of each frame's context: "sigreg"
    # (isotropic Gaussian, weight as in LeJEPA), "vicreg" (variance x weight, covariance x
    # weight / 25, the paper's ratio) or "none" (EMA and the predictor alone, as I-JEPA).
    reg: str = "sigreg"
    reg_weight: float = 0.05
    # SIGReg on the batch-standardised embedding (each dim centred, unit std over the batch):
    # frames of one scene share most pixels, so their pooled embeddings share a large offset
    # and vary little; asking that raw embedding to be N(0, I) fights the layer norm and lost
    # (walker-walk, 2k frames: RankMe 34 -> 18 by step 300 even at weight 3.2), while the
    # standardised one only asks for decorrelated, Gaussian-shaped variation (RankMe 34 -> 71).
    reg_standardise: bool = True

    def __post_init__(self) -> None:
        if self.reg not in REGULARIZERS:
            raise ValueError(f"JEPA regulariser {self.reg!r}; allowed: {', '.join(REGULARIZERS)}")
        if self.loss not in ("smooth_l1", "mse"):
            raise ValueError(f"JEPA loss {self.loss!r}; allowed: smooth_l1, mse")


class Predictor(nn.Module):
    """Narrow transformer mapping context tokens + positioned mask tokens to target tokens."""

    def __init__(self, enc_width: int, grid: tuple[int, int, int], width: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        self.embed = nn.Linear(enc_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_pos_embed(width, grid)[None], persistent=False)
        self.blocks = transformer(width, depth, heads, 4.0)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, enc_width)

    def forward(self, ctx: Tensor, ctx_idx: Tensor, tgt_idx: Tensor) -> Tensor:
        """ctx [B, Nc, D], ctx_idx [B, Nc], tgt_idx [B, M, Nt] -> predictions [B, M, Nt, D]."""
        b, m, nt = tgt_idx.shape
        pos = self.pos.expand(b, -1, -1)
        x = self.embed(ctx) + gather_tokens(pos, ctx_idx)
        # One predictor pass per target block, as I-JEPA does, so blocks cannot see each other.
        x = x.repeat_interleave(m, dim=0)
        flat_tgt = tgt_idx.reshape(b * m, nt)
        q = self.mask_token + gather_tokens(pos.repeat_interleave(m, dim=0), flat_tgt)
        nc = x.shape[1]
        out = self.blocks(torch.cat([x, q], dim=1))[:, nc:]
        return self.proj(self.norm(out)).reshape(b, m, nt, -1)


class JEPA(nn.Module):
    """Joint-embedding predictive architecture over frames or short clips."""

    def __init__(self, vit_cfg: ViTConfig, cfg: JEPAConfig = JEPAConfig(),
                 mask_cfg: MaskConfig = MaskConfig()) -> None:
        super().__init__()
        self.vit_cfg, self.cfg, self.mask_cfg = vit_cfg, cfg, mask_cfg
        self.encoder = ViT(vit_cfg)
        self.target = copy.deepcopy(self.encoder)
        self.target.requires_grad_(False)
        pw = cfg.pred_width or vit_cfg.width // 2
        heads = cfg.pred_heads if pw % cfg.pred_heads == 0 else 1
        self.predictor = Predictor(vit_cfg.width, vit_cfg.grid, pw, cfg.pred_depth, heads)

    def export_encoder(self) -> ViT:
        """The encoder agents use: the EMA target (smoother than the online one, as I-JEPA)."""
        return self.target

    def after_step(self, step: int, total: int) -> dict[str, float]:
        """EMA update of the target after each optimiser step; returns the momentum used."""
        momentum = self.momentum(step, total)
        self.update_target(momentum)
        return {"train/ema": momentum}

    def momentum(self, step: int, total: int) -> float:
        """EMA momentum, linear from ema_start to ema_end over training."""
        frac = min(max(step / max(total, 1), 0.0), 1.0)
        return self.cfg.ema_start + frac * (self.cfg.ema_end - self.cfg.ema_start)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online."""
        for pt, pc in zip(self.target.parameters(), self.encoder.parameters()):
            pt.lerp_(pc.detach(), 1.0 - momentum)

    def loss(self, clip: Tensor, gen: torch.Generator | None = None,
             reg_weight: float | None = None) -> dict[str, Tensor]:
        """Named loss terms for a clip batch [B, T, H, W, C]; `loss/total` is what to minimise.
        `reg_weight` overrides the config's (the pretrainer raises it after a collapse)."""
        b = clip.shape[0]
        ctx_idx, tgt_idx = sample_masks(b, self.vit_cfg.grid, self.mask_cfg, gen)
        ctx_idx, tgt_idx = ctx_idx.to(clip.device), tgt_idx.to(clip.device)
        with torch.no_grad():
            h = self.target(clip)
            h = F.layer_norm(h, h.shape[-1:])
            m, nt = tgt_idx.shape[1:]
            tgt = gather_tokens(h, tgt_idx.reshape(b, m * nt)).reshape(b, m, nt, -1)
        ctx = self.encoder(clip, keep=ctx_idx)
        pred = self.predictor(ctx, ctx_idx, tgt_idx)
        if self.cfg.loss == "mse":
            pred_loss = F.mse_loss(pred, tgt)
        else:
            pred_loss = F.smooth_l1_loss(pred, tgt)
        out = {"loss/pred": pred_loss}
        total = pred_loss
        weight = self.cfg.reg_weight if reg_weight is None else reg_weight
        pooled = ctx.mean(1)
        if self.cfg.reg == "vicreg":
            var, cov = vicreg_terms(pooled)
            out["loss/vicreg_var"], out["loss/vicreg_cov"] = var, cov
            total = total + weight * (var + cov / 25)
        elif self.cfg.reg == "sigreg":
            z = batch_standardise(pooled) if self.cfg.reg_standardise else pooled
            out["loss/sigreg"] = sigreg(z, gen=gen)
            total = total + weight * out["loss/sigreg"]
        out["loss/total"] = total
        return out
