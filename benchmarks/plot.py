"""Plot our runs against published curves and tabulate final scores.

    python -m benchmarks.plot RUNS... [--reference FILE_OR_DIR...] [--out DIR] [--budget N]

RUNS are run directories, suite output folders (`runs/dmc_proprio`, `runs/atari100k`) or
score files; references are DreamerV3 score files, TD-MPC2 CSVs, or folders of them (from a
folder, the files of our runs' benchmarks; see benchmarks/references.py). Writes
`<task>.png` per task, `aggregate_<domain>.png` (mean HNS for Atari-100k, mean return
otherwise) and `summary.md`.
Curves are binned on env frames (mean return of the episodes ending in each bin), averaged
over seeds, shaded min-max (or +-std) across seeds, and cut at the budget so every method is
compared at equal frames. The budget defaults to the published one (400k Atari-100k, 500k
DMC), or to where our runs stop if that is earlier than 90% of it.
"""

from __future__ import annotations

import argparse
import difflib
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.run.cli_args import ArgParser, add_reference_arg, doc_summary
from benchmarks.aggregate import (
    AggregateError,
    Summary,
    aggregate_curve,
    bin_run,
    default_budget,
    summarize,
)
from benchmarks.reference_tables import PUBLISHED_AGGREGATES
from benchmarks.references import benchmark_of, read_references
from benchmarks.scores import Run, ScoreFileError, domain_of, read_scores

__all__ = [
    "Panel",
    "Series",
    "aggregate_panels",
    "budgets_for",
    "draw",
    "main",
    "summary_markdown",
    "task_panels",
]

SPREADS = ("minmax", "std")


@dataclass
class Series:
    """One line of a plot: a method's seed-mean curve and its spread band."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int
    ours: bool


@dataclass
class Panel:
    """One figure: the series drawn, with title, axis label and file name."""

    name: str
    title: str
    ylabel: str
    series: list[Series]


def budgets_for(ours: Sequence[Run], refs: Sequence[Run], budget: float | None,
                benchmark: str | None = None) -> dict[str, float]:
    """Frame budget per domain (see the module doc); `benchmark`, our runs' (dmc_vision
    or dmc_proprio), picks DMC's published budget."""
    result: dict[str, float] = {}
    for domain in sorted({domain_of(r.task) for r in [*ours, *refs]}):
        if budget is not None:
            result[domain] = float(budget)
            continue
        ours_end = max(
            (float(r.xs[-1]) for r in ours if domain_of(r.task) == domain and r.xs.size),
            default=None,
        )
        published = default_budget(domain, benchmark)
        if published is None:
            ends = [
                float(r.xs[-1]) for r in [*ours, *refs] if domain_of(r.task) == domain and r.xs.size
            ]
            result[domain] = ours_end if ours_end is not None else max(ends, default=0.0)
        elif ours_end is not None and ours_end < 0.9 * published:
            result[domain] = ours_end
        else:
            result[domain] = float(published)
    return result


def _series(
    label: str, runs: Sequence[Run], budget: float, bins: int, spread: str, ours: bool
) -> Series | None:
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r}; allowed: {', '.join(SPREADS)}")
    if all(r.kind == "evals" for r in runs):
        # Sparse evaluation points: interpolate every seed at the union of their x values.
        # The budget itself is a point too when some seed was evaluated on both sides of it.
        x = np.unique(np.concatenate([*(r.xs[r.xs <= budget] for r in runs), [budget]]))
        x = x[x <= max(float(r.xs[-1]) for r in runs if r.xs.size)]
        stack = np.array(
            [
                np.where((x >= r.xs[0]) & (x <= r.xs[-1]), np.interp(x, r.xs, r.ys), np.nan)
                for r in runs
                if r.xs.size
            ]
        )
    else:
        edges = np.linspace(0.0, budget, bins + 1)
        x = edges[1:]
        stack = np.stack([bin_run(r, edges) for r in runs])
    if stack.size == 0 or not np.isfinite(stack).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins are expected
        mean = np.nanmean(stack, axis=0)
        if spread == "std":
            std = np.nanstd(stack, axis=0)
            low, high = mean - std, mean + std
        else:
            low, high = np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)
    return Series(label, x, mean, low, high, len(runs), ours)


def _group(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    grouped: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.task][run.method].append(run)
    return grouped


def task_panels(
    ours: Sequence[Run],
    refs: Sequence[Run],
    budgets: dict[str, float],
    bins: int = 40,
    spread: str = "minmax",
) -> list[Panel]:
    """One panel per task of ours (or of the references when there are no runs of ours)."""
    ours_methods = {r.method for r in ours}
    tasks = sorted({r.task for r in ours} or {r.task for r in refs})
    grouped = _group([*ours, *refs])
    panels = []
    for task in tasks:
        budget = budgets[domain_of(task)]
        series = []
        for method, runs in sorted(
            grouped[task].items(), key=lambda kv: (kv[0] not in ours_methods, kv[0])
        ):
            line = _series(method, runs, budget, bins, spread, method in ours_methods)
            if line is not None:
                series.append(line)
        panels.append(Panel(task, f"{task} ({spread} over seeds)", "episode return", series))
    return panels


