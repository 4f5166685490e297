"""Paired comparisons: arms (agents or ablations) x conditions (backgrounds) x seeds, on Ray,
with stratified-bootstrap confidence intervals.

    python -m benchmarks.compare --env dmc:cartpole-balance-pixels [--env ...]
        [--arm dreamerv3=dreamerv3 --arm jepa=jepa
         --arm no-predict=jepa,jepa.predict=false,jepa.vicreg=false,jepa.inverse=false]
        [--conditions clean,atari] [--seeds 3] [--frames 100000] [--out DIR] [--set K=V] ...
        [--publish scores/jepa-study]
    python -m benchmarks.compare --report-only scores/jepa-study [--frames 100000]

An arm is `NAME=AGENT[,KEY=VALUE,...]`: the agent and the config overrides that make the arm
(an ablation is an arm with a switch). A condition is `clean` or a `distractor` value
(`atari`, `shapes`, `noise`, `video:DIR`). Every (env, arm, condition, seed) is one
training run in `OUT/<arm>/<condition>/<task>/seed_<s>/`, trained on Ray like the suites
(embedded Ray by default, `--address auto` for a cluster; finished runs are skipped,
unfinished ones resume; SIGINT to a run's worker pauses the study, see
`benchmarks.suite.run_suite`). Seeds are shared across conditions, which makes the design
paired.

Written to OUT: `scores.json.gz` (official format, method `<arm>/<condition>`, training
episodes), `compare.md` and `compare.png`. Final scores at the frame budget: evaluation
episodes (the run's last evaluation at or before the budget, if one falls in its last
10%; `atari` runs are evaluated on the held-out `atari:eval` games) and training
episodes (the mean of the episodes ending in the last 10% of the budget: `benchmarks.
aggregate`'s window rule with a window of 10%, not its 50k cap). For every arm and
condition: the mean over tasks of the seed-mean score with its 95% interval, and for every
distracted condition the share of the clean score kept (mean distracted / mean clean).

`--publish DIR` copies every finished run's small files (config, score files, machines and a
`run.json`, as `benchmarks.publish` does; no checkpoint or replay) to
`DIR/<arm>/<condition>/<task>/seed_<s>/` (each run as it finishes, the rest at the end)
and writes the report there too. Runs that DIR
already holds as finished are not trained again: their files are copied into OUT first,
so a study resumed on a fresh machine (OUT gone, the repository's `scores/` kept) trains
only what is missing. A folder given
with `--report-only` is read as such a layout, so the tables rebuild on a fresh clone
without the command that trained the runs.

Intervals: the stratified bootstrap of rliable (Agarwal et al., 2021): runs are resampled
with replacement within each task, the same seed indices for every array of one statistic
(paired), the statistic recomputed, and the 2.5/97.5 percentiles taken. It is written here
against that definition: rliable 1.2 needs `arch`, whose releases that rliable allows do
not import under pandas 3.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from agents.run.cli_args import ArgParser, add_set_arg, doc_summary
from agents.run.config import get_dotted
from benchmarks.aggregate import final_value
from benchmarks.ray_launch import add_ray_args, init_ray
from benchmarks.scores import Run, ScoreFileError, read_run_dir, write_scores
from benchmarks.study_publish import (
    FINAL_ROWS,
    adopt_published,
    final_metrics,
    is_done,
    publish_cells,
    publish_run,
)
from benchmarks.suite import (
    PAUSED_EXIT,
    RunSpec,
    SuiteError,
    exit_with,
    paused,
    plan,
    run_suite,
)

REPEAT = 2  # DMC's action repeat in the published protocol
DEFAULT_ARMS = ("dreamerv3=dreamerv3", "jepa=jepa")
@dataclass
class Arm:
    name: str
    agent: str
    sets: tuple[str, ...]


def parse_arm(text: str) -> Arm:
    """`NAME=AGENT[,KEY=VALUE,...]` -> Arm; a one-line error for anything else."""
    head, *sets = [part.strip() for part in text.split(",")]
    name, sep, agent = head.partition("=")
    if not sep or not name or not agent or "/" in name or any("=" not in s for s in sets):
        raise SuiteError(f"--arm {text!r} is invalid; expected NAME=AGENT[,KEY=VALUE,...] "
                         f"(e.g. no-vicreg=jepa,jepa.vicreg=false)")
    return Arm(name, agent, tuple(sets))


def condition_sets(condition: str) -> list[str]:
    """Config overrides of a condition: `clean` has no distractor, anything else is one."""
    if condition == "clean":
        return ["env.options.distractor=null"]
    return [f"env.options.distractor={condition}"]


@dataclass
class Cell:
    """The runs of one (arm, condition)."""

    arm: str
    condition: str
    specs: list[RunSpec]


def plan_comparison(envs: Sequence[str], arms: Sequence[Arm], conditions: Sequence[str],
                    seeds: int, frames: int, out: str | Path, size: str | None = None,
                    sets: Sequence[str] = ()) -> list[Cell]:
    """Every run, its config resolved now (bad overrides fail before Ray starts)."""
    if len(set(a.name for a in arms)) != len(arms):
        raise SuiteError(f"arm names must differ; got {[a.name for a in arms]}")
    if not conditions or len(set(conditions)) != len(conditions):
        raise SuiteError(f"--conditions must name distinct conditions; got {list(conditions)}")
    cells = []
    for arm in arms:
        for condition in conditions:
            folder = Path(out) / arm.name / condition.replace("/", "_").replace(":", "-")
            specs = plan(envs, seeds, frames, REPEAT, folder, arm.agent, size,
                         [*arm.sets, *condition_sets(condition), *sets])
            for spec in specs:
                spec.group = f"{arm.name}/{condition}/"
            cells.append(Cell(arm.name, condition, specs))
    return cells


def stratified_bootstrap(statistic: Callable[..., float], arrays: Sequence[np.ndarray],
                         reps: int = 2000, size: float = 0.95, seed: int = 0
                         ) -> tuple[float, float, float]:
    """(point, low, high) of `statistic(*arrays)` for arrays of scores [runs, tasks]: each
    task's runs resampled with replacement, the same indices in every array (paired)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    runs, tasks = arrays[0].shape
    rng = np.random.default_rng(seed)
    cols = np.arange(tasks)
    values = np.empty(reps)
    for i in range(reps):
        idx = rng.integers(runs, size=(runs, tasks))
        values[i] = statistic(*[a[idx, cols] for a in arrays])
    low, high = np.nanpercentile(values, [50 * (1 - size), 50 * (1 + size)])
    return float(statistic(*arrays)), float(low), float(high)


