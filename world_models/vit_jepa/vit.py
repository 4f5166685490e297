"""Vision Transformer for small frames, with optional V-JEPA style spatio-temporal tubelets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

PRESETS: dict[str, dict[str, int]] = {
    # tiny trains on a 2-core CPU in minutes; small/base follow the usual ViT-S/B widths.
    "tiny": {"width": 128, "depth": 4, "heads": 4},
    "small": {"width": 384, "depth": 8, "heads": 6},
    "base": {"width": 768, "depth": 12, "heads": 12},
}


# How a ViT scales its input pixels (x in [0, 1]): `center` subtracts 0.5, what every
# encoder file before issue 34's input finding used; `channel` and `pixel` standardise with
# the mean and std of the pretraining frames, per colour channel or per pixel and channel
# (`fit_input_stats`; the statistics are buffers saved with the weights). On camera-tracked
# DMC frames most pixels barely change between frames, so with `center` a patch's content
# varies ~16x less than its sin-cos position embedding and the tokens are mostly position.
INPUT_NORMS = ("center", "channel", "pixel")
# Floor of a pixel's std under `pixel`: a pixel the frames never changed is scaled as one
# that moves by 5% of the range, not blown up when it does change in an agent's frames.
MIN_PIXEL_STD = 0.05


class ConfigError(ValueError):
    """Raised for an invalid JEPA/ViT configuration value."""


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a JEPA ViT encoder; enough to rebuild it from a saved file."""

    image_shape: tuple[int, int, int] = (64, 64, 3)  # H, W, C
    patch: int = 8
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    frames_per_clip: int = 1
    tubelet: int = 1
    pos_embed: str = "sincos"  # "sincos" (fixed) or "learned"
    input_norm: str = "center"  # INPUT_NORMS; files saved without it are "center"

    def __post_init__(self) -> None:
        h, w, _ = self.image_shape
        if h % self.patch or w % self.patch:
            raise ConfigError(f"image {h}x{w} is not divisible by patch {self.patch}")
        if self.frames_per_clip % self.tubelet:
            raise ConfigError(
                f"frames_per_clip {self.frames_per_clip} is not divisible by tubelet {self.tubelet}"
            )
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.pos_embed not in ("sincos", "learned"):
            raise ConfigError(f"pos_embed {self.pos_embed!r}; allowed: 'sincos', 'learned'")
        if self.input_norm not in INPUT_NORMS:
            raise ConfigError(f"input_norm {self.input_norm!r}; allowed: "
                              + ", ".join(INPUT_NORMS))

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (time, height, width)."""
        h, w, _ = self.image_shape
        return self.frames_per_clip // self.tubelet, h // self.patch, w // self.patch

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_shape"] = list(self.image_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


def make_config(
    preset: str = "tiny",
    image_shape: tuple[int, int, int] = (64, 64, 3),
    frames_per_clip: int = 1,
    **overrides,
) -> ViTConfig:
    """Build a ViTConfig from a named preset; tubelet depth is 2 whenever clips have >1 frame."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    if frames_per_clip not in (1, 2, 4):
        raise ConfigError(f"frames_per_clip {frames_per_clip}; allowed: 1, 2, 4")
    tubelet = 1 if frames_per_clip == 1 else 2
    kw = {**PRESETS[preset], **overrides}
    return ViTConfig(
        image_shape=tuple(image_shape), frames_per_clip=frames_per_clip, tubelet=tubelet, **kw
    )


