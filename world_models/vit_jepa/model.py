"""I-JEPA / V-JEPA pretraining module: context encoder, EMA target encoder, narrow predictor."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from world_models.regularizers import batch_standardise, sigreg, vicreg_terms
from world_models.vit_jepa.masking import MaskConfig, sample_masks
from world_models.vit_jepa.reconstruction import patchify
from world_models.vit_jepa.vit import ViT, ViTConfig, gather_tokens, sincos_pos_embed, transformer

REGULARIZERS = ("sigreg", "vicreg", "none")
TARGET_NORMS = ("layer", "none", "center")
TOKEN_WEIGHTS = ("uniform", "change")
CONTEXTS = ("masked", "full")


@dataclass(frozen=True)
class JEPAConfig:
    """Training-objective settings (the encoder architecture lives in ViTConfig)."""

    pred_width: int = 0  # 0 -> half the encoder width
    pred_depth: int = 3
    pred_heads: int = 4
    ema_start: float = 0.996
    ema_end: float = 1.0
    # The momentum ramp spans this many runs' length. 1.0 reaches ema_end at the last step,
    # so the target (the exported encoder) barely moves over the last steps; I-JEPA's
    # ipe_scale is 1.25 (it ends at 0.9992 and the target still follows the online encoder).
    ema_stretch: float = 1.0
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
    # Prediction across time (V-JEPA's idea, issue 34): with horizon k > 0 the targets are
    # blocks of the clip k frames later than the context's clip, so what moves between frames
    # (a limb; not the static background) is what the predictor must carry. 0 is I-JEPA:
    # context and targets from the same clip.
    horizon: int = 0
    # With a horizon, the context is the earlier clip with the target blocks hidden (masked,
    # as V-JEPA's tubes) or the whole earlier clip (full: only the future is unknown).
    context: str = "masked"
    # > 0: the predictor also sees the `horizon` actions taken between the two clips, one
    # token each (V-JEPA 2-AC conditions its predictor on actions); the action size.
    action_dim: int = 0
    # Targets are the EMA encoder's tokens layer-normed per token (I-JEPA: its own final
    # norm, then a plain layer norm), its last block's output before any norm (none), or
    # layer-normed and then centred per position over the batch (center): the probe found
    # 80-86% of a JEPA's layer-normed token variance is the position alone, which a mask
    # token's position predicts without looking at the frame; centring leaves the content.
    target_norm: str = "layer"
    # Loss per target token: uniform, or weighted by how much its patch's pixels change
    # between the two clips (floor 0.1, mean 1), so a static background earns little.
    token_weight: str = "uniform"
    # Targets averaged over the outputs of the EMA encoder's last L blocks, each layer-normed
    # (data2vec's targets: earlier blocks keep more of each patch's own content, while the
    # last block's tokens are mostly position in our tiny ViT). 1: the last block only.
    target_layers: int = 1

    def __post_init__(self) -> None:
        if self.reg not in REGULARIZERS:
            raise ValueError(f"JEPA regulariser {self.reg!r}; allowed: {', '.join(REGULARIZERS)}")
        if self.loss not in ("smooth_l1", "mse"):
            raise ValueError(f"JEPA loss {self.loss!r}; allowed: smooth_l1, mse")
        for name, value, allowed in (("target norm", self.target_norm, TARGET_NORMS),
                                     ("token weight", self.token_weight, TOKEN_WEIGHTS),
                                     ("context", self.context, CONTEXTS)):
            if value not in allowed:
                raise ValueError(f"JEPA {name} {value!r}; allowed: {', '.join(allowed)}")
        if self.ema_stretch < 1.0:
            raise ValueError(f"JEPA ema_stretch {self.ema_stretch}; must be >= 1")
        if self.target_layers < 1:
            raise ValueError(f"JEPA target layers {self.target_layers}; must be >= 1")
        if self.horizon < 0 or self.action_dim < 0:
            raise ValueError(f"JEPA horizon {self.horizon} and action size {self.action_dim} "
                             "must be >= 0")
        if self.horizon == 0 and (self.action_dim or self.token_weight == "change"
                                  or self.context == "full"):
            raise ValueError("JEPA actions, token weight 'change' and context 'full' need a "
                             "horizon > 0 (a later clip to predict)")


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

    def forward(self, ctx: Tensor, ctx_idx: Tensor, tgt_idx: Tensor,
                extra: Tensor | None = None) -> Tensor:
        """ctx [B, Nc, D], ctx_idx [B, Nc], tgt_idx [B, M, Nt] -> predictions [B, M, Nt, D].
        `extra` [B, E, width]: more tokens beside the context (the action tokens)."""
        b, m, nt = tgt_idx.shape
        pos = self.pos.expand(b, -1, -1)
        x = self.embed(ctx) + gather_tokens(pos, ctx_idx)
        if extra is not None:
            x = torch.cat([x, extra], dim=1)
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
        if cfg.target_layers > vit_cfg.depth:
            raise ValueError(f"JEPA target layers {cfg.target_layers}; the encoder has "
                             f"{vit_cfg.depth} blocks")
        self.encoder = ViT(vit_cfg)
        self.target = copy.deepcopy(self.encoder)
        self.target.requires_grad_(False)
        pw = cfg.pred_width or vit_cfg.width // 2
        heads = cfg.pred_heads if pw % cfg.pred_heads == 0 else 1
        self.predictor = Predictor(vit_cfg.width, vit_cfg.grid, pw, cfg.pred_depth, heads)
        if cfg.action_dim:
            # One predictor token per action: its embedding plus a learned step position.
            self.action_embed = nn.Linear(cfg.action_dim, pw)
            self.action_pos = nn.Parameter(torch.zeros(1, cfg.horizon, pw))
            nn.init.trunc_normal_(self.action_pos, std=0.02)

    @property
    def clip_frames(self) -> int:
        """Frames per training sample: the encoder's clip, plus the horizon to predict across."""
        return self.vit_cfg.frames_per_clip + self.cfg.horizon

    @property
    def needs_actions(self) -> bool:
        return self.cfg.action_dim > 0

    def export_encoder(self) -> ViT:
        """The encoder agents use: the EMA target (smoother than the online one, as I-JEPA)."""
        return self.target

    def after_step(self, step: int, total: int) -> dict[str, float]:
        """EMA update of the target after each optimiser step; returns the momentum used."""
        momentum = self.momentum(step, total)
        self.update_target(momentum)
        return {"train/ema": momentum}

    def momentum(self, step: int, total: int) -> float:
        """EMA momentum, linear from ema_start towards ema_end over ema_stretch x training."""
        frac = min(max(step / (self.cfg.ema_stretch * max(total, 1)), 0.0), 1.0)
        return self.cfg.ema_start + frac * (self.cfg.ema_end - self.cfg.ema_start)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online."""
        for pt, pc in zip(self.target.parameters(), self.encoder.parameters()):
            pt.lerp_(pc.detach(), 1.0 - momentum)

    def loss(self, clip: Tensor, gen: torch.Generator | None = None,
             reg_weight: float | None = None, actions: Tensor | None = None
             ) -> dict[str, Tensor]:
        """Named loss terms for a batch of clips [B, clip_frames, H, W, C]; `loss/total` is
        what to minimise. With a horizon, the first `frames_per_clip` frames are the context
        and the last ones the targets; `actions` [B, clip_frames - 1, A] are the actions
        between consecutive frames (the last `horizon` reach the target clip). `reg_weight`
        overrides the config's (the pretrainer raises it after a collapse)."""
        b, t = clip.shape[:2]
        if t != self.clip_frames:
            raise ValueError(f"JEPA clip of {t} frames; this model takes {self.clip_frames} "
                             f"({self.vit_cfg.frames_per_clip} + horizon {self.cfg.horizon})")
        fpc, k = self.vit_cfg.frames_per_clip, self.cfg.horizon
        past, future = clip[:, :fpc], clip[:, k:]
        ctx_idx, tgt_idx = sample_masks(b, self.vit_cfg.grid, self.mask_cfg, gen)
        ctx_idx, tgt_idx = ctx_idx.to(clip.device), tgt_idx.to(clip.device)
        if k and self.cfg.context == "full":
            ctx_idx = torch.arange(math.prod(self.vit_cfg.grid), device=clip.device).expand(b, -1)
        m, nt = tgt_idx.shape[1:]
        with torch.no_grad():
            h = normalise_targets(self.target, future, self.cfg.target_norm,
                                  self.cfg.target_layers)
            tgt = gather_tokens(h, tgt_idx.reshape(b, m * nt)).reshape(b, m, nt, -1)
        ctx = self.encoder(past, keep=ctx_idx)
        pred = self.predictor(ctx, ctx_idx, tgt_idx, self._action_tokens(actions, b))
        per_elem = (F.mse_loss if self.cfg.loss == "mse" else F.smooth_l1_loss)(
            pred, tgt, reduction="none")
        if self.cfg.token_weight == "change":
            w = change_weights(past, future, self.vit_cfg, tgt_idx)
            pred_loss = (per_elem.mean(-1) * w).mean()
        else:
            pred_loss = per_elem.mean()
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

    def _action_tokens(self, actions: Tensor | None, b: int) -> Tensor | None:
        if not self.cfg.action_dim:
            return None
        want = (b, self.clip_frames - 1, self.cfg.action_dim)
        if actions is None or tuple(actions.shape) != want:
            got = "none" if actions is None else tuple(actions.shape)
            raise ValueError(f"this JEPA conditions on actions: needs actions of shape {want}, "
                             f"got {got}")
        return self.action_embed(actions[:, -self.cfg.horizon :].float()) + self.action_pos