def aggregate_panels(
    ours: Sequence[Run], refs: Sequence[Run], budgets: dict[str, float], bins: int = 40
) -> list[Panel]:
    """Per domain, each method's aggregate curve over the tasks of ours (or shared tasks)."""
    ours_methods = {r.method for r in ours}
    panels = []
    for domain, budget in budgets.items():
        in_domain = [r for r in [*ours, *refs] if domain_of(r.task) == domain]
        # One task set for every method: ours, else the tasks all methods share.
        tasks_of: dict[str, set[str]] = defaultdict(set)
        for run in in_domain:
            tasks_of[run.method].add(run.task)
        ours_tasks = set().union(*(tasks_of[m] for m in ours_methods if m in tasks_of))
        keep = ours_tasks or (set.intersection(*tasks_of.values()) if tasks_of else set())
        by_method: dict[str, list[Run]] = defaultdict(list)
        for run in in_domain:
            if run.task in keep:
                by_method[run.method].append(run)
        edges = np.linspace(0.0, budget, bins + 1)
        series = []
        for method, runs in sorted(
            by_method.items(), key=lambda kv: (kv[0] not in ours_methods, kv[0])
        ):
            curve = aggregate_curve(runs, edges)
            if np.isfinite(curve).any():
                tasks = len({r.task for r in runs})
                series.append(
                    Series(
                        f"{method} ({tasks} tasks)",
                        edges[1:],
                        curve,
                        curve,
                        curve,
                        len(runs),
                        method in ours_methods,
                    )
                )
        ylabel = "mean human-normalised score" if domain == "atari100k" else "mean episode return"
        panels.append(Panel(f"aggregate_{domain}", f"{domain}: {ylabel}", ylabel, series))
    return panels


def draw(panel: Panel, path: str | Path) -> Path:
    """Draw one panel to a PNG with the Agg canvas (no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for s in panel.series:
        keep = np.isfinite(s.mean)
        (line,) = ax.plot(
            s.x[keep],
            s.mean[keep],
            label=f"{s.label} (n={s.runs})",
            linewidth=2.2 if s.ours else 1.3,
        )
        band = keep & np.isfinite(s.low) & np.isfinite(s.high)
        if np.any(s.low[band] != s.high[band]):
            ax.fill_between(
                s.x[band], s.low[band], s.high[band], color=line.get_color(), alpha=0.2, linewidth=0
            )
    ax.set_title(panel.title)
    ax.set_xlabel("env frames")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if panel.series:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def summary_markdown(summaries: Sequence[Summary], ours_methods: set[str] | None = None,
                     benchmark: str | None = None) -> str:
    """Markdown tables, one per domain: final score per task and method, then aggregates;
    the published aggregates beside them where `benchmark` (ours: `dmc_proprio`,
    `dmc_vision`, ...) has them at the budget."""
    ours_methods = ours_methods or set()
    lines: list[str] = []
    by_domain: dict[str, list[Summary]] = defaultdict(list)
    for s in summaries:
        by_domain[s.domain].append(s)
    for domain, group in sorted(by_domain.items()):
        group.sort(key=lambda s: (s.method not in ours_methods, s.method))
        ours_tasks = {t for s in group if s.method in ours_methods for t in s.per_task}
        tasks = sorted(ours_tasks or {t for s in group for t in s.per_task})
        budget = group[0].budget
        lines += [
            f"## {domain} at {budget:,.0f} env frames",
            "",
            f"Final score rule: {group[0].rule} (window {group[0].window:,.0f} frames; "
            "sparse eval curves interpolated); mean over seeds (n seeds).",
            "",
            "| task | " + " | ".join(s.method for s in group) + " |",
            "|---|" + "---:|" * len(group),
        ]
        for task in tasks:
            cells = [
                f"{_fmt(s.per_task[task])} ({len(s.per_task_seeds[task])})"
                if task in s.per_task
                else "–"
                for s in group
            ]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        # Aggregates over one task set for every method: ours, else the tasks all share.
        common = set.intersection(*(set(s.per_task) for s in group))
        agg_tasks = sorted(ours_tasks or common or tasks)
        lines.append(f"| *aggregates over {len(agg_tasks)} tasks* |" + " |" * len(group))
        restricted = [_restrict(s, agg_tasks) for s in group]
        for key in restricted[0].aggregates if restricted else []:
            values = [s.aggregates.get(key, math.nan) for s in restricted]
            counts = key in ("superhuman", "tasks")
            cells = [str(int(v)) if counts and math.isfinite(v) else _fmt(v) for v in values]
            lines.append(f"| **{key}** | " + " | ".join(cells) + " |")
        published = _published(domain, budget, benchmark)
        if published:
            lines += [
                "",
                "Published (REFERENCE.md, all tasks), mean / median: "
                + "; ".join(f"{k}: {m} / {md}" for k, (m, md) in published.items()),
            ]
        lines.append("")
    return "\n".join(lines)


def _restrict(summary: Summary, tasks: Sequence[str]) -> Summary:
    """The summary's aggregates recomputed over `tasks` only, so methods compare alike."""
    runs = [
        Run(t, summary.method, i, [summary.budget], [v])
        for t in tasks
        if t in summary.per_task_seeds
        for i, v in enumerate(summary.per_task_seeds[t])
    ]
    if not runs:
        return Summary(
            summary.method,
            summary.domain,
            summary.budget,
            summary.rule,
            summary.window,
            {},
            {},
            aggregates=dict.fromkeys(summary.aggregates, math.nan),
        )
    return summarize(runs, summary.budget, "last", summary.window)[0]


