"""Network builders shared by every model: one MLP builder, one conv-stack builder.

DreamerV3 conventions: RMSNorm + SiLU after every hidden layer, truncated-normal
fan-in initialisation, and an `outscale` that multiplies the initialised weights of
output layers (0 gives a zero init, which the official reward and value heads use so
predictions start at zero; the policy's 0.01 starts it 100x narrower than a layer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from world_models.dists import TwoHot, symexp_bins


def init_trunc_normal_(weight: torch.Tensor, fan_in: int, scale: float = 1.0) -> None:
    """Fan-in variance scaling with a truncated normal, the weights then multiplied by
    `scale` (the official `trunc_normal_in` initialiser times a layer's `outscale`)."""
    if scale == 0.0:
        nn.init.zeros_(weight)
        return
    # 0.8796 is the std of a standard normal truncated to [-2, 2].
    std = scale * math.sqrt(1.0 / fan_in) / 0.87962566
    nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


class Linear(nn.Linear):
    """nn.Linear with the DreamerV3 initialisation; `outscale` multiplies the weights."""

    def __init__(self, inp: int, out: int, bias: bool = True, outscale: float = 1.0):
        super().__init__(inp, out, bias=bias)
        init_trunc_normal_(self.weight, inp, outscale)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class BlockLinear(nn.Module):
    """Block-diagonal linear layer: `blocks` independent linears on equal slices.

    The official block GRU uses it so that a large recurrent state stays cheap.
    """

    def __init__(self, inp: int, out: int, blocks: int, outscale: float = 1.0):
        super().__init__()
        if inp % blocks or out % blocks:
            raise ValueError(f"BlockLinear sizes {inp}->{out} must divide into {blocks} blocks")
        self.blocks = blocks
        self.weight = nn.Parameter(torch.empty(blocks, inp // blocks, out // blocks))
        self.bias = nn.Parameter(torch.zeros(out))
        # Fan-in is the whole input, as the official `compute_fans` reads a kernel of shape
        # (blocks, inp / blocks, out / blocks): inp / blocks * blocks.
        init_trunc_normal_(self.weight, inp, outscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.blocks, x.shape[-1] // self.blocks)
        y = torch.einsum("bgi,gio->bgo", x, self.weight)
        return y.reshape(*lead, -1) + self.bias

    def own_and_shared(self, own: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """`forward` of the input whose block g is concat(own block g, shared), for own
        [N, blocks * k] and shared [N, m], without building that input: the shared part
        is one dense matmul against all blocks' weights (the input would repeat it
        `blocks` times, and copying it cost more than the matmuls on CPU)."""
        n, g = own.shape[0], self.blocks
        k = own.shape[-1] // g
        own_out = torch.bmm(own.reshape(n, g, k).transpose(0, 1), self.weight[:, :k])
        w_shared = self.weight[:, k:].transpose(0, 1).reshape(shared.shape[-1], -1)
        return own_out.transpose(0, 1).reshape(n, -1) + shared @ w_shared + self.bias


class RMSNorm(nn.Module):
    """RMSNorm over the last axis. Written out because torch's fused CPU kernel
    measured 3x slower than these three ops (fwd+bwd on [16384, 64])."""

    def __init__(self, units: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return x * scale * self.weight


class ChannelRMSNorm(nn.Module):
    """RMSNorm over the channel axis of an NCHW feature map."""

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Computed in fp32, returned in x's dtype: a bf16 conv stack's maps stay bf16 between
        # layers (half the bytes), the norm and its weight's gradient keep fp32 precision.
        # fp32 maps: the same arithmetic as ever. (Under CUDA's whole-update autocast the
        # output is now bf16 too, where the fp32 weight used to promote it.)
        scale = torch.rsqrt(x.float().pow(2).mean(1, keepdim=True) + self.eps)
        return (x.float() * scale * self.weight[:, None, None]).to(x.dtype)


def phase_fold(kernel: int, zero_insert: bool) -> torch.Tensor:
    """How a kernel-`kernel` 'same' conv over a 2x-upsampled grid reads the input: fold[a,
    u, d] = 1 when tap d of an output at phase a (row 2i + a) reads input row i + u - r.
    The grid holds input row j at rows 2j and 2j + 1 (nearest upsampling) or at row 2j + 1
    with zeros between (`zero_insert`; taps on a zero read nothing). r is the largest
    offset: 1 for kernels 3 and 5."""
    pad, taps = kernel // 2, []
    for a in range(2):
        for d in range(kernel):
            q = a + d - pad  # the tap's grid row, relative to 2i
            if not zero_insert:
                taps.append((a, q // 2, d))
            elif q % 2:
                taps.append((a, (q - 1) // 2, d))
    r = max(abs(u) for _, u, _ in taps)
    fold = torch.zeros(2, 2 * r + 1, kernel)
    for a, u, d in taps:
        fold[a, u + r, d] = 1.0
    return fold


def sub_pixel_phases(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     fold: torch.Tensor) -> torch.Tensor:
    """A 'same' conv with `weight` [cout, cin, k, k] over the 2x-upsampled grid of `x` (see
    `phase_fold`), without building the grid: each of the four output phases (a, b) (output
    row 2i + a, column 2j + b) is a (2r + 1)^2 conv of `x` whose kernel sums the taps that
    read the same input pixel. The phases run as one conv: [N, 4 cout, H, W], phase (a, b)
    in channels (2a + b) cout + o; `interleave_phases` puts them in place. Same values and
    gradients as the conv on the grid, up to fp32 summation order."""
    fold = fold.to(weight.dtype)
    w = torch.einsum("aud,bve,ocde->abocuv", fold, fold, weight)
    cout, cin = weight.shape[:2]
    w = w.reshape(4 * cout, cin, *w.shape[-2:])
    bias = bias.repeat(4) if bias is not None else None
    return nn.functional.conv2d(x, w, bias, padding=(fold.shape[1] - 1) // 2)


def interleave_phases(y: torch.Tensor, cout: int) -> torch.Tensor:
    """[N, 4 cout, H, W] holding phase (a, b) in channels (2a + b) cout ... + cout - 1 ->
    [N, cout, 2H, 2W] with phase (a, b) at rows 2i + a, columns 2j + b; channels-last
    whatever `y`'s layout (made for channels-last `y`, the decoder's). `pixel_shuffle`'s
    order (channel 4c + 2a + b) moves single values between channels-last maps, which
    inductor's CPU code does element by element; phase-major channels move whole runs of
    cout channels, which vectorise (with the decoder's `losses`, the strided 1m decoder's
    fused kernels went from 0.26 to 0.12 s of an update; docs/results.md)."""
    n, _, h, w = y.shape
    y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, cout)
    y = y.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, cout)
    return y.permute(0, 3, 1, 2)


class ZeroInsertConvTranspose2d(nn.ConvTranspose2d):
    """2x upsampling as the official strided decoder does it: a kernel-5 'same' conv on
    the grid with input pixel i at 2i + 1 and zeros between. A stride-2 transposed conv
    is that conv with the kernel flipped; with padding 1 it yields 2H + 1 rows, and the
    conv on the zero-inserted grid keeps the first 2H. `sub_pixel = True` runs it in the
    sub-pixel form instead (`sub_pixel_phases`: 36 multiplies per input pixel and channel
    pair where the transposed conv needs 25, as a plain conv). Off in fp32: on a 2-core
    AVX2 CPU it made whole compiled updates 6% slower at size 1m and 23% at the peer's
    widths (`benchmarks.decoder_forms` times both forms). On with bf16 conv stacks (the
    decoder's `conv_bf16` turns it on), where oneDNN's bf16 transposed conv is slow."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        super().__init__(cin, cout, kernel, stride=2, padding=(kernel - 3) // 2)
        self.sub_pixel = False
        self.register_buffer("fold", phase_fold(kernel, zero_insert=True), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sub_pixel:
            return interleave_phases(self.phases(x), self.out_channels)
        h, w = x.shape[-2:]
        return super().forward(x)[..., : 2 * h, : 2 * w]

    def phases(self, x: torch.Tensor) -> torch.Tensor:
        """The sub-pixel form's output before interleaving (`sub_pixel_phases`)."""
        conv_weight = self.weight.flip(-1, -2).transpose(0, 1)
        return sub_pixel_phases(x, conv_weight, self.bias, self.fold)


class UpsampleConv2d(nn.Conv2d):
    """Nearest 2x upsampling then a kernel-`k` 'same' conv (the official decoder's layer),
    run in the sub-pixel form (`sub_pixel_phases`): (2r + 1)^2 / k^2 of the FLOPs of the
    conv on the upsampled map (9/25 at k = 5) and no such map in memory. `sub_pixel =
    False` upsamples then convolves, for comparison. The parameter stays the k x k weight,
    so init, optimiser and checkpoints are the conv's."""

    def __init__(self, cin: int, cout: int, kernel: int = 5):
        if kernel % 2 == 0:
            raise ValueError(f"UpsampleConv2d needs an odd kernel, got {kernel}")
        super().__init__(cin, cout, kernel, padding=kernel // 2)
        self.sub_pixel = True
        self.register_buffer("fold", phase_fold(kernel, zero_insert=False), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sub_pixel:
            return interleave_phases(self.phases(x), self.out_channels)
        return super().forward(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))

    def phases(self, x: torch.Tensor) -> torch.Tensor:
        """The sub-pixel form's output before interleaving (`sub_pixel_phases`)."""
        return sub_pixel_phases(x, self.weight, self.bias, self.fold)


def norm_act(units: int) -> list[nn.Module]:
    return [RMSNorm(units), nn.SiLU()]


def mlp(
    inp: int, layers: int, units: int, out: int | None = None, outscale: float = 1.0
) -> nn.Sequential:
    """`layers` x (Linear, RMSNorm, SiLU), then an optional output Linear."""
    mods: list[nn.Module] = []
    for _ in range(layers):
        # Keep the bias: RMSNorm(W x) without one is blind to the scale of x
        # (RMSNorm(W 2x) == RMSNorm(W x)), which erases low-dimensional inputs.
        mods += [Linear(inp, units), *norm_act(units)]
        inp = units
    if out is not None:
        mods.append(Linear(inp, out, outscale=outscale))
    return nn.Sequential(*mods)


class TwoHotHead(nn.Module):
    """An MLP to a two-hot symexp distribution over 255 bins in [-20, 20] (symlog space),
    zero-initialised output by default so it predicts 0 first: the reward head and the
    critic. The bins are a buffer outside checkpoints: built inside a compiled graph they
    would be recomputed for every element that reads them."""

    def __init__(self, feat_dim: int, layers: int = 1, units: int = 1024, bins: int = 255,
                 outscale: float = 0.0):
        super().__init__()
        self.net = mlp(feat_dim, layers, units, bins, outscale=outscale)
        self.register_buffer("bins", symexp_bins(bins, -20.0, 20.0), persistent=False)

    def forward(self, feat: torch.Tensor) -> TwoHot:
        return TwoHot(self.net(feat), bins=self.bins)


def conv_stack(
    channels: Sequence[int], kernel: int = 5, transpose: bool = False, strided: bool = False
) -> nn.Sequential:
    """Conv stack halving (or, with `transpose`, doubling) the resolution at every layer.

    Official DreamerV3 default (`strided: False`): stride-1 conv then 2x2 max-pool
    down, nearest 2x upsample then conv up (computed in `UpsampleConv2d`'s sub-pixel
    form). `strided=True` is the official strided variant: stride-2 convs down,
    kernel-`kernel` convs on a zero-inserted grid up (about 4x fewer FLOPs; useful on
    CPU). Every conv is followed by norm + SiLU except the
    last layer of a transposed (decoder) stack, which outputs pixels.
    """
    mods: list[nn.Module] = []
    pad = kernel // 2
    pairs = list(zip(channels[:-1], channels[1:]))
    for i, (cin, cout) in enumerate(pairs):
        last = transpose and i == len(pairs) - 1
        if transpose:
            if strided:
                conv = ZeroInsertConvTranspose2d(cin, cout, kernel)
                mods.append(conv)
            else:
                conv = UpsampleConv2d(cin, cout, kernel)
                # The identity keeps the conv's index (checkpoints from before the
                # sub-pixel form held the parameter-free nn.Upsample there).
                mods += [nn.Identity(), conv]
            fan_in = cin * conv.weight.shape[2] * conv.weight.shape[3]
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride=2 if strided else 1, padding=pad)
            mods.append(conv)
            if not strided:
                mods.append(nn.MaxPool2d(2))
            fan_in = cin * kernel * kernel
        init_trunc_normal_(conv.weight, fan_in)
        nn.init.zeros_(conv.bias)
        if not last:
            mods += [ChannelRMSNorm(cout), nn.SiLU()]
    return nn.Sequential(*mods)
