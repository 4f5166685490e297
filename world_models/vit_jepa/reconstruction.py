"""Pixel-reconstruction baselines for the same ViT: a masked autoencoder (MAE, He et al.
2022) and a whole-frame autoencoder. They share the JEPA model's interface (`loss`,
`after_step`, `export_encoder`) so `jepa-pretrain --objective` and `benchmarks.probe` train
all three with one loop at the same budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from world_models.vit_jepa.vit import ViT, ViTConfig, gather_tokens, sincos_pos_embed, transformer


def patchify(clip: Tensor, cfg: ViTConfig) -> Tensor:
    """Clip [B, T, H, W, C] -> patch pixels [B, N, tubelet * patch * patch * C] in [-0.5, 0.5],
    tokens ordered (time, row, column) like the ViT's patch embedding."""
    b, t, h, w, c = clip.shape
    p, tub = cfg.patch, cfg.tubelet
    x = clip.float() / 255.0 - 0.5
    x = x.reshape(b, t // tub, tub, h // p, p, w // p, p, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, (t // tub) * (h // p) * (w // p), tub * p * p * c)


class PixelBaseline(nn.Module):
    """What both pixel baselines share: the ViT they train (`encoder`, exported for probes
    and agents) and no per-step schedule (JEPA's EMA has one; these have nothing to move)."""

    encoder: ViT

    def export_encoder(self) -> ViT:
        return self.encoder

    def after_step(self, step: int, total: int) -> dict[str, float]:
        return {}

    @property
    def clip_frames(self) -> int:
        return self.encoder.cfg.frames_per_clip

    @property
    def needs_actions(self) -> bool:
        return False


class MaskedAutoencoder(PixelBaseline):
    """MAE: the encoder sees a random `1 - mask_ratio` of the tokens; a narrow transformer
    decoder fills in the rest from mask tokens and reconstructs each masked patch's pixels,
    normalised per patch (MAE's `norm_pix_loss`). Loss on masked patches only."""

    def __init__(self, vit_cfg: ViTConfig, mask_ratio: float = 0.75, dec_width: int = 0,
                 dec_depth: int = 2, dec_heads: int = 4) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"MAE mask_ratio {mask_ratio}; allowed: 0 < ratio < 1")
        self.vit_cfg, self.mask_ratio = vit_cfg, mask_ratio
        self.encoder = ViT(vit_cfg)
        dw = dec_width or vit_cfg.width // 2
        heads = dec_heads if dw % dec_heads == 0 else 1
        t, gh, gw = vit_cfg.grid
        self.n_tokens = t * gh * gw
        self.embed = nn.Linear(vit_cfg.width, dw)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_pos_embed(dw, vit_cfg.grid)[None], persistent=False)
        self.blocks = transformer(dw, dec_depth, heads, 4.0)
        self.norm = nn.LayerNorm(dw)
        c = vit_cfg.image_shape[2]
        self.head = nn.Linear(dw, vit_cfg.tubelet * vit_cfg.patch ** 2 * c)

    def loss(self, clip: Tensor, gen: torch.Generator | None = None,
             reg_weight: float | None = None) -> dict[str, Tensor]:
        b = clip.shape[0]
        keep_n = max(1, round(self.n_tokens * (1 - self.mask_ratio)))
        order = torch.rand(b, self.n_tokens, generator=gen).argsort(1).to(clip.device)
        keep, masked = order[:, :keep_n].sort(1).values, order[:, keep_n:].sort(1).values
        z = self.embed(self.encoder(clip, keep=keep))
        pos = self.pos.expand(b, -1, -1)
        q = self.mask_token + gather_tokens(pos, masked)
        x = self.blocks(torch.cat([z + gather_tokens(pos, keep), q], dim=1))[:, keep_n:]
        pred = self.head(self.norm(x))
        target = gather_tokens(patchify(clip, self.vit_cfg), masked)
        target = F.layer_norm(target, target.shape[-1:])  # per-patch normalised pixels
        rec = F.mse_loss(pred, target)
        return {"loss/rec": rec, "loss/total": rec}


class FrameAutoencoder(PixelBaseline):
    """The ViT sees the whole frame; its mean-pooled embedding goes through a transposed-conv
    decoder back to the frame (MSE on pixels in [-0.5, 0.5]): the bottleneck baseline."""

    def __init__(self, vit_cfg: ViTConfig) -> None:
        super().__init__()
        self.encoder = ViT(vit_cfg)
        h, w, c = vit_cfg.image_shape
        self.start = (h // 16, w // 16)
        self.fc = nn.Linear(vit_cfg.width, 128 * self.start[0] * self.start[1])
        layers: list[nn.Module] = []
        chans = [128, 64, 32, 16]
        for cin, cout in zip(chans, chans[1:] + [c]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.SiLU()]
        self.decoder = nn.Sequential(*layers[:-1])  # no activation on the output

    def loss(self, clip: Tensor, gen: torch.Generator | None = None,
             reg_weight: float | None = None) -> dict[str, Tensor]:
        """Reconstructs the clip's last frame from the encoding of the whole clip."""
        z = self.encoder(clip).mean(1)
        x = self.fc(z).view(-1, 128, *self.start)
        target = clip[:, -1].permute(0, 3, 1, 2).float() / 255.0 - 0.5
        rec = F.mse_loss(self.decoder(x), target)
        return {"loss/rec": rec, "loss/total": rec}