def _published(domain: str, budget: float, benchmark: str | None = None
               ) -> dict[str, tuple[float, float]]:
    """The published aggregates of our runs' benchmark at `budget` ({} when none match: DMC
    state and pixel runs share the `dmc` domain, so without a benchmark DMC gets none)."""
    if domain == "atari100k" and budget == 400_000:
        return PUBLISHED_AGGREGATES["atari100k_hns"]
    if benchmark == "dmc_proprio" and budget == 500_000:
        return PUBLISHED_AGGREGATES["dmc_proprio_500k"]
    if benchmark == "dmc_vision" and budget == 1_000_000:
        return PUBLISHED_AGGREGATES["dmc_vision_1m"]
    return {}


def benchmark_of_runs(ours: Sequence[Run]) -> str | None:
    """The one benchmark our runs come from (their run directories' configs), None when
    none says; ScoreFileError when they mix DMC's state and pixel benchmarks, whose method
    labels do not say the observation (their seeds would be averaged together)."""
    found = {b for b in map(benchmark_of, ours) if b}
    dmc = sorted(b for b in found if b.startswith("dmc_"))
    if len(dmc) > 1:
        raise ScoreFileError(f"runs from {' and '.join(dmc)} in one report: their method "
                             "labels do not say the observation; give one benchmark's "
                             "folder at a time (scores/dmc_proprio or scores/dmc_vision)")
    return found.pop() if len(found) == 1 else None


def report(
    ours: Sequence[Run],
    refs: Sequence[Run],
    out: str | Path,
    budget: float | None = None,
    rule: str = "window",
    bins: int = 40,
    spread: str = "minmax",
    plots: bool = True,
) -> tuple[str, list[Path]]:
    """Write every PNG (unless `plots` is False) and summary.md under `out`; return the
    markdown and the PNG paths."""
    out = Path(out)
    benchmark = benchmark_of_runs(ours)
    budgets = budgets_for(ours, refs, budget, benchmark)
    panels = [
        *task_panels(ours, refs, budgets, bins, spread),
        *aggregate_panels(ours, refs, budgets, bins),
    ]
    pngs = [draw(p, out / f"{p.name}.png") for p in panels] if plots else []
    summaries = [
        s
        for domain, b in budgets.items()
        for s in summarize([r for r in [*ours, *refs] if domain_of(r.task) == domain], b, rule)
    ]
    text = summary_markdown(summaries, {r.method for r in ours}, benchmark)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    return text, pngs


def _read(path: str) -> list[Run]:
    """Our runs in `path`; ScoreFileError (one line) when it is missing or holds none."""
    if not Path(path).exists():
        # `runs/dmc` -> `runs/dmc_proprio`: the names next to it that start or look like it.
        parent, name = Path(path).parent, Path(path).name
        near = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        close = [n for n in near if n.startswith(name)]
        close += difflib.get_close_matches(name, near, n=3, cutoff=0.6)
        guess = ", ".join(str(parent / n) for n in dict.fromkeys(close[:3]))
        guess = f"; did you mean {guess}?" if guess else ""
        raise ScoreFileError(f"{path}: no such run directory or score file{guess}")
    runs = read_scores(path)
    if not runs:
        raise ScoreFileError(f"{path}: holds no scores (expected a run directory or score file)")
    return runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(
        prog="python -m benchmarks.plot",
        description=doc_summary(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="*", help="run directories, suite folders or score files")
    add_reference_arg(
        parser, "published score files, TD-MPC2 CSVs or folders of them (DreamerV3's scores/)")
    parser.add_argument("--out", default="plots", help="output folder (default: plots)")
    parser.add_argument("--budget", type=float, default=None, help="frame budget for finals")
    parser.add_argument(
        "--rule",
        default="window",
        choices=["window", "last"],
        help="final-score rule (see benchmarks.aggregate)",
    )
    parser.add_argument("--bins", type=int, default=40, help="curve bins up to the budget")
    parser.add_argument("--spread", default="minmax", choices=SPREADS)
    args = parser.parse_args(argv)
    if not args.runs and not args.reference:
        parser.error("give run directories/score files, --reference files, or both")
    try:
        ours = [run for path in args.runs for run in _read(path)]
        refs = read_references(args.reference, ours)
        text, pngs = report(ours, refs, args.out, args.budget, args.rule, args.bins,
                            args.spread)
    except (ScoreFileError, AggregateError) as err:
        parser.error(str(err))
    print(text)
    print(f"wrote {len(pngs)} plots and summary.md to {args.out}")


if __name__ == "__main__":
    main()
