"""Observation encoders and decoders: CNN for `image`, symlog MLP for `vector`, or a
pretrained image encoder; `make_encoder` builds the one a config names.

Encoder contract (any encoder, the JEPA ones included): an `nn.Module` whose
`forward(obs)` maps a dict with `image` uint8 [..., H, W, C] and/or `vector`
float32 [..., D] to an embedding [..., out_dim], has an int `out_dim`, and lists in
`pretrained_parameters()` the fine-tuned pretrained weights (trained at a scaled
learning rate; empty for encoders trained from scratch).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from world_models.dists import symlog
from world_models.nets import ChannelRMSNorm, Linear, ZeroInsertConvTranspose2d, conv_stack, mlp
from world_models.vit_jepa.encoder import load_encoder

IMAGE_KEY, VECTOR_KEY = "image", "vector"
# A frozen pretrained image encoder maps a frame to the same embedding every time, so each
# stored frame is encoded once: replay keeps the embedding beside the frame (EMBED_KEY,
# valid where EMBED_OK_KEY) and a batch that carries it skips the image encoder.
EMBED_KEY, EMBED_OK_KEY = "image_embed", "image_embed_ok"
ENCODER_KINDS = "cnn, jepa:PATH/encoder.pt, hf:HUB_ID_OR_DIR"
ENCODER_MODES = ("frozen", "finetune")
# Frames in one call from which a conv stack with `conv_bf16` set runs in bf16: training
# batches (B x T frames) do, acting (one frame per env) stays fp32.
CONV_BF16_MIN_FRAMES = 64


def conv_precision(on: bool, frames: int, device: torch.device):
    """bf16 autocast around a CPU conv stack when `on` and the call holds at least
    CONV_BF16_MIN_FRAMES frames (oneDNN's bf16 convs: half the bytes, bf16 FLOP rates where
    the CPU has them); otherwise the caller's precision. CUDA updates autocast whole."""
    if on and frames >= CONV_BF16_MIN_FRAMES and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _check_image(shape: Sequence[int]) -> None:
    h, w, _ = shape
    if h != w or h % 16:
        raise ValueError(
            f"image shape {tuple(shape)} not supported; need square HxW, a multiple of 16")