def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed(dim: int, grid: tuple[int, int, int]) -> Tensor:
    """Fixed sin-cos embedding [t*h*w, dim] for a (t, h, w) grid; time gets a quarter of dims."""
    t, h, w = grid
    # Keep every part even so sin/cos halves line up; time only gets channels if it varies.
    dt = 0 if t == 1 else (dim // 4) // 2 * 2
    dh = (dim - dt) // 2 // 2 * 2
    dw = dim - dt - dh
    tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    parts = [_sincos_1d(dh, hh.flatten()), _sincos_1d(dw, ww.flatten())]
    if dt:
        parts.insert(0, _sincos_1d(dt, tt.flatten()))
    return torch.cat(parts, dim=1).float()


# Token counts up to which a CPU block attends by plain matmuls and a softmax (`_Block`)
# instead of SDPA's kernels. At 64 tokens (a 64x64 frame in 8x8 patches), one thread,
# AVX512-BF16 EPYC, tiny ViT forward + backward over 512 frames (twenty-fourth session):
# SDPA's math kernel took compiled bf16 2.08 s vs its flash kernel's 3.15 s, eager bf16
# 2.34 vs 2.66; the plain form, which skips the math kernel's guard for fully masked rows
# (isneginf / all / where passes over every score), took 0.70x the math kernel's time
# compiled bf16 (twenty-eighth session, AMX Xeon, 512 frames, quiet; docs/results.md). At 256
# tokens (patch 4) eager flash is faster (2.66 s vs 3.44 for math), so longer sequences
# keep torch's choice.
MATH_ATTENTION_MAX_TOKENS = 64


class _Block(nn.TransformerEncoderLayer):
    """torch's pre-norm encoder layer (its parameters and state-dict names); without masks,
    short sequences on a CPU take the plain attention below."""

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        if (src.device.type == "cpu" and src.dim() == 3
                and src.shape[-2] <= MATH_ATTENTION_MAX_TOKENS and src_mask is None
                and src_key_padding_mask is None and not is_causal and self.norm_first
                and self.self_attn.batch_first and self.self_attn.dropout == 0.0
                and self.dropout1.p == 0.0 and self.dropout2.p == 0.0):
            x = src + self._plain_attention(self.norm1(src))
            return x + self._ff_block(self.norm2(x))
        return super().forward(src, src_mask, src_key_padding_mask, is_causal)

    def _plain_attention(self, h: Tensor) -> Tensor:
        """Multi-head self-attention of h [B, N, D] as softmax(q k^T / sqrt(d)) v, with the
        weights of torch's `MultiheadAttention` (dropout 0)."""
        attn = self.self_attn
        b, n, d = h.shape
        heads = attn.num_heads
        qkv = nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax((q * (d // heads) ** -0.5) @ k.transpose(-2, -1), dim=-1)
        out = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(b, n, d)
        return attn.out_proj(out)


def transformer(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.TransformerEncoder:
    """Pre-norm GELU transformer stack (torch's own layers, no dropout).

    torch's TransformerEncoder deep-copies one layer, so the blocks start equal (the ViT's
    `_init_weights` redraws its linear maps, not attention's packed q/k/v). Kept on purpose:
    giving every block its own draw, with I-JEPA's std-0.02 q/k/v in the ViT, learnt the
    action-reading test's task more slowly (shuffled-action loss ratio over seeds 0-3: 0.94,
    0.94, 0.75, 0.96 against 0.80, 0.70, 0.81, 0.77 as it is)."""
    layer = _Block(
        width,
        heads,
        dim_feedforward=int(width * mlp_ratio),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class ViT(nn.Module):
    """ViT over clips [B, T, H, W, C] (uint8 or float in [0, 255]); returns token features."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.image_shape[2]
        self.patch_embed = nn.Conv3d(
            c, cfg.width, kernel_size=(cfg.tubelet, cfg.patch, cfg.patch),
            stride=(cfg.tubelet, cfg.patch, cfg.patch),
        )
        pos = sincos_pos_embed(cfg.width, cfg.grid)[None]
        if cfg.pos_embed == "learned":
            self.pos = nn.Parameter(pos.clone())
        else:
            self.register_buffer("pos", pos, persistent=False)
        if cfg.input_norm != "center":
            h, w, c = cfg.image_shape
            shape = (c,) if cfg.input_norm == "channel" else (h, w, c)
            self.register_buffer("in_mean", torch.full(shape, 0.5))
            self.register_buffer("in_std", torch.ones(shape))
        self.blocks = transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(_init_weights)

    @property
    def out_dim(self) -> int:
        return self.cfg.width

    def tokens(self, clip: Tensor) -> Tensor:
        """Patch-embed a clip [B, T, H, W, C] to tokens [B, N, width] with positions added."""
        x = clip.float() / 255.0
        if self.cfg.input_norm == "center":
            x = x - 0.5
        else:
            x = (x - self.in_mean) / self.in_std
        x = x.permute(0, 4, 1, 2, 3)  # B, C, T, H, W
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        return x + self.pos

    def forward(self, clip: Tensor, keep: Tensor | None = None, final_norm: bool = True
                ) -> Tensor:
        """Encode a clip; `keep` [B, K] selects token indices (context-only encoding);
        `final_norm=False` returns the tokens before the last layer norm."""
        x = self.tokens(clip)
        if keep is not None:
            x = gather_tokens(x, keep)
        x = self.blocks(x)
        return self.norm(x) if final_norm else x


    def block_outputs(self, clip: Tensor) -> list[Tensor]:
        """The tokens after each transformer block (before the final norm), first to last."""
        x, outs = self.tokens(clip), []
        for block in self.blocks.layers:
            x = block(x)
            outs.append(x)
        return outs


@torch.no_grad()
def fit_input_stats(model: nn.Module, frames: Tensor | np.ndarray, limit: int = 4096) -> None:
    """Set the input statistics of every ViT in `model` (online and EMA encoders alike)
    whose `input_norm` needs them, from frames [N, H, W, C] in [0, 255] (up to `limit`
    of them, evenly spaced)."""
    vits = [m for m in model.modules() if isinstance(m, ViT) and m.cfg.input_norm != "center"]
    if not vits:
        return
    frames = frames[:: max(1, len(frames) // limit)]  # before any copy: may be a memmap
    frames = torch.from_numpy(np.array(frames, dtype=np.float64)) / 255.0
    for vit in vits:
        dims = (0, 1, 2) if vit.cfg.input_norm == "channel" else (0,)
        mean, std = frames.mean(dims), frames.std(dims, correction=0)
        if vit.cfg.input_norm == "pixel":
            std = std.clamp_min(MIN_PIXEL_STD)
        vit.in_mean.copy_(mean.to(vit.in_mean))
        vit.in_std.copy_(std.clamp_min(1e-3).to(vit.in_std))


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """x [B, N, D], idx [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv3d):
        # Patch embedding initialised like a linear layer over the flattened patch.
        fan_in = math.prod(m.weight.shape[1:])
        nn.init.trunc_normal_(m.weight, std=1.0 / math.sqrt(fan_in))
        nn.init.zeros_(m.bias)
