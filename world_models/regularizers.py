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