class MultiEncoder(nn.Module):
    """CNN on `image` and symlog MLP on `vector`, concatenated when both exist."""

    def __init__(
        self,
        obs_shapes: Mapping[str, Sequence[int]],
        depth: int = 64,
        mults: Sequence[int] = (2, 3, 4, 4),
        layers: int = 3,
        units: int = 1024,
        kernel: int = 5,
        symlog: bool = True,
        strided: bool = False,
    ):
        super().__init__()
        self.keys = [k for k in (IMAGE_KEY, VECTOR_KEY) if k in obs_shapes]
        if not self.keys:
            raise ValueError(f"no encodable observation in {sorted(obs_shapes)}; need image/vector")
        self.use_symlog = symlog
        self.conv_bf16 = False  # set by the agent (config `conv_precision`)
        self.out_dim = 0
        if IMAGE_KEY in obs_shapes:
            h, w, c = obs_shapes[IMAGE_KEY]
            _check_image((h, w, c))
            chans = [c] + [depth * m for m in mults]
            self.cnn = conv_stack(chans, kernel, strided=strided)
            self.out_dim += chans[-1] * (h // 2 ** len(mults)) ** 2
        if VECTOR_KEY in obs_shapes:
            self.mlp = mlp(obs_shapes[VECTOR_KEY][0], layers, units)
            self.out_dim += units

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        outs = []
        if IMAGE_KEY in self.keys:
            img = obs[IMAGE_KEY]
            lead = img.shape[:-3]
            x = img.reshape(-1, *img.shape[-3:]).permute(0, 3, 1, 2)
            x = x.to(self.cnn[0].weight.dtype) / 255.0 - 0.5
            with conv_precision(self.conv_bf16, x.shape[0], x.device):
                x = self.cnn(x)
            outs.append(x.float().reshape(*lead, -1))
        if VECTOR_KEY in self.keys:
            x = obs[VECTOR_KEY].float()
            outs.append(self.mlp(symlog(x) if self.use_symlog else x))
        return torch.cat(outs, -1)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return []  # trained from scratch at the base learning rate


class PretrainedImageEncoder(nn.Module):
    """A pretrained image encoder (JEPA ViT, V-JEPA 2) plus the symlog MLP for `vector`."""

    def __init__(self, image: nn.Module, obs_shapes: Mapping[str, Sequence[int]],
                 cache: bool = True, **mlp_kwargs):
        super().__init__()
        self.image = image
        self.cache = bool(cache)
        # Whether the image encoder trains with the agent (`--encoder-mode finetune`), fixed
        # here: the JEPA objective's EMA target copy takes no gradient but is a fine-tuned
        # encoder's copy all the same (its embeddings change as the agent trains, and it
        # runs over whole training batches: bf16 where the online encoder takes it).
        self.finetuned = any(p.requires_grad for p in image.parameters())
        self.conv_bf16 = False  # set by the agent (config `conv_precision`); see embed_images
        self.vector = None
        self.out_dim = image.out_dim
        if VECTOR_KEY in obs_shapes:
            self.vector = MultiEncoder({VECTOR_KEY: obs_shapes[VECTOR_KEY]}, **mlp_kwargs)
            self.out_dim += self.vector.out_dim

    @property
    def cached_dim(self) -> int:
        """Width of the image embedding replay may keep (frozen), 0 when it changes as the
        agent trains (fine-tuned)."""
        return int(self.image.out_dim) if self.cache and not self.finetuned else 0

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings [..., out_dim] (float) of uint8 frames [..., H, W, C].

        A fine-tuned encoder runs forward and backward over every frame of each training
        batch (a tiny ViT: ~110 GFLOP forward for 1,024 frames, most of the update), so it
        takes bf16 where the conv stacks do. A frozen one stays fp32: it embeds each frame
        once, and the embedding replay keeps is then the same however it was computed."""
        frames = math.prod(images.shape[:-3])
        with conv_precision(self.conv_bf16 and self.finetuned and self.training,
                            frames, images.device):
            return self.image({IMAGE_KEY: images}).float()

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # A batch that carries stored embeddings (every one valid: the agent fills the
        # missing ones first, see `DreamerV3Agent._fill_embeds`) skips the image encoder.
        if EMBED_OK_KEY in obs:
            raise ValueError(f"a batch with {EMBED_OK_KEY!r} still holds embeddings never "
                             "computed; the agent's _fill_embeds completes it first")
        cached = obs.get(EMBED_KEY) if self.cached_dim else None
        out = [cached.float() if cached is not None else self.embed_images(obs[IMAGE_KEY])]
        if self.vector is not None:
            out.append(self.vector(obs))
        return torch.cat(out, -1)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.image.parameters() if p.requires_grad]


def make_encoder(obs_shapes: Mapping[str, Sequence[int]], kind: str = "cnn",
                 mode: str = "frozen", pool: str = "mean", cache: bool = True,
                 **kwargs) -> nn.Module:
    """The encoder named by `kind` (cnn | jepa:PATH | hf:ID_OR_DIR); `mode` (frozen |
    finetune), `pool` (mean | grid:G, see `vit_jepa.encoder.pool_tokens`) and `cache`
    (a frozen one's embeddings kept in replay) apply to pretrained ones; `kwargs`
    configure the CNN/MLP."""
    if mode not in ENCODER_MODES:
        raise ValueError(f"encoder mode {mode!r} unknown; allowed: {', '.join(ENCODER_MODES)}")
    if kind == "cnn":
        if pool != "mean":
            raise ValueError(f"encoder pool {pool!r} is for pretrained encoders (jepa:PATH); "
                             "the cnn encoder keeps its whole feature map (pool: mean)")
        return MultiEncoder(obs_shapes, **kwargs)
    prefix, _, target = kind.partition(":")
    if prefix not in ("jepa", "hf") or not target:
        raise ValueError(f"encoder kind {kind!r} unknown; allowed: {ENCODER_KINDS}")
    if IMAGE_KEY not in obs_shapes:
        raise ValueError(f"encoder {kind!r} needs image observations; this env has "
                         f"{sorted(obs_shapes)} (use --obs pixels)")
    image = load_encoder(kind, tuple(obs_shapes[IMAGE_KEY]), frozen=mode == "frozen", pool=pool)
    mlp_kwargs = {k: kwargs[k] for k in ("layers", "units", "symlog") if k in kwargs}
    return PretrainedImageEncoder(image, obs_shapes, cache=cache, **mlp_kwargs)


class MultiDecoder(nn.Module):
    """Reconstructs `image` (sigmoid pixels in [0, 1]) and symlog `vector` from features."""

    def __init__(
        self,
        feat_dim: int,
        obs_shapes: Mapping[str, Sequence[int]],
        depth: int = 64,
        mults: Sequence[int] = (2, 3, 4, 4),
        layers: int = 3,
        units: int = 1024,
        kernel: int = 5,
        outscale: float = 1.0,
        strided: bool = False,
    ):
        super().__init__()
        self.keys = [k for k in (IMAGE_KEY, VECTOR_KEY) if k in obs_shapes]
        self.conv_bf16 = False  # set by the agent (config `conv_precision`)
        if IMAGE_KEY in obs_shapes:
            h, w, c = obs_shapes[IMAGE_KEY]
            _check_image((h, w, c))
            chans = [depth * m for m in mults][::-1] + [c]
            self.minres = h // 2 ** len(mults)
            # Official (without its block-linear `bspace` variant): a dense projection to
            # the minres x minres map, then RMSNorm + SiLU over its channels.
            self.space = Linear(feat_dim, chans[0] * self.minres**2)
            self.space_norm = nn.Sequential(ChannelRMSNorm(chans[0]), nn.SiLU())
            self.deconv = conv_stack(chans, kernel, transpose=True, strided=strided)
            self.first_chans = chans[0]
        if VECTOR_KEY in obs_shapes:
            self.mlp = mlp(feat_dim, layers, units, obs_shapes[VECTOR_KEY][0], outscale=outscale)

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        if IMAGE_KEY in self.keys:
            x = self._maps(feat, self.deconv)
            x = torch.sigmoid(x.float())
            out[IMAGE_KEY] = x.permute(0, 2, 3, 1).reshape(*feat.shape[:-1], *x.shape[2:],
                                                           x.shape[1])
        if VECTOR_KEY in self.keys:
            out[VECTOR_KEY] = self.mlp(feat).float()  # symlog space
        return out

    def _maps(self, feat: torch.Tensor, layers: Callable[[torch.Tensor], torch.Tensor]
              ) -> torch.Tensor:
        """`layers` (the conv stack, or all but its last layer) on the features' first map."""
        x = self.space(feat).reshape(-1, self.first_chans, self.minres, self.minres)
        # Channels-last, as the encoder's input already is: oneDNN's convs run NHWC and
        # the compiled graphs force it, so an NCHW start costs a layout copy per layer
        # (forward and backward); the last layer's output then permutes to HWC for free.
        with conv_precision(self.conv_bf16, x.shape[0], x.device):
            x = self.space_norm(x.contiguous(memory_format=torch.channels_last))
            return layers(x)

    def losses(self, feat: torch.Tensor, obs: Mapping[str, torch.Tensor]) -> dict:
        """`loss(self(feat), obs)`, the training loss. Where the last layer runs in its
        sub-pixel form, the image loss is taken on its four phases before they are
        interleaved, against the frames cut the same way: the same sum over pixels,
        without interleaving 3-channel maps, which inductor's CPU code does value by value
        (its two kernels took 0.12 s of a 1m pixel update; docs/results.md)."""
        last = self.deconv[-1] if IMAGE_KEY in self.keys else None
        if not getattr(last, "sub_pixel", False):
            return self.loss(self(feat), obs)
        losses = {}
        y = self._maps(feat, lambda x: last.phases(self.deconv[:-1](x)))
        lead, (h, w), c = feat.shape[:-1], y.shape[2:], last.out_channels
        pred = torch.sigmoid(y.float()).permute(0, 2, 3, 1).reshape(*lead, h, w, 2, 2, c)
        # Frames [..., 2h, 2w, c] -> [..., h, w, a, b, c]: pixel (2i + a, 2j + b) at (i, j, a, b).
        frames = obs[IMAGE_KEY].reshape(*lead, h, 2, w, 2, c).transpose(-4, -3)
        target = frames.float() / 255.0
        losses["rec_image"] = (pred - target).pow(2).sum((-5, -4, -3, -2, -1))
        if VECTOR_KEY in self.keys:
            losses.update(self.loss({VECTOR_KEY: self.mlp(feat).float()}, obs))
        return losses

    @property
    def conv_bf16(self) -> bool:
        return self._conv_bf16

    @conv_bf16.setter
    def conv_bf16(self, on: bool) -> None:
        # bf16 transposed convs are a slow oneDNN path, their sub-pixel form in bf16 a fast
        # one: the 1m strided decoder's fwd + bwd took 0.33 s in fp32, 0.52 s as bf16
        # transposed convs and 0.20 s as bf16 sub-pixel convs on an AVX512-BF16 EPYC (peer
        # widths 2.46 -> 1.58 s; docs/results.md): the strided layers switch with it.
        self._conv_bf16 = bool(on)
        for layer in self.modules():
            if isinstance(layer, ZeroInsertConvTranspose2d):
                layer.sub_pixel = self._conv_bf16

    @staticmethod
    def loss(pred: Mapping[str, torch.Tensor], obs: Mapping[str, torch.Tensor]) -> dict:
        """Per-step reconstruction losses: summed squared error per modality."""
        losses = {}
        if IMAGE_KEY in pred:
            target = obs[IMAGE_KEY].float() / 255.0
            losses["rec_image"] = (pred[IMAGE_KEY] - target).pow(2).sum((-3, -2, -1))
        if VECTOR_KEY in pred:
            target = symlog(obs[VECTOR_KEY].float())
            losses["rec_vector"] = (pred[VECTOR_KEY] - target).pow(2).sum(-1)
        return losses
