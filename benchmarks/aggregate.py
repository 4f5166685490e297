"""Final scores and aggregates: Atari-100k human-normalised scores, DMC task means, curves.

Final-score rules (REFERENCE.md 1.3, 2.2), applied per run at a frame budget B:
- `window` (default): mean of the episodes ending in [B - W, B]. W is 10k frames for
  Atari-100k, which reproduces DreamerV3's 124.7% / 49.4% from its 2024 curves, and
  min(50k, 0.1 B) for the rest ([450k, 500k] reproduces DMC proprio's 741.4 / 842.6 and
  [950k, 1M] vision's 785.6 / 857.6). A run with no episode in the window is left out of its
  task's seed mean.
- `last`: the last episode ending at <= B (gives 128.2% / 48.7% on the same curves).
- `interp`: linear interpolation at B, NaN past the last point. Runs of sparse evaluation
  points (TD-MPC2's CSVs, `Run.kind == "evals"`) always use it, as REFERENCE.md does.
Means and medians are over tasks of the seed-mean score; IQM is the 25%-trimmed mean over
all (run, game) HNS values, as rliable computes it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from benchmarks.reference_tables import ATARI_RANDOM_HUMAN
from benchmarks.scores import Run, domain_of

__all__ = [
    "RULES",
    "AggregateError",
    "Summary",
    "aggregate_curve",
    "bin_run",
    "curve_points",
    "default_budget",
    "default_window",
    "final_value",
    "hns",
    "iqm",
    "summarize",
]

RULES = ("window", "last", "interp")
# Frame budgets of the published curves we compare against (v2 protocol).
_DEFAULT_BUDGETS = {"atari100k": 400_000, "dmc": 500_000}


class AggregateError(ValueError):
    """Bad arguments to an aggregation (unknown rule, empty window...)."""


def default_budget(domain: str, benchmark: str | None = None) -> int | None:
    """The frame budget the published numbers for a domain use, or None if there is none;
    DMC vision (`benchmark` dmc_vision) is published at 1M frames, DMC proprio at 500k."""
    if domain == "dmc" and benchmark == "dmc_vision":
        return 1_000_000
    return _DEFAULT_BUDGETS.get(domain)


def default_window(domain: str, budget: float) -> float:
    """Width in frames of the final window: 10k for Atari-100k, else min(50k, 10% of budget)."""
    return 10_000.0 if domain == "atari100k" else min(50_000.0, 0.1 * budget)


def final_value(
    xs: np.ndarray, ys: np.ndarray, budget: float, rule: str = "window", window: float = 0.0
) -> float:
    """A run's final score at `budget` frames by `rule` (see the module doc); NaN if none."""
    if rule not in RULES:
        raise AggregateError(f"unknown final-score rule {rule!r}; allowed: {', '.join(RULES)}")
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.size == 0:
        return math.nan
    if rule == "last":
        before = ys[xs <= budget]
        return float(before[-1]) if before.size else math.nan
    if rule == "interp":
        return float(np.interp(budget, xs, ys)) if xs[0] <= budget <= xs[-1] else math.nan
    inside = ys[(xs >= budget - window) & (xs <= budget)]
    return float(inside.mean()) if inside.size else math.nan


def hns(score: float, game: str) -> float:
    """Human-normalised score (score - random) / (human - random) of an Atari-100k game."""
    if game not in ATARI_RANDOM_HUMAN:
        raise AggregateError(f"no random/human reference for Atari game {game!r}; "
                             "human-normalised scores cover the 26 Atari-100k games")
    random, human = ATARI_RANDOM_HUMAN[game]
    return (score - random) / (human - random)


def iqm(values: Iterable[float]) -> float:
    """Interquartile mean: drop int(0.25 n) values at each end, average the rest."""
    data = np.sort(np.asarray([v for v in values if math.isfinite(v)], dtype=float))
    if data.size == 0:
        return math.nan
    cut = int(0.25 * data.size)
    return float(data[cut : data.size - cut].mean())


@dataclass
class Summary:
    """Final scores of one method on one domain at one budget, plus the aggregates."""

    method: str
    domain: str
    budget: float
    rule: str
    window: float
    per_task: dict[str, float]  # task id -> seed-mean final score
    per_task_seeds: dict[str, list[float]]  # task id -> finite per-seed finals
    normalized: dict[str, float] = field(default_factory=dict)  # task -> HNS (Atari)
    aggregates: dict[str, float] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.per_task)


