"""Score files: DreamerV3's official format, our run directories and TD-MPC2's CSVs.

The official format is a gzipped JSON list of runs `{task, method, seed, xs, ys}` with `xs`
in env frames (agent steps x action repeat) and `ys` the return of the training episode that
ended there. Task ids are DreamerV3 style: `atari100k_pong`, `dmc_walker_walk`. The 2024
curve files say `atari_pong` for Atari-100k games; `canonical_task` maps both to one id.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.run.config import get_dotted
from benchmarks.reference_tables import ATARI100K_GAMES

__all__ = [
    "Run",
    "ScoreFileError",
    "canonical_task",
    "domain_of",
    "read_run_dir",
    "read_scores",
    "read_status",
    "read_tdmpc2_csv",
    "task_id",
    "write_scores",
]

# TD-MPC2 logs agent steps with an action repeat of 2 hard-coded (REFERENCE.md caveat 0.2).
TDMPC2_FRAMES_PER_STEP = 2
# TD-MPC2 task names that differ from the dm_control domain names.
_TDMPC2_DOMAINS = {"cup": "ball_in_cup"}
_OBS_SUFFIXES = ("-pixels", "-state", "-both")


class ScoreFileError(ValueError):
    """A score file or run directory could not be read."""


@dataclass(eq=False)  # numpy fields: compare runs field by field
class Run:
    """One training run's learning curve: returns `ys` of episodes ending at env frame `xs`."""

    task: str
    method: str
    seed: int | str
    xs: np.ndarray
    ys: np.ndarray
    source: str = field(default="", compare=False)
    # "episodes": one point per training episode; "evals": sparse evaluation points.
    kind: str = field(default="episodes", compare=False)

    def __post_init__(self) -> None:
        xs = np.asarray(self.xs, dtype=np.float64).reshape(-1)
        ys = np.asarray(self.ys, dtype=np.float64).reshape(-1)
        if xs.shape != ys.shape:
            raise ScoreFileError(f"run {self.task}/{self.method}/{self.seed}: xs and ys differ")
        # Binned files (v1-era DreamerV3) mark empty bins with NaN: drop those points.
        keep = np.isfinite(ys) & np.isfinite(xs)
        order = np.argsort(xs[keep], kind="stable")
        self.xs, self.ys = xs[keep][order], ys[keep][order]