def mean_score(scores: np.ndarray) -> float:
    """Mean over tasks of the seed-mean score."""
    return float(np.mean(np.nanmean(scores, axis=0)))


def kept_share(clean: np.ndarray, distracted: np.ndarray) -> float:
    """Mean distracted score over mean clean score (tasks averaged first)."""
    base = mean_score(clean)
    return mean_score(distracted) / base if base > 0 else math.nan


def discover_cells(folder: str | Path) -> list[Cell]:
    """The cells of a study folder laid out as `<arm>/<condition>/<task>/seed_<s>/`: arms in
    name order, `clean` first among conditions, each run's env and steps from its config."""
    folder = Path(folder)
    found: dict[tuple[str, str], list[RunSpec]] = {}
    for scores in sorted(folder.glob("*/*/*/seed_*/scores.jsonl")):
        run = scores.parent
        arm, condition = run.parents[2].name, run.parents[1].name
        if (run / "run.json").is_file():  # its method `<arm>/<condition>` keeps `video:DIR`
            method = json.loads((run / "run.json").read_text()).get("method", "")
            condition = method.split("/", 1)[1] if method.startswith(f"{arm}/") else condition
        config = yaml.safe_load((run / "config.yaml").read_text()) if (
            run / "config.yaml").is_file() else {}
        env = get_dotted(config or {}, "env.spec")
        seed = run.name.removeprefix("seed_")
        if not isinstance(env, str) or not seed.isdigit():
            raise SuiteError(f"{run}: not a study run (its config.yaml names no env.spec, "
                             "or the folder is not seed_<number>)")
        steps = get_dotted(config, "run.steps")
        found.setdefault((arm, condition), []).append(
            RunSpec(env, int(seed), run, int(steps or 0), config))
    if not found:
        raise SuiteError(f"{folder}: holds no <arm>/<condition>/<task>/seed_<s>/scores.jsonl")
    order = sorted(found, key=lambda k: (k[0], k[1] != "clean", k[1]))
    return [Cell(arm, condition, found[(arm, condition)]) for arm, condition in order]


def study_frames(cells: Sequence[Cell]) -> int:
    """The frame budget the runs of `cells` were trained for (agent steps x action repeat)."""
    budgets = {s.steps * REPEAT for c in cells for s in c.specs}
    if len(budgets) != 1 or not all(budgets):
        raise SuiteError(f"the runs were trained for different or unknown budgets "
                         f"({sorted(budgets)} frames); pass --frames")
    return budgets.pop()


