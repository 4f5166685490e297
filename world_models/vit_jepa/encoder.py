"""Encoder contract for agents: `obs dict -> [..., D]` from our JEPA file or a V-JEPA 2 model.

Both encoders return one pooled vector per frame: by default the mean over the final
(layer-normed) patch tokens. Mean pooling keeps D = width whatever the token count, and is
what V-JEPA's frozen-evaluation probes start from. Our JEPA encoder can instead pool over a
G x G grid of image regions (`pool="grid:G"`, D = G^2 x width): a mean over all patches
cannot say where in the frame a feature is, which is what positions (a cart, a limb) need.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from world_models.vit_jepa.vit import ViT, ViTConfig

FORMAT = "dreamjepa-jepa-encoder"
VERSION = 1
# V-JEPA 2's video processor normalises with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderSpecError(ValueError):
    """Raised when an encoder spec, file or input shape does not match what is expected."""


def parse_pool(text: str) -> int:
    """`mean` -> 0; `grid:G` -> G (cells per side of the patch grid)."""
    if text == "mean":
        return 0
    kind, _, g = str(text).partition(":")
    if kind == "grid" and g.isdigit() and int(g) >= 1:
        return int(g)
    raise EncoderSpecError(f"pool {text!r} unknown; allowed: mean or grid:G with G >= 1")


def pool_tokens(tokens: Tensor, grid: tuple[int, int, int], cells: int) -> Tensor:
    """Token features [B, N, D] on the ViT's (T, H, W) patch grid -> [B, D] (cells 0: mean)
    or [B, cells^2 * D] (time-averaged, then averaged over cells x cells spatial regions)."""
    if cells == 0:
        return tokens.mean(1)
    b, _, d = tokens.shape
    x = tokens.reshape(b, *grid, d).mean(1).permute(0, 3, 1, 2)  # B, D, H, W
    return F.adaptive_avg_pool2d(x, cells).flatten(1)


def save_encoder(path: str | os.PathLike, vit: ViT, train_info: dict | None = None) -> None:
    """Write a self-describing encoder file (weights + architecture + training metadata)."""
    cfg = vit.cfg
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "vit": cfg.to_dict(),
        "image_shape": list(cfg.image_shape),
        "patch": cfg.patch,
        "width": cfg.width,
        "depth": cfg.depth,
        "heads": cfg.heads,
        "embed_dim": cfg.width,
        "pooling": "mean",
        "train": dict(train_info or {}),
        "state_dict": {k: v.detach().cpu() for k, v in vit.state_dict().items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def read_encoder_file(path: str | os.PathLike) -> tuple[ViT, dict]:
    """Rebuild the ViT stored in an encoder file; returns (vit, metadata)."""
    if not Path(path).is_file():
        raise EncoderSpecError(f"encoder file {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for non-checkpoint files
        raise EncoderSpecError(f"{str(path)!r} is not a torch encoder file ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise EncoderSpecError(f"{str(path)!r} has format {got!r}; expected {FORMAT!r}")
    if blob.get("version") != VERSION:
        raise EncoderSpecError(
            f"{str(path)!r} has version {blob.get('version')}; this code reads {VERSION}"
        )
    vit = ViT(ViTConfig.from_dict(blob["vit"]))
    vit.load_state_dict(blob["state_dict"])
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return vit, meta


def _check_shape(expected: tuple[int, ...], got: tuple[int, ...], what: str) -> None:
    if tuple(expected) != tuple(got):
        raise EncoderSpecError(
            f"{what} expects frames of shape {tuple(expected)} (H, W, C) but got {tuple(got)}"
        )


class _FrameEncoder(nn.Module, abc.ABC):
    """Shared plumbing: flatten leading dims, encode, restore them; frozen encoders stay eval."""

    image_shape: tuple[int, int, int]
    out_dim: int
    frozen: bool

    def _freeze(self) -> None:
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> _FrameEncoder:
        return super().train(mode and not self.frozen)

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        img = obs["image"]
        _check_shape(self.image_shape, tuple(img.shape[-3:]), type(self).__name__)
        lead = img.shape[:-3]
        flat = img.reshape(-1, *img.shape[-3:])
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            z = self.encode_frames(flat)
        return z.reshape(*lead, self.out_dim)

    @abc.abstractmethod
    def encode_frames(self, frames: Tensor) -> Tensor:
        """Embed frames [N, H, W, C] uint8 -> [N, out_dim]."""


class JEPAEncoder(_FrameEncoder):
    """Our pretrained JEPA ViT as an agent encoder: tokens pooled by `pool` (`mean`, D =
    width, or `grid:G`, D = G^2 x width; see `pool_tokens`).

    A tubelet model (frames_per_clip > 1) sees each frame repeated over its clip, the way
    V-JEPA feeds still images.
    """

    def __init__(self, vit: ViT, frozen: bool = True, meta: dict | None = None,
                 pool: str = "mean") -> None:
        super().__init__()
        self.vit = vit
        self.image_shape = tuple(vit.cfg.image_shape)
        self.cells = parse_pool(pool)
        if self.cells > min(vit.cfg.grid[1:]):
            raise EncoderSpecError(f"pool {pool!r} has more cells per side than the encoder's "
                                   f"{vit.cfg.grid[1]}x{vit.cfg.grid[2]} patch grid")
        self.out_dim = vit.cfg.width * max(1, self.cells) ** 2
        self.frozen = frozen
        self.meta = dict(meta or {})
        self._freeze()

    def encode_frames(self, frames: Tensor) -> Tensor:
        clip = frames.unsqueeze(1).expand(-1, self.vit.cfg.frames_per_clip, -1, -1, -1)
        return pool_tokens(self.vit(clip), self.vit.cfg.grid, self.cells)


class VJEPA2Encoder(_FrameEncoder):
    """A published V-JEPA 2 (transformers `VJEPA2Model`), frozen unless `frozen=False`.

    Frames are resized to the model's crop size, scaled to [0, 1], normalised with ImageNet
    statistics, and repeated `tubelet_size` times to form the shortest valid clip (one tubelet
    deep); the output is the mean over the encoder's tokens (D = hidden_size).
    """

    def __init__(self, model: nn.Module, image_shape: tuple[int, int, int],
                 frozen: bool = True) -> None:
        super().__init__()
        cfg = model.config
        if image_shape[2] != cfg.in_chans:
            raise EncoderSpecError(
                f"V-JEPA 2 expects frames of shape (H, W, {cfg.in_chans}) but got {image_shape}"
            )
        self.model = model
        self.image_shape = tuple(image_shape)
        self.out_dim = int(cfg.hidden_size)
        self.crop = int(cfg.crop_size)
        self.clip_len = int(cfg.tubelet_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.frozen = frozen
        self._freeze()

    def encode_frames(self, frames: Tensor) -> Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.crop, self.crop):
            x = F.interpolate(x, size=(self.crop, self.crop), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        clip = x.unsqueeze(1).expand(-1, self.clip_len, -1, -1, -1)
        return self.model.get_vision_features(clip).mean(1)


def load_encoder(spec: str, image_shape: tuple[int, int, int], frozen: bool = True,
                 pool: str = "mean") -> nn.Module:
    """Build an agent encoder from `jepa:PATH/encoder.pt` or `hf:HUB_ID_OR_LOCAL_DIR`; `pool`
    (`mean` | `grid:G`) is how a JEPA file's tokens become one vector (hf: mean only)."""
    kind, _, target = spec.partition(":")
    if not target or kind not in ("jepa", "hf"):
        raise EncoderSpecError(
            f"encoder spec {spec!r}; allowed: 'jepa:PATH/encoder.pt' or 'hf:HUB_ID_OR_DIR'"
        )
    image_shape = tuple(int(s) for s in image_shape)
    if kind == "jepa":
        vit, meta = read_encoder_file(target)
        _check_shape(vit.cfg.image_shape, image_shape, f"encoder {target!r}")
        return JEPAEncoder(vit, frozen=frozen, meta=meta, pool=pool)
    if pool != "mean":
        raise EncoderSpecError(f"pool {pool!r} is for jepa: encoders; hf: encoders pool by "
                               "the mean (pool: mean)")
    try:
        from transformers import VJEPA2Model
    except ImportError as e:  # optional dependency: the `jepa` extra
        raise EncoderSpecError(
            "hf: encoders need transformers (pip install dreamjepa[jepa])"
        ) from e
    try:
        model = VJEPA2Model.from_pretrained(target)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EncoderSpecError(f"cannot load V-JEPA 2 model {target!r}: {first}") from e
    return VJEPA2Encoder(model, image_shape, frozen=frozen)
