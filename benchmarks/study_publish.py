"""A study's finished runs in the repository: publishing each run's small files to
`DIR/<arm>/<condition>/<task>/seed_<s>/` (`benchmarks.compare --publish DIR`), the final
values of its metrics kept beside them, and adopting the runs DIR already holds when the
study goes on on another machine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from agents.run.compat import upgrade_run_config
from agents.run.config import Config
from agents.run.rundir import CONFIG, STATUS
from benchmarks.publish import RUN_INFO, copy_run
from benchmarks.suite import RunSpec, SuiteError, is_finished

if TYPE_CHECKING:
    from benchmarks.compare import Cell

# Settings of where and how a run ran and logged, not of what it trained
# (`settings_differ`).
MACHINE_KEYS = frozenset({
    "logdir", "threads", "device", "precision", "conv_precision", "compile", "malloc",
    "run.log_every", "run.save_every", "run.video", "run.report_every", "replay.on_disk",
    "env.options.asynchronous"})
# A published run keeps its metrics' final values (the log itself is large): each one's mean
# over the last FINAL_ROWS log rows.
FINAL_METRICS, FINAL_ROWS = "final_metrics.json", 5


def is_done(run: Path) -> bool:
    """Whether a run finished: its status.json (a study folder) or run.json (published)."""
    if is_finished(run):
        return True
    info = Path(run) / "run.json"
    return info.is_file() and bool(json.loads(info.read_text()).get("finished"))


def final_metrics(run: Path, rows: int = FINAL_ROWS) -> dict[str, float]:
    """Each logged metric's mean over the last `rows` log rows that hold it: a published
    run's `final_metrics.json`, else its `metrics.jsonl` ({} when it has neither)."""
    run = Path(run)
    if (run / FINAL_METRICS).is_file():
        return json.loads((run / FINAL_METRICS).read_text())["metrics"]
    values: dict[str, list[float]] = {}
    if (run / "metrics.jsonl").is_file():
        for line in (run / "metrics.jsonl").read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.setdefault(key, []).append(float(value))
    return {k: float(np.mean(v[-rows:])) for k, v in sorted(values.items())}


def publish_cells(cells: Sequence[Cell], dest: str | Path) -> list[Path]:
    """Copy each finished run of `cells` to `dest/<arm>/<condition>/<task>/seed_<s>/`."""
    return [publish_run(cell, spec, dest) for cell in cells for spec in cell.specs
            if is_finished(spec.logdir)]


def publish_run(cell: Cell, spec: RunSpec, dest: str | Path) -> Path:
    """Copy one finished run's small files (and its metrics' final values) to
    `dest/<arm>/<condition>/<task>/seed_<s>/`; returns that folder."""
    # The condition's folder name as the study wrote it (`video:DIR` -> `video-DIR`).
    condition = Path(spec.logdir).parents[1].name
    target = Path(dest) / cell.arm / condition / spec.task / f"seed_{spec.seed}"
    # Built whole beside the target, then swapped in: a publish cut short leaves the old
    # folder, or (cut between the renames) none, never a mix whose run.json would say
    # finished; the next publish completes it. Dot folders are skipped by every reader of
    # published runs (the study's `seed_*` globs, `benchmarks.scores.read_scores`).
    staging, old = (target.with_name(f".{target.name}.{kind}") for kind in ("new", "old"))
    for path in (staging, old):
        shutil.rmtree(path, ignore_errors=True)
    copy_run(spec.logdir, staging, f"{cell.arm}/{cell.condition}")
    (staging / FINAL_METRICS).write_text(json.dumps(
        {"rows": FINAL_ROWS, "metrics": final_metrics(spec.logdir)}, indent=1) + "\n")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def settings_differ(config: Config, published: Path) -> list[str]:
    """`key: here vs published` for each setting both configs hold that differs, leaving out
    where and how a run ran (its folder, threads, device, precision path, allocator): a
    published run counts for a study only if trained as the study would train it. Keys
    one config lacks (added or renamed since) are not compared."""
    data = yaml.safe_load(published.read_text()) if published.is_file() else {}
    theirs = Config(upgrade_run_config(data or {}, {})[0]).flat()  # older layouts renamed
    ours = config.flat()
    return [f"{key}: {ours[key]!r} here, {theirs[key]!r} there" for key in sorted(ours)
            if key in theirs and ours[key] != theirs[key] and key not in MACHINE_KEYS]


def adopt_published(cells: Sequence[Cell], published: str | Path) -> list[Path]:
    """Count a run that `published` (a `--publish` folder) holds as finished as finished
    here too: copy its small files into the run's folder and write a `status.json` that
    says so, so that a study resumed on a fresh machine (its run folders gone, the
    repository's `scores/` kept) trains only what no machine finished. A run finished here
    already is left alone. Returns the folders adopted."""
    found = []  # every published run is checked before any is copied in
    for cell in cells:
        for spec in cell.specs:
            logdir = Path(spec.logdir)
            if is_finished(logdir):
                continue
            source = Path(published) / cell.arm / logdir.parents[1].name / spec.task / \
                f"seed_{spec.seed}"
            info_file = source / RUN_INFO
            if not info_file.is_file():
                continue
            info = json.loads(info_file.read_text())
            if not info.get("finished"):
                continue
            differ = settings_differ(spec.config, source / CONFIG)
            if differ:
                raise SuiteError(
                    f"{source} was trained with other settings than this study's "
                    f"({'; '.join(differ[:3])}); publish this study to another folder")
            found.append((logdir, source, info))
    adopted = []
    for logdir, source, info in found:
        logdir.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file():
                shutil.copyfile(path, logdir / path.name)
        (logdir / STATUS).write_text(json.dumps({
            "finished": True, "frames": info.get("frames"), "updates": info.get("updates"),
            "cpu_s": info.get("cpu_s"), "adopted_from": str(source)}, indent=1) + "\n")
        adopted.append(logdir)
    return adopted
