"""Representation-collapse diagnostics for embeddings [N, D]: RankMe, std score, eigen spectrum.

Thresholds used by `check_collapse` (each a keyword argument):
- RankMe below `max(min_rank_frac * min(N, D), min_rank)` (defaults 0.05 and 2.0): the
  embeddings span only a handful of directions (dimensional collapse).
- std score below `min_std_score` (default 0.3): per-channel std of the centred, l2-normalised
  embeddings, times sqrt(D). Spread-out embeddings give ~1; a constant encoder gives 0.
  It stays ~0.8 when everything collapses onto one direction, hence the next check.
- top eigenvalue share above `max_top1_frac` (default 0.9): one direction holds nearly all
  the variance.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

# Below this many distinct observations behind a batch (e.g. an env with 3 observations) a low
# rank says nothing about collapse, so the warning is not raised.
MIN_DISTINCT = 8


class CollapseWarning(UserWarning):
    """Emitted when embedding diagnostics indicate (dimensional) collapse."""


def _as_2d(z: Tensor) -> Tensor:
    z = z.detach().float().cpu()
    return z.reshape(-1, z.shape[-1])


def rankme(z: Tensor, eps: float = 1e-7, center: bool = True) -> float:
    """RankMe effective rank: exp of the entropy of normalised singular values (Garrido 2023).

    Centred by default (the paper uses raw embeddings): pooled ViT features share a large mean
    that would otherwise take most of the spectrum and hide how many directions actually vary.
    """
    z = _as_2d(z).double()
    if center:
        z = z - z.mean(0)
    s = torch.linalg.svdvals(z)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def std_score(z: Tensor) -> tuple[float, float]:
    """(mean per-channel std, std * sqrt(D)) of centred, l2-normalised embeddings.

    Centring first means a shared offset, which carries no information but is harmless, does not
    read as collapse; a constant encoder still scores 0.
    """
    z = _as_2d(z)
    zn = F.normalize(z - z.mean(0), dim=1)
    std = float(zn.std(0).mean()) if z.shape[0] > 1 else 0.0
    return std, std * math.sqrt(z.shape[1])


def eigen_spectrum(z: Tensor) -> Tensor:
    """Eigenvalues of the embedding covariance, largest first."""
    z = _as_2d(z).double()
    z = z - z.mean(0)
    cov = z.T @ z / max(z.shape[0] - 1, 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0).float()


def collapse_metrics(z: Tensor, prefix: str = "collapse/") -> dict[str, float]:
    """All diagnostics for a (fixed, held-out) batch of embeddings, keys namespaced by `prefix`."""
    z = _as_2d(z)
    n, d = z.shape
    eig = eigen_spectrum(z)
    total = float(eig.sum())
    frac = (eig / total) if total > 0 else torch.zeros_like(eig)
    cum = frac.cumsum(0)
    std, score = std_score(z)
    r = rankme(z)
    return {
        f"{prefix}rankme": r,
        f"{prefix}rankme_frac": r / min(n, d),
        f"{prefix}std": std,
        f"{prefix}std_score": score,
        f"{prefix}eig_top1_frac": float(frac[0]) if total > 0 else 1.0,
        f"{prefix}eig_n90": float(int((cum < 0.9).sum()) + 1) if total > 0 else 0.0,
        f"{prefix}dim": float(d),
    }


def check_collapse(
    metrics: dict[str, float], d: int, n: int | None = None, *, min_rank_frac: float = 0.05,
    min_rank: float = 2.0, min_std_score: float = 0.3, max_top1_frac: float = 0.9,
    prefix: str = "collapse/",
    warn: bool = True,
) -> list[str]:
    """Return human-readable collapse findings (empty if healthy); warn via CollapseWarning."""
    issues = []
    cap = min(d, n) if n else d
    rank_floor = max(min_rank_frac * cap, min_rank)
    r = metrics.get(f"{prefix}rankme")
    if r is not None and r < rank_floor:
        issues.append(
            f"RankMe {r:.2f} < {rank_floor:.2f} (of max {cap}): embeddings use very few dimensions"
        )
    s = metrics.get(f"{prefix}std_score")
    if s is not None and s < min_std_score:
        issues.append(
            f"std score {s:.3f} < {min_std_score}: l2-normalised embeddings barely vary (collapse)"
        )
    top = metrics.get(f"{prefix}eig_top1_frac")
    if top is not None and top > max_top1_frac:
        issues.append(
            f"top covariance eigenvalue holds {top:.0%} > {max_top1_frac:.0%} of the variance: "
            "embeddings vary along ~one direction"
        )
    if warn:
        for msg in issues:
            log.warning("representation collapse: %s", msg)
            warnings.warn(f"representation collapse: {msg}", CollapseWarning, stacklevel=2)
    return issues


def distinct_rows(obs: Mapping[str, Tensor], limit: int = 1024) -> int:
    """Number of distinct observations (image and/or vector) among the first `limit` steps."""
    parts = [obs[k].reshape(-1, int(obs[k][0, 0].numel())).float()
             for k in ("image", "vector") if k in obs]
    rows = torch.cat(parts, -1)[:limit] if parts else torch.zeros(1, 1)
    return int(torch.unique(rows, dim=0).shape[0])


@torch.no_grad()
def latent_diagnostics(latents: Mapping[str, Tensor], warn: bool = True,
                       distinct: int | None = None, **thresholds: float) -> dict[str, float]:
    """`collapse/{name}_*` metrics of each named latent batch (at most 1,024 rows each), with
    `collapse/{name}_issues` counting the findings of `check_collapse` (warned when `warn`).
    `thresholds` go to `check_collapse`. With `distinct` (the number of distinct observations
    behind the batch) below MIN_DISTINCT nothing is judged: such a batch is low-rank by nature.
    """
    distinct = MIN_DISTINCT if distinct is None else distinct
    out: dict[str, float] = {"collapse/distinct_obs": float(distinct)}
    judged = distinct >= MIN_DISTINCT
    for name, z in latents.items():
        z = z.reshape(-1, z.shape[-1])[:1024]
        prefix = f"collapse/{name}_"
        m = collapse_metrics(z, prefix=prefix)
        issues = check_collapse(m, z.shape[-1], z.shape[0], prefix=prefix,
                                warn=warn and judged, **thresholds) if judged else []
        m[f"{prefix}issues"] = float(len(issues))
        out.update(m)
    return out