def normalise_targets(target: ViT, clip: Tensor, mode: str, layers: int = 1) -> Tensor:
    """Target tokens [B, N, D] of the EMA encoder for `JEPAConfig.target_norm` = mode,
    averaged over its last `layers` blocks (each layer-normed unless mode is none)."""
    if layers > 1:
        outs = target.block_outputs(clip)[-layers:]
        if mode == "none":
            return torch.stack(outs).mean(0)
        h = torch.stack([F.layer_norm(o, o.shape[-1:]) for o in outs]).mean(0)
    elif mode == "none":
        return target(clip, final_norm=False)
    else:
        h = target(clip)
    h = F.layer_norm(h, h.shape[-1:])
    return h - h.mean(0, keepdim=True) if mode == "center" else h


def change_weights(past: Tensor, future: Tensor, cfg: ViTConfig, tgt_idx: Tensor,
                   floor: float = 0.1) -> Tensor:
    """Per target token [B, M, Nt]: floor + (1 - floor) x the mean absolute pixel change of
    its patch between the two clips over the mean change of all the batch's patches (so the
    weights average 1 over all patches, about 1 over the targets); 1 where nothing changed."""
    change = (patchify(future, cfg) - patchify(past, cfg)).abs().mean(-1)  # [B, N]
    b, m, nt = tgt_idx.shape
    c = gather_tokens(change.unsqueeze(-1), tgt_idx.reshape(b, m * nt)).reshape(b, m, nt)
    mean = change.mean()
    w = floor + (1.0 - floor) * c / mean.clamp_min(1e-12)
    return torch.where(mean > 0, w, torch.ones_like(w))  # no host sync on a GPU