def _snake(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def task_id(spec: str) -> str:
    """DreamerV3-style task id of an env spec: `dmc:walker-walk-pixels` -> `dmc_walker_walk`."""
    if ":" not in spec:
        raise ScoreFileError(f"env spec {spec!r} is not of the form 'suite:task'")
    suite, task = spec.split(":", 1)
    if suite == "dmc":
        for suffix in _OBS_SUFFIXES:
            if task.endswith(suffix):
                task = task[: -len(suffix)]
    return f"{_snake(suite)}_{_snake(task)}"


def canonical_task(name: str, atari100k: bool = False) -> str:
    """One id per task whatever file it came from: an Atari-100k curve file's `atari_pong`
    (`atari100k=True`) -> `atari100k_pong`; a long-run Atari id (atari57's, or our
    `atari:` runs') stays `atari_pong`."""
    name = name.strip()
    if atari100k and name.startswith("atari_") and name[len("atari_") :] in ATARI100K_GAMES:
        return "atari100k_" + name[len("atari_") :]
    if ":" in name:
        return task_id(name)
    return name


def domain_of(task: str) -> str:
    """The suite part of a task id: `atari100k`, `dmc`, `gym`, ..."""
    return canonical_task(task).split("_", 1)[0]


def _dump_seed(seed: int | str) -> int | str:
    try:
        return int(seed)
    except (TypeError, ValueError):
        return str(seed)


def write_scores(runs: Iterable[Run], path: str | Path) -> Path:
    """Write runs in the official format (gzipped JSON if the name ends in .gz)."""
    path = Path(path)
    data = [
        {
            "task": run.task,
            "method": run.method,
            "seed": _dump_seed(run.seed),
            "xs": [int(x) if float(x).is_integer() else float(x) for x in run.xs],
            "ys": [float(y) for y in run.ys],
        }
        for run in runs
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data)
    if path.suffix == ".gz":  # no time stamp in the header: the same scores, the same bytes
        path.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        path.write_text(text)
    return path


def _read_official(path: Path) -> list[Run]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ScoreFileError(f"{path}: not a (gzipped) JSON score file: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ScoreFileError(f"{path}: expected a JSON list of {{task, method, seed, xs, ys}}")
    runs = []
    for entry in data:
        missing = {"task", "method", "seed", "xs", "ys"} - set(entry)
        if missing:
            raise ScoreFileError(f"{path}: a run lacks the keys {sorted(missing)}")
        runs.append(
            Run(
                canonical_task(entry["task"], atari100k="atari100k" in path.name),
                str(entry["method"]),
                _dump_seed(entry["seed"]),
                entry["xs"],
                entry["ys"],
                source=str(path),
            )
        )
    return runs


def _tdmpc2_task(path: Path) -> str:
    domain, _, task = path.stem.partition("-")
    return f"dmc_{_TDMPC2_DOMAINS.get(domain, domain)}_{_snake(task)}"


def read_tdmpc2_csv(path: str | Path, method: str | None = None) -> list[Run]:
    """A TD-MPC2 results CSV (`step,reward,seed`), one run per seed, xs = step x 2 frames."""
    path = Path(path)
    method = method or f"{path.parent.name} (tdmpc2 repo)"
    task_name = _tdmpc2_task(path)
    per_seed: dict[str, tuple[list[float], list[float]]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"step", "reward", "seed"} <= set(reader.fieldnames):
            raise ScoreFileError(f"{path}: expected a CSV with header step,reward,seed")
        for row in reader:
            xs, ys = per_seed.setdefault(row["seed"], ([], []))
            xs.append(float(row["step"]) * TDMPC2_FRAMES_PER_STEP)
            ys.append(float(row["reward"]))
    return [
        Run(task_name, method, _dump_seed(seed), xs, ys, source=str(path), kind="evals")
        for seed, (xs, ys) in sorted(per_seed.items())
    ]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            # A crash can leave a half-written last line; anything earlier is corruption.
            if number == len(lines):
                break
            raise ScoreFileError(f"{path}:{number}: not a JSON line") from None
    return rows


def read_run_dir(
    path: str | Path,
    task: str | None = None,
    seed: int | str | None = None,
    method: str | None = None,
    eval_scores: bool = False,
) -> Run:
    """A run directory's `scores.jsonl` (or `eval_scores.jsonl`) as one Run in env frames.

    Task, seed and agent come from `config.yaml` when it names them, else from the
    `<task>/seed_<s>/` layout the suite runners write; the method is `run.json`'s (written
    by `benchmarks.publish` and `benchmarks.official`), else `ours:<agent>`.
    """
    path = Path(path)
    scores = path / ("eval_scores.jsonl" if eval_scores else "scores.jsonl")
    if not scores.is_file():
        raise ScoreFileError(f"{path}: no {scores.name} (is this a run directory?)")
    config: dict[str, Any] = {}
    if (path / "config.yaml").is_file():
        config = yaml.safe_load((path / "config.yaml").read_text()) or {}
    if task is None:
        for key in ("env.spec", "env.name", "env.id", "run.env", "env"):
            value = get_dotted(config, key)
            if isinstance(value, str) and ":" in value:
                task = task_id(value)
                break
    if task is None:
        task = path.parent.name if path.name.startswith("seed_") else path.name
    if seed is None:
        for key in ("seed", "run.seed"):
            if isinstance(get_dotted(config, key), int):
                seed = get_dotted(config, key)
                break
    if seed is None:
        match = re.fullmatch(r"seed_(\w+)", path.name)
        seed = match.group(1) if match else 0
    if method is None:
        method = _run_info(path).get("method")
    if not isinstance(method, str) or not method:
        agent = next(
            (
                v
                for v in (get_dotted(config, "agent.name"), get_dotted(config, "agent"))
                if isinstance(v, str)
            ),
            None,
        )
        method = f"ours:{agent or 'dreamerv3'}"
    rows = _read_jsonl(scores)
    xs = [float(r.get("frames", r.get("step", math.nan))) for r in rows]
    ys = [float(r["return"]) for r in rows]
    return Run(canonical_task(task), method, _dump_seed(seed), xs, ys, source=str(path))


def _run_info(path: Path) -> dict[str, Any]:
    """A run directory's `run.json` (method, machine, command), or {} when it has none."""
    try:
        info = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def read_status(path: str | Path) -> dict[str, Any] | None:
    """A run directory's `status.json`, or None when it has none (or it is unreadable)."""
    status = Path(path) / "status.json"
    try:
        return json.loads(status.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def score_files(root: str | Path) -> list[Path]:
    """Every run's `scores.jsonl` under `root`, skipping dot folders (a publish's staging
    copies, `.seed_0.new`: see `benchmarks.study_publish.publish_run`)."""
    root = Path(root)
    return [p for p in sorted(root.rglob("scores.jsonl"))
            if not any(part.startswith(".") for part in p.relative_to(root).parts)]


def read_scores(path: str | Path) -> list[Run]:
    """Runs from a score file (.json.gz/.json/.csv), a run directory, or a folder of either."""
    path = Path(path)
    if not path.exists():
        raise ScoreFileError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".csv":
            return read_tdmpc2_csv(path)
        if path.name.endswith((".json.gz", ".json")):
            return _read_official(path)
        if path.name == "scores.jsonl":
            return [read_run_dir(path.parent)]
        raise ScoreFileError(f"{path}: unknown score file type (.json.gz, .json, .csv)")
    if (path / "scores.jsonl").is_file():
        return [read_run_dir(path)]
    runs = [read_run_dir(p.parent) for p in score_files(path)]
    if not runs:  # a folder of published score files (DreamerV3's `scores/`)
        runs = [run for f in sorted(path.glob("*.json*")) if f.name.endswith((".json.gz", ".json"))
                for run in _read_official(f)]
    if not runs:
        runs = [run for csv_path in sorted(path.glob("*.csv")) for run in read_tdmpc2_csv(csv_path)]
    if not runs:
        raise ScoreFileError(f"{path}: holds no run directory (scores.jsonl), no score file "
                             "(.json.gz) and no CSV file")
    return runs