def _game(task: str) -> str:
    return task.split("_", 1)[1]


def summarize(
    runs: Sequence[Run],
    budget: float | None = None,
    rule: str = "window",
    window: float | None = None,
) -> list[Summary]:
    """One Summary per (method, domain) of `runs`; budget/window default per domain."""
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.method, domain_of(run.task))].append(run)
    summaries = []
    for (method, domain), group in sorted(groups.items()):
        b = budget if budget is not None else default_budget(domain)
        if b is None:
            b = max(float(run.xs[-1]) for run in group if run.xs.size) if group else 0.0
        w = window if window is not None else default_window(domain, b)
        per_seed: dict[str, list[float]] = {}
        for run in group:
            run_rule = "interp" if run.kind == "evals" else rule
            value = final_value(run.xs, run.ys, b, run_rule, w)
            # A task with no finite final still shows up (as NaN).
            per_seed.setdefault(run.task, [])
            if math.isfinite(value):
                per_seed[run.task].append(value)
        per_task = {t: float(np.mean(v)) if v else math.nan for t, v in per_seed.items()}
        summary = Summary(method, domain, b, rule, w, per_task, dict(per_seed))
        finite = [v for v in per_task.values() if math.isfinite(v)]
        if domain == "atari100k":
            summary.normalized = {t: hns(v, _game(t)) for t, v in per_task.items()}
            task_hns = [v for v in summary.normalized.values() if math.isfinite(v)]
            run_hns = [hns(v, _game(t)) for t, vs in per_seed.items() for v in vs]
            summary.aggregates = {
                "mean_hns": float(np.mean(task_hns)) if task_hns else math.nan,
                "median_hns": float(np.median(task_hns)) if task_hns else math.nan,
                "iqm_hns": iqm(run_hns),
                "superhuman": float(sum(v > 1 for v in task_hns)),
                "tasks": float(len(task_hns)),
            }
        else:
            summary.aggregates = {
                "mean": float(np.mean(finite)) if finite else math.nan,
                "median": float(np.median(finite)) if finite else math.nan,
                "tasks": float(len(finite)),
            }
        summaries.append(summary)
    return summaries


def bin_run(run: Run, edges: np.ndarray) -> np.ndarray:
    """Mean return of the episodes ending in each bin (edges[i], edges[i+1]]; NaN if none."""
    idx = np.searchsorted(edges, run.xs, side="left") - 1
    # An episode ending exactly at the first edge belongs to the first bin.
    idx[run.xs == edges[0]] = 0
    values = np.full(len(edges) - 1, math.nan)
    valid = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[valid], weights=run.ys[valid], minlength=len(edges) - 1)
    counts = np.bincount(idx[valid], minlength=len(edges) - 1)
    np.divide(sums, counts, out=values, where=counts > 0)
    return values


def curve_points(run: Run, edges: np.ndarray) -> np.ndarray:
    """A run's value at each bin: binned episodes, or for sparse evaluation runs the
    interpolated value at the bin's right edge (NaN outside the evaluated range)."""
    if run.kind != "evals":
        return bin_run(run, edges)
    x = edges[1:]
    inside = (x >= run.xs[0]) & (x <= run.xs[-1]) if run.xs.size else np.zeros(x.shape, bool)
    return np.where(inside, np.interp(x, run.xs, run.ys) if run.xs.size else np.nan, np.nan)


def _nanmean(stack: np.ndarray, axis: int = 0) -> np.ndarray:
    finite = np.isfinite(stack)
    counts = finite.sum(axis=axis)
    sums = np.where(finite, stack, 0.0).sum(axis=axis)
    out = np.full(counts.shape, math.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def aggregate_curve(runs: Sequence[Run], edges: np.ndarray) -> np.ndarray:
    """One method's aggregate curve per bin: mean HNS over games (Atari-100k) or mean return
    over tasks (otherwise), each task first averaged over its seeds. NaN where no task has
    data; a bin counts only the tasks that have data in it."""
    per_task: dict[str, list[np.ndarray]] = defaultdict(list)
    for run in runs:
        per_task[run.task].append(curve_points(run, edges))
    rows = []
    for task, curves in per_task.items():
        mean = _nanmean(np.stack(curves))
        if domain_of(task) == "atari100k":
            mean = np.array([hns(v, _game(task)) if math.isfinite(v) else math.nan for v in mean])
        rows.append(mean)
    if not rows:
        return np.full(len(edges) - 1, math.nan)
    return _nanmean(np.stack(rows))
