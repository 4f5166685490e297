"""Ridge probes cross-validated over episodes: how much of a target a linear map from
features recovers (`benchmarks.probe` for pretrained encoders, `benchmarks.state_probe` for
a world model's latents).

The ridge penalty is chosen by an inner grouped cross-validation over `LAMBDAS`; all
penalties are fitted from one eigendecomposition (`ridge_path`). R^2 is uniform over target
dimensions and computed on every group's held-out predictions together.
"""

from __future__ import annotations

import numpy as np

LAMBDAS = np.logspace(-3, 4, 15)


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Closed-form ridge weights for already-centred x [N, D], y [N, K]."""
    d = x.shape[1]
    return np.linalg.solve(x.T @ x + lam * len(x) * np.eye(d), x.T @ y)


def ridge_path(x: np.ndarray, y: np.ndarray, x_new: np.ndarray,
               lams: np.ndarray) -> np.ndarray:
    """`x_new @ ridge_fit(x, y, lam)` for every lam in `lams` [L, M, K], from one
    eigendecomposition: of x^T x when rows outnumber features, else of x x^T (the dual form:
    w = x^T (x x^T + lam N I)^-1 y). Grid-pooled and stacked features reach thousands of
    dimensions, where a solve per lambda cost minutes a probe."""
    n, d = x.shape
    scale = np.asarray(lams)[:, None] * n
    if n >= d:
        e, q = np.linalg.eigh(x.T @ x)
        b = q.T @ (x.T @ y)  # [D, K]
        return np.einsum("md,ld,dk->lmk", x_new @ q, 1.0 / (e[None] + scale), b)
    e, q = np.linalg.eigh(x @ x.T)
    c = q.T @ y  # [N, K]
    return np.einsum("mn,ln,nk->lmk", x_new @ x.T @ q, 1.0 / (e[None] + scale), c)


def r2_per_dim(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 of each target dim (NaN where the target does not vary)."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-8, 1 - ss_res / ss_tot, np.nan)


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Uniform average over target dims of R^2 (dims with no variance skipped)."""
    per = r2_per_dim(y, pred)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def _standardise(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return (a - ref.mean(0)) / (ref.std(0) + 1e-6)


def _fold_ids(groups: np.ndarray, folds: int) -> np.ndarray:
    uniq = np.unique(groups)
    fold_of = {g: i % folds for i, g in enumerate(uniq)}
    return np.array([fold_of[g] for g in groups])


def _fit_predict(x: np.ndarray, y: np.ndarray, groups: np.ndarray, x_new: np.ndarray,
                 folds: int) -> np.ndarray:
    """Ridge with lambda chosen by grouped K-fold CV on (x, y); predictions for x_new."""
    fold = _fold_ids(groups, folds)
    scores = np.zeros(len(LAMBDAS))
    for f in range(min(folds, len(np.unique(groups)))):
        tr, va = fold != f, fold == f
        xa, xv = _standardise(x[tr], x[tr]), _standardise(x[va], x[tr])
        ym = y[tr].mean(0)
        for i, pred in enumerate(ridge_path(xa, y[tr] - ym, xv, LAMBDAS)):
            scores[i] += r2(y[va], pred + ym)
    lam = float(LAMBDAS[int(np.argmax(scores))])
    ym = y.mean(0)
    return _standardise(x_new, x) @ ridge_fit(_standardise(x, x), y - ym, lam) + ym


def ridge_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                folds: int = 4) -> tuple[float, list[float]]:
    """Cross-validated R^2 over groups (episodes): each fold of groups is predicted by a ridge
    fitted on the others (its lambda chosen by an inner grouped CV), and R^2 is computed on
    all held-out predictions together, so every episode is held out once and one unusual
    episode cannot dominate. Returns (mean R^2 over target dims, per-dim R^2)."""
    fold = _fold_ids(groups, folds)
    pred = np.zeros_like(y, dtype=np.float64)
    for f in range(min(folds, len(np.unique(groups)))):
        held = fold == f
        pred[held] = _fit_predict(x[~held], y[~held], groups[~held], x[held], folds)
    return r2(y, pred), r2_per_dim(y, pred).tolist()


def split_groups(episodes: np.ndarray, min_groups: int = 8) -> np.ndarray:
    """Group id per frame for the cross-validation: episodes, or contiguous chunks of each
    episode when there are fewer than `min_groups` episodes (held-out data stays unseen
    time)."""
    if len(np.unique(episodes)) >= min_groups:
        return episodes
    chunk = max(1, len(episodes) // min_groups)
    return episodes * (len(episodes) + 1) + np.arange(len(episodes)) // chunk
