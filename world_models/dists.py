"""Output distributions of DreamerV3: symlog transforms, two-hot symexp, unimix
categoricals with straight-through samples, bounded normal and Bernoulli heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(torch.abs(x))


def unimix_logits(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """Mix softmax(logits) with `unimix` of the uniform distribution; return log-probs."""
    probs = F.softmax(logits.float(), -1)
    if unimix:
        probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return torch.log(probs)


class TwoHot:
    """Categorical over 255 bins at symexp(linspace(-20, 20)) (the official `symexp_twohot`).

    The bins are spaced evenly in symlog space but the two-hot target and the expectation
    are taken in raw space: predicts E[bin], trains with cross-entropy against the two-hot
    encoding of the raw target between its two neighbouring bins. A mixture of targets is
    then predicted by its mean (interpolating in symlog space would predict the symexp of
    the mean symlog, below the mean), and gradients stay bounded for targets of any scale.
    """

    def __init__(self, logits: torch.Tensor, low: float = -20.0, high: float = 20.0,
                 bins: torch.Tensor | None = None):
        self.logits = logits.float()
        # Heads pass their bins (a buffer): built inside a compiled graph, the bins are
        # recomputed (linspace, expm1) for every element that reads them.
        if bins is None:
            bins = symexp_bins(logits.shape[-1], low, high, logits.device)
        self.bins = bins.float()

    def pred(self) -> torch.Tensor:
        probs = F.softmax(self.logits, -1)
        # Sum the two halves of the symmetric bins separately so that uniform
        # probabilities give exactly zero (a plain left-to-right sum does not).
        m = self.bins.shape[0] // 2
        lo = (probs[..., :m] * self.bins[:m]).flip(-1).sum(-1)
        hi = (probs[..., -m:] * self.bins[-m:]).sum(-1)
        mid = (probs[..., m:-m] * self.bins[m:-m]).sum(-1)
        return mid + (lo + hi)

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        target = target.detach().float()
        n = self.bins.shape[0]
        below = ((self.bins <= target[..., None]).sum(-1) - 1).clamp(0, n - 1)
        above = (n - (self.bins > target[..., None]).sum(-1)).clamp(0, n - 1)
        equal = below == above
        d_below = torch.where(equal, 1.0, (self.bins[below] - target).abs())
        d_above = torch.where(equal, 1.0, (self.bins[above] - target).abs())
        total = d_below + d_above
        # Cross-entropy against the two-hot target, read off by gathering the two bins.
        logp = F.log_softmax(self.logits, -1)
        lp_below = logp.gather(-1, below[..., None]).squeeze(-1)
        lp_above = logp.gather(-1, above[..., None]).squeeze(-1)
        return -(lp_below * (d_above / total) + lp_above * (d_below / total))


def symexp_bins(n: int, low: float, high: float, device=None) -> torch.Tensor:
    """`n` bins at symexp of an even grid over [low, high] in symlog space."""
    if low == -high and n % 2:
        # Built from one half so the bins are exactly symmetric in float32.
        half = symexp(torch.linspace(low, 0.0, n // 2 + 1, device=device))
        return torch.cat([half, -half[:-1].flip(0)])
    return symexp(torch.linspace(low, high, n, device=device))


class Bernoulli:
    """Binary head (continue flag) on logits."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float()

    def pred(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, target.float(), reduction="none")


class OneHotCategorical:
    """Categorical (with 1% unimix in DreamerV3) whose samples are one-hot vectors
    with straight-through gradients."""

    def __init__(self, logits: torch.Tensor, unimix: float = 0.0):
        self.logits = unimix_logits(logits, unimix)
        self.probs = self.logits.exp()

    def sample(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """A one-hot sample; `uniform` [...] in [0, 1), one per distribution, makes it a
        function of its inputs (an exported policy takes the noise as an input)."""
        # Inverse-CDF sampling: one uniform per distribution (Gumbel-max needs one per class)
        # and the one-hot read off the CDF by comparison, a few fusible elementwise ops.
        # Scaling u by the last CDF entry keeps it below that entry despite rounding.
        cdf = self.probs.detach().cumsum(-1)
        u = torch.rand_like(cdf[..., :1]) if uniform is None else uniform[..., None]
        u = u.to(cdf.dtype) * cdf[..., -1:]
        reached = (cdf > u).to(self.probs.dtype)
        onehot = reached - F.pad(reached[..., :-1], (1, 0))
        return onehot + self.probs - self.probs.detach()

    def mode(self) -> torch.Tensor:
        # One-hot of the first maximum, by comparison (no scatter).
        probs = self.probs.detach()
        top = (probs == probs.amax(-1, keepdim=True)).to(probs.dtype)
        first = top * (top.cumsum(-1) == 1).to(probs.dtype)
        return first + self.probs - self.probs.detach()

    def log_prob(self, onehot: torch.Tensor) -> torch.Tensor:
        return (onehot * self.logits).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)


class BoundedNormal:
    """Diagonal normal with tanh-bounded mean and std in [minstd, maxstd] (the
    official `bounded_normal`); actions are clipped to [-1, 1] by the env side."""

    def __init__(self, out: torch.Tensor, minstd: float = 0.1, maxstd: float = 1.0):
        mean, std = out.float().chunk(2, -1)
        self.mean = torch.tanh(mean)
        self.std = (maxstd - minstd) * torch.sigmoid(std + 2.0) + minstd

    def sample(self, normal: torch.Tensor | None = None) -> torch.Tensor:
        """A sample; `normal` (standard normal noise shaped like the mean) fixes it."""
        noise = torch.randn_like(self.mean) if normal is None else normal.to(self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        return (-0.5 * z.pow(2) - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.std.log()).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) for log-prob tensors [..., stoch, classes], summed over latents."""
    return (logits_p.exp() * (logits_p - logits_q)).sum((-2, -1))
