"""Anti-collapse regularizers shared by the JEPA pretraining model and the latent objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Official VICReg coefficients (Bardes et al. 2022): invariance 25, variance 25, covariance 1.
VICREG_VAR, VICREG_COV = 25.0, 1.0


def vicreg_terms(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance hinge (per-dim std below 1) and mean squared off-diagonal covariance
    of z [..., D], computed in fp32 over all leading dims."""
    z = z.reshape(-1, z.shape[-1]).float()
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + eps)
    var = F.relu(1.0 - std).mean()
    n, d = z.shape
    cov = z.T @ z / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return var, off.pow(2).sum() / d


def batch_standardise(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """z [..., D] (leading dims flattened) with each dimension centred and scaled to unit std
    over the batch: what is left is the shape of the distribution (its correlations and
    marginals), which is all that RankMe and the eigenvalue shares look at."""
    z = z.reshape(-1, z.shape[-1]).float()
    return (z - z.mean(0)) / (z.std(0) + eps)


def sigreg(z: torch.Tensor, slices: int = 256, points: int = 17, t_max: float = 5.0,
           gen: torch.Generator | None = None) -> torch.Tensor:
    """Sketched isotropic-Gaussian regulariser (SIGReg, LeJEPA 2025; LeWorldModel 2026).

    Projects z [..., D] (leading dims flattened to N samples) on `slices` random unit
    directions and, along each, measures the Epps-Pulley distance between the empirical
    characteristic function and that of N(0, 1): N * integral over t in [-t_max, t_max] of
    |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt (trapezoid rule on `points` nodes), averaged over
    directions. Zero only for an isotropic standard Gaussian, so it rules out collapse to a
    point or a subspace without a target network. Computed in fp32; directions come from
    `gen` (CPU) so a resumed run draws the same ones.
    """
    z = z.reshape(-1, z.shape[-1]).float()
    n, d = z.shape
    a = torch.randn(d, slices, generator=gen).to(z.device)
    a = a / a.norm(dim=0, keepdim=True)
    t = torch.linspace(-t_max, t_max, points, device=z.device)
    gauss = torch.exp(-0.5 * t * t)
    arg = (z @ a).unsqueeze(-1) * t  # [N, slices, points]
    re, im = torch.cos(arg).mean(0), torch.sin(arg).mean(0)
    err = ((re - gauss).square() + im.square()) * gauss
    return n * torch.trapezoid(err, t, dim=-1).mean()
