"""Published reference curves: which score files of a folder go with the runs plotted.

They are not shipped. DreamerV3's repository keeps them in `scores/`, one file per benchmark
and method: `<benchmark>-<method>.json.gz` (`dmc_proprio-dreamerv3.json.gz`,
`atari100k-dreamerv3.json.gz`); TD-MPC2's in `results/<method>/<domain>-<task>.csv`. From a
folder, only the files of our runs' benchmarks (and, for CSVs, tasks) are read, so DMC
proprio runs are not drawn against vision curves of the same task.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from pathlib import Path

import yaml

from agents.run.config import ConfigError, domain_for, get_dotted
from benchmarks.scores import Run, ScoreFileError, _tdmpc2_task, domain_of, read_scores

__all__ = ["REFERENCE_SOURCE", "benchmark_of", "file_benchmark", "read_references",
           "reference_files"]

REFERENCE_SOURCE = ("DreamerV3's repository (github.com/danijar/dreamerv3, folder scores/) "
                    "or TD-MPC2's (results/)")
_OFFICIAL = (".json.gz", ".json")


def _key(name: str) -> str:
    return name.lower().replace("_", "")


# Suite names that stand for several benchmarks' files (keys as `_key` makes them).
_FAMILIES = {"dmc": ("dmcproprio", "dmcvision"), "atari": ("atari", "atari57", "atari200m")}


def _matches(benchmark: str, wanted: str) -> bool:
    """A file of `benchmark` serves runs of `wanted` (a benchmark, or a suite such as `dmc`);
    `atari` runs (long-run) do not take `atari100k` files."""
    return benchmark == wanted or benchmark in _FAMILIES.get(wanted, ())


def file_benchmark(path: str | Path) -> str:
    """The benchmark a reference file belongs to: `dmc_proprio-dreamerv3.json.gz` ->
    `dmc_proprio` (v1-era `dmcproprio_d4pg.json.gz` -> `dmcproprio`); a TD-MPC2 CSV is
    `dmc_vision` in a `*-pixels` method folder, else `dmc_proprio`."""
    path = Path(path)
    if path.suffix == ".csv":
        return "dmc_vision" if path.parent.name.endswith("-pixels") else "dmc_proprio"
    stem = path.name.removesuffix(".gz").removesuffix(".json")
    return stem.split("-", 1)[0] if "-" in stem else stem.rsplit("_", 1)[0]


def benchmark_of(run: Run) -> str | None:
    """Our run's benchmark from its run directory's config (`dmc_proprio`, `dmc_vision`,
    `atari100k`, ...), or None when the run did not come from a run directory."""
    config_path = Path(run.source) / "config.yaml"
    if not run.source or not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    spec, options = get_dotted(config, "env.spec"), get_dotted(config, "env.options")
    if not isinstance(spec, str) or ":" not in spec:
        return None
    try:
        return domain_for(spec, options if isinstance(options, dict) else {})
    except ConfigError:  # a suite this process has not registered
        return None


def _candidates(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(_OFFICIAL)]
    files += folder.glob("*.csv")
    files += folder.glob("*/*.csv")  # TD-MPC2's results/<method>/<task>.csv
    return sorted(files)


def reference_files(
    paths: Sequence[str | Path],
    benchmarks: Collection[str] | None = None,
    tasks: Collection[str] | None = None,
) -> list[Path]:
    """The reference files to read: files as given; from a folder, the score files whose
    benchmark is one of `benchmarks` (a name, or a suite such as `dmc` for its benchmarks)
    and the CSVs of `tasks` (None: all). A folder of run directories is kept whole.
    One-line ScoreFileError for a missing path or a folder with nothing that matches."""
    wanted = {_key(b) for b in benchmarks} if benchmarks is not None else None
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ScoreFileError(
                f"{path}: no such reference file or folder; get the published score files "
                f"(e.g. dmc_proprio-dreamerv3.json.gz) from {REFERENCE_SOURCE}")
        if path.is_file() or next(path.rglob("scores.jsonl"), None) is not None:
            files.append(path)
            continue
        found = _candidates(path)
        picked = [
            f for f in found
            if (wanted is None or any(_matches(_key(file_benchmark(f)), w) for w in wanted))
            and (tasks is None or f.suffix != ".csv" or _tdmpc2_task(f) in tasks)
        ]
        if not picked:
            what = f"for {', '.join(sorted(benchmarks))} " if found and benchmarks else ""
            example = sorted(benchmarks)[0] if benchmarks else "dmc_proprio"
            raise ScoreFileError(
                f"{path}: holds no reference score file {what}(e.g. "
                f"{example}-dreamerv3.json.gz); get them from {REFERENCE_SOURCE}")
        files += picked
    return files


def read_references(paths: Sequence[str | Path], ours: Sequence[Run] = ()) -> list[Run]:
    """The reference runs for `ours` from files and folders (see `reference_files`; with no
    runs of ours, every file of a folder). A method found in files of two benchmarks (the
    `dreamerv3` of dmc_proprio and of dmc_vision) is labelled `method (benchmark)`."""
    benchmarks = {benchmark_of(r) or domain_of(r.task) for r in ours} if ours else None
    tasks = {r.task for r in ours} if ours else None
    runs = [run for f in reference_files(paths, benchmarks, tasks) for run in read_scores(f)]
    sources: dict[tuple[str, str], set[str]] = defaultdict(set)
    for run in runs:
        sources[run.task, run.method].add(file_benchmark(run.source))
    for run in runs:
        if len(sources[run.task, run.method]) > 1:
            run.method = f"{run.method} ({file_benchmark(run.source)})"
    return runs