def final_scores(cell: Cell, frames: int, evals: bool, seeds: Sequence[int] | None = None,
                 tasks: Sequence[str] | None = None) -> np.ndarray:
    """Scores [seeds, tasks] of a cell at the budget (NaN where a run has none yet); rows
    are `seeds` and columns `tasks` (default: the cell's own), so two cells pair by seed
    and task name."""
    tasks = list(dict.fromkeys(s.task for s in cell.specs)) if tasks is None else list(tasks)
    seeds = sorted({s.seed for s in cell.specs}) if seeds is None else list(seeds)
    out = np.full((len(seeds), len(tasks)), np.nan)
    for spec in cell.specs:
        # A run still training has no final score (its episodes near 90% of the budget
        # would pass for the last 10%), nor one trained to less than the budget asked for.
        if (spec.seed not in seeds or spec.task not in tasks or not is_done(spec.logdir)
                or spec.steps < frames // REPEAT):
            continue
        try:
            run = read_run_dir(spec.logdir, spec.task, spec.seed, eval_scores=evals)
        except ScoreFileError:
            continue
        cell_index = seeds.index(spec.seed), tasks.index(spec.task)
        if not evals:
            out[cell_index] = final_value(run.xs, run.ys, frames, "window", 0.1 * frames)
            continue
        late = (run.xs > 0.9 * frames) & (run.xs <= frames)
        if late.any():  # the last evaluation: the mean of its episodes (one frame count)
            out[cell_index] = float(run.ys[run.xs == run.xs[late].max()].mean())
    return out


def _estimate(value: tuple[float, float, float], seeds: int, form: str) -> str:
    """`point [low, high]`, or the point alone from one seed (its interval is the point)."""
    point = form.format(value[0])
    return point if seeds < 2 else f"{point} [{form.format(value[1])}, {form.format(value[2])}]"


def summarize(cells: Sequence[Cell], frames: int, reps: int = 2000) -> tuple[str, dict]:
    """Markdown table and the numbers behind it."""
    result: dict = {}
    lines = [f"Final return at {frames} frames, mean over tasks of the seed mean [95% "
             f"stratified-bootstrap interval]; `kept` = distracted / clean of the same arm.", "",
             "| arm | condition | seeds | eval return | kept (eval) | train return | "
             "kept (train) |", "|---|---|---:|---:|---:|---:|---:|"]
    # Every cell over the same tasks: a cell without a run of some task has no score (a
    # published study may hold one task's runs before another's).
    tasks = list(dict.fromkeys(s.task for c in cells for s in c.specs))
    for cell in cells:
        clean = next((c for c in cells if c.arm == cell.arm and c.condition == "clean"), None)
        row: dict = {}
        cols = []
        for kind, evals in (("eval", True), ("train", False)):
            scores = final_scores(cell, frames, evals, tasks=tasks)
            done = int(np.isfinite(scores).all(axis=1).sum())
            row[f"{kind}_seeds"] = done
            if done == 0:
                cols += ["-", "-"]
                continue
            scores = scores[np.isfinite(scores).all(axis=1)]
            row[kind] = stratified_bootstrap(mean_score, [scores], reps)
            cols.append(_estimate(row[kind], done, "{:.1f}"))
            if clean is None or clean is cell:
                cols.append("-")
                continue
            paired = sorted({s.seed for s in clean.specs} | {s.seed for s in cell.specs})
            base = final_scores(clean, frames, evals, paired, tasks)
            distracted = final_scores(cell, frames, evals, paired, tasks)
            both = np.isfinite(base).all(axis=1) & np.isfinite(distracted).all(axis=1)
            if not both.any():
                cols.append("-")
                continue
            pair = [base[both], distracted[both]]
            row[f"kept_{kind}"] = stratified_bootstrap(kept_share, pair, reps)
            row[f"kept_{kind}_pairs"] = pairs = int(both.sum())
            cols.append(f"{_estimate(row[f'kept_{kind}'], pairs, '{:.2f}')} ({pairs}p)")
        result[(cell.arm, cell.condition)] = row
        seeds = f"{row['eval_seeds']}/{row['train_seeds']}"
        lines.append(f"| {cell.arm} | {cell.condition} | {seeds} | " + " | ".join(
            [cols[0], cols[1], cols[2], cols[3]]) + " |")
    lines += ["", "seeds: runs with an eval / a train score at the budget (eval: the last "
              "evaluation, sampled actions; train: training episodes). An interval needs 2 "
              "seeds or more; with 2 or 3 it is the range of the seeds (each seed repeated "
              "is over 2.5% of the resamples), not a 95% interval. `kept` is over the seeds "
              "both conditions have (`Np`: N pairs)."]
    prediction = prediction_table(cells)
    if prediction:
        lines += ["", *prediction]
    return "\n".join(lines), result


def prediction_table(cells: Sequence[Cell]) -> list[str]:
    """The latent objective's k-step prediction error against copy-last (predict target
    t + k with target t) at the end of each finished run, mean over runs; [] when no
    finished run logs them (the reconstruction agent does not)."""
    by_cell = []
    for cell in cells:
        runs = [final_metrics(s.logdir) for s in cell.specs if is_done(s.logdir)]
        runs = [m for m in runs if "jepa/pred_k1" in m]
        if runs:
            by_cell.append((cell, runs))
    if not by_cell:
        return []
    ks = [k for k in range(1, 100) if any(f"jepa/pred_k{k}" in m for _, r in by_cell for m in r)]
    lines = ["Latent prediction at the end of training (finished runs; each run's last "
             f"{FINAL_ROWS} log rows): normalised error of the k-step prior prediction, and of "
             "copy-last (target t for target t + k), mean over runs; a prediction below "
             "copy-last has learnt what changes.", "",
             "| arm | condition | runs | " + " | ".join(f"k={k} pred, copy" for k in ks) + " |",
             "|---|---|---:|" + "---:|" * len(ks)]
    for cell, runs in by_cell:
        cols = []
        for k in ks:  # `-` where a run's horizon stops short of k
            if not all(f"jepa/pred_k{k}" in m for m in runs):
                cols.append("-")
                continue
            pred = np.mean([m[f"jepa/pred_k{k}"] for m in runs])
            copy = np.mean([m[f"jepa/copy_k{k}"] for m in runs])
            cols.append(f"{pred:.3f}, {copy:.3f}")
        lines.append(f"| {cell.arm} | {cell.condition} | {len(runs)} | " + " | ".join(cols)
                     + " |")
    return lines


def plot(runs_by_cell: dict[str, list[Run]], frames: int, path: Path, bins: int = 20) -> Path:
    """Training return vs frames per cell: mean over runs with a 95% bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, frames, bins + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    for label, runs in runs_by_cell.items():
        curves = np.full((len(runs), bins), np.nan)
        for i, run in enumerate(runs):
            which = np.digitize(run.xs, edges) - 1
            for b in range(bins):
                ys = run.ys[which == b]
                curves[i, b] = ys.mean() if ys.size else np.nan
        with warnings.catch_warnings():  # bins with no episode yet stay NaN (gaps)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, 0)
            boot = np.stack([np.nanmean(curves[rng.integers(len(runs), size=len(runs))], 0)
                             for _ in range(500)])
            low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        (line,) = ax.plot(mids, mean, label=f"{label} ({len(runs)} seeds)")
        ax.fill_between(mids, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env frames")
    ax.set_ylabel("training episode return")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(cells: Sequence[Cell], frames: int, out: Path, plots: bool = True) -> str:
    """Score file, table and plot of whatever the runs wrote so far."""
    runs_by_cell: dict[str, list[Run]] = {}
    for cell in cells:
        label = f"{cell.arm}/{cell.condition}"
        for spec in cell.specs:
            try:
                runs_by_cell.setdefault(label, []).append(
                    read_run_dir(spec.logdir, spec.task, spec.seed, method=label))
            except ScoreFileError:
                continue
    all_runs = [r for runs in runs_by_cell.values() for r in runs]
    if all_runs:
        write_scores(all_runs, out / "scores.json.gz")
    text, _ = summarize(cells, frames)
    (out / "compare.md").write_text(text + "\n")
    if plots and all_runs:
        plot({k: v for k, v in runs_by_cell.items() if v}, frames, out / "compare.png")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(prog="python -m benchmarks.compare", description=doc_summary(__doc__))
    parser.add_argument("folder", nargs="?", default=None,
                        help="with --report-only: a study folder <arm>/<condition>/<task>/"
                             "seed_<s>/ (a --publish one) to report on instead of a plan")
    parser.add_argument("--env", action="append", default=[], dest="envs",
                        help="env spec (repeatable; tasks are the bootstrap's strata)")
    parser.add_argument("--arm", action="append", default=[], dest="arms",
                        help="NAME=AGENT[,KEY=VALUE,...] (repeatable; default dreamerv3, jepa)")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated: clean or distractor values (default clean,atari)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell: 0..N-1 "
                        "(default 3)")
    parser.add_argument("--frames", type=int, default=None,
                        help="env frames per run (default 100000; for a study folder, the "
                             "budget its runs were trained for)")
    parser.add_argument("--size", default=None, help="model size preset (default: domain's)")
    parser.add_argument("--out", default=None, help="output folder (default runs/compare)")
    add_set_arg(parser, "config override of every run (repeatable)")
    parser.add_argument("--no-plots", action="store_true", help="skip compare.png")
    parser.add_argument("--report-only", action="store_true",
                        help="aggregate what the runs wrote so far; train nothing")
    parser.add_argument("--publish", default=None, metavar="DIR",
                        help="copy finished runs' small files to DIR/<arm>/<condition>/<task>/"
                             "seed_<s>/ and write the report there (e.g. scores/jepa-study)")
    add_ray_args(parser, unit="run")
    args = parser.parse_args(argv)
    if args.folder is not None:
        given = [flag for flag, value in (
            ("--env", args.envs), ("--arm", args.arms), ("--conditions", args.conditions),
            ("--seeds", args.seeds), ("--size", args.size), ("--out", args.out),
            ("--set", args.sets), ("--publish", args.publish)) if value]
        if not args.report_only or given:
            parser.error(f"a study folder is read with --report-only and --frames only (got "
                         f"{', '.join(given) or 'no --report-only'}); to train, give --env "
                         "and --out")
        try:
            cells = discover_cells(args.folder)
            frames = args.frames or study_frames(cells)
        except (SuiteError, OSError, ValueError) as exc:  # yaml/json errors are ValueErrors
            parser.error(str(exc))
        print(report(cells, frames, Path(args.folder), plots=not args.no_plots))
        return
    if not args.envs:
        parser.error("--env is required (or, with --report-only, a study folder)")
    out = Path(args.out or "runs/compare")
    frames = args.frames or 100_000
    try:
        arms = [parse_arm(a) for a in (args.arms or DEFAULT_ARMS)]
        conditions = [c.strip() for c in (args.conditions or "clean,atari").split(",")
                      if c.strip()]
        cells = plan_comparison(args.envs, arms, conditions, args.seeds or 3, frames,
                                out.resolve(), args.size, args.sets)
    except SuiteError as exc:
        parser.error(str(exc))
    if args.publish and Path(args.publish).is_dir():
        try:
            adopted = adopt_published(cells, args.publish)
        except SuiteError as exc:
            parser.error(str(exc))
        if adopted:
            print(f"{len(adopted)} runs finished in {args.publish} count as finished here "
                  "(their files copied in)")
    failed: list[str] = []
    waiting = 0
    if not args.report_only:
        init_ray(args.address, args.num_cpus)
        on_done = None
        if args.publish:  # each run as it finishes: the machine may end before the study
            cell_of = {spec.name: cell for cell in cells for spec in cell.specs}
            def on_done(spec: RunSpec) -> None:
                print(f"published {publish_run(cell_of[spec.name], spec, args.publish)}")
        outcome = run_suite([s for c in cells for s in c.specs], args.cpus_per_run,
                            args.gpus_per_run, on_done=on_done)
        failed = sorted(k for k, v in outcome.items() if v.startswith("FAILED"))
        waiting = paused(outcome)
        if waiting:
            print(f"paused: {waiting} runs to resume (rerun the same command)")
    out.mkdir(parents=True, exist_ok=True)
    print(report(cells, frames, out, plots=not args.no_plots))
    print(f"wrote {out / 'compare.md'}" + ("" if args.no_plots else f", {out / 'compare.png'}"))
    if args.publish:
        try:
            copied = publish_cells(cells, args.publish)
            if copied:
                report(discover_cells(args.publish), frames, Path(args.publish),
                       plots=not args.no_plots)
        except (SuiteError, ScoreFileError, OSError, ValueError) as exc:
            print(f"error: publishing to {args.publish} failed: {exc}", file=sys.stderr)
            exit_with(1)
        print(f"published {len(copied)} finished runs to {args.publish}")
    exit_with(1 if failed else PAUSED_EXIT if waiting else 0)


if __name__ == "__main__":
    main()
