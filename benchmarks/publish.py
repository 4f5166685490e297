"""Keep a finished run's small files under `scores/`, so tables rebuild on a fresh clone.

    python -m benchmarks.publish RUN [RUN ...] [--scores scores] [--method LABEL] [--note TEXT]

RUN is one of our run directories, or an official run converted by `benchmarks.official`.
Each goes to `scores/<benchmark>/<task>/<method>-seed<s>/` with its `config.yaml`,
`scores.jsonl`, `eval_scores.jsonl` and `machines.jsonl` (no checkpoint, replay or video),
and a `run.json` saying what it is: the method label (agent, size, train ratio and learning
rate, and the behaviour, encoder, distractor and action repeat where they are not the
defaults, so runs at different settings stay apart), frames, updates, wall time and machine.
Then `scores/<source>-<benchmark>.json.gz` is rewritten, in DreamerV3's score format, from
every run under `scores/<benchmark>/` (`source` is `dreamjepa` for our agent's runs and
`official` for the official agent's). `python -m benchmarks.plot scores/<benchmark>`
reads them back.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from agents.run.cli_args import ArgParser, doc_summary
from agents.run.config import get_dotted
from agents.run.rundir import CONFIG, EVAL_SCORES, MACHINES, METRICS, SCORES
from benchmarks.references import benchmark_of
from benchmarks.scores import (
    Run,
    ScoreFileError,
    read_run_dir,
    read_status,
    score_files,
    write_scores,
)

__all__ = ["copy_run", "method_label", "publish", "rebuild_score_files", "main"]

RUN_INFO = "run.json"
KEPT = (CONFIG, SCORES, EVAL_SCORES, MACHINES)


def _short(x: float) -> str:
    """`3e-4` for 0.0003, `2.5e-4` for 0.00025, `128` for 128.0: numbers as a method label
    shows them (two significant digits, so settings a sweep tells apart stay apart)."""
    if float(x).is_integer():
        return str(int(x))
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


# Each suite's own action repeat (envs' defaults); a run at another says so in its label.
SUITE_REPEAT = {"dmc": 2, "atari": 4}


def method_label(config: dict[str, Any], base: str) -> str:
    """`dreamjepa:dreamerv3 1m r128 lr3e-4`: who, at which size, train ratio and lr; a run
    that collected its data another way than with the actor says how (`... mppi`), one with
    a pretrained image encoder which and how it trained (`... jepa-encoder-frozen`), one
    with a distractor background which (`... atari`), one at another action repeat than
    its suite's which (`... repeat1`)."""
    size = get_dotted(config, "size")
    ratio = get_dotted(config, "run.train_ratio")
    lr = get_dotted(config, "opt.lr")
    parts = [base]
    if size:
        parts.append(str(size))
    if isinstance(ratio, (int, float)):
        parts.append(f"r{_short(ratio)}")
    if isinstance(lr, (int, float)):
        parts.append(f"lr{_short(lr)}")
    behavior = get_dotted(config, "run.behavior")
    if behavior and behavior != "actor":
        parts.append(str(behavior))
    kind = get_dotted(config, "model.encoder.kind")
    if kind and kind != "cnn":  # jepa:PATH or hf:ID; the path is the machine's, not kept
        mode = get_dotted(config, "model.encoder.mode") or "frozen"
        parts.append(f"{str(kind).split(':')[0]}-encoder-{mode}")
    distractor = get_dotted(config, "env.options.distractor")
    if distractor:  # shapes, atari, atari:eval, video:DIR (the folder is the machine's)
        kind, _, games = str(distractor).partition(":")
        parts.append(_slug(kind if kind == "video" else str(distractor)))
    repeat = get_dotted(config, "env.options.repeat")
    suite = str(get_dotted(config, "env.spec") or "").split(":", 1)[0]
    if isinstance(repeat, int) and repeat != SUITE_REPEAT.get(suite, repeat):
        parts.append(f"repeat{repeat}")
    return " ".join(parts)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")


def _last_metric(run: Path, key: str) -> float | None:
    """The last logged value of `key` in our run's metrics.jsonl."""
    value = None
    path = run / METRICS
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key in row:
                value = row[key]
    return value


def _read_config(run: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load((run / CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ScoreFileError(f"{run}: no readable {CONFIG} ({exc})") from None


def copy_run(run: str | Path, dest: str | Path, label: str, note: str | None = None) -> dict:
    """Copy `run`'s small files into `dest` and write its `run.json` (method `label`, frames,
    updates, wall and CPU seconds, machine); returns that record."""
    run, dest = Path(run), Path(dest)
    curve = read_run_dir(run)  # raises ScoreFileError (one line) when it has no scores
    info: dict[str, Any] = {}
    if (run / RUN_INFO).is_file():
        info = json.loads((run / RUN_INFO).read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (run / name).is_file():
            shutil.copyfile(run / name, dest / name)
        else:  # a republished run's files are its own, not left from the one before
            (dest / name).unlink(missing_ok=True)
    times = [json.loads(line).get("time") for line in (run / SCORES).read_text().splitlines()
             if line.strip()]
    status = read_status(run) or {}
    info.update({
        "method": label,
        "task": curve.task,
        "seed": curve.seed,
        "frames": status.get("frames", float(curve.xs[-1]) if curve.xs.size else 0.0),
        "finished": status.get("finished"),
        "episodes": int(curve.xs.size),
        "updates": status.get("updates", info.get("updates",
                                                  _last_metric(run, "perf/updates"))),
        "wall_s": info.get("wall_s", next((t for t in reversed(times) if t), None)),
        # The training process's CPU-seconds (None: the run began before they were counted).
        "cpu_s": info.get("cpu_s", status.get("cpu_s")),
    })
    if note:
        info["note"] = note
    if not (run / MACHINES).is_file() and "machine" not in info:
        from agents.runtime import describe_machine  # torch: only when it is needed

        info["machine"] = {**describe_machine(), "recorded": "at publish"}
    (dest / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def publish(run: str | Path, scores: str | Path = "scores", method: str | None = None,
            note: str | None = None) -> Path:
    """Copy `run`'s small files under `scores` (see the module doc); returns the new folder."""
    run, scores = Path(run), Path(scores)
    config = _read_config(run)
    curve = read_run_dir(run)  # raises ScoreFileError (one line) when it has no scores
    benchmark = benchmark_of(curve)  # its source is the run directory
    if benchmark is None:
        raise ScoreFileError(f"{run}: {CONFIG} names no env spec")
    info: dict[str, Any] = {}
    if (run / RUN_INFO).is_file():
        info = json.loads((run / RUN_INFO).read_text())
    base = info.get("method") or f"dreamjepa:{config.get('agent') or 'dreamerv3'}"
    label = method or method_label(config, base)
    dest = scores / benchmark / curve.task / f"{_slug(label)}-seed{curve.seed}"
    copy_run(run, dest, label, note)
    rebuild_score_files(scores, benchmark)
    return dest


def rebuild_score_files(scores: str | Path, benchmark: str) -> list[Path]:
    """Rewrite `scores/<source>-<benchmark>.json.gz` from the runs under `scores/<benchmark>`."""
    scores = Path(scores)
    by_source: dict[str, list[Run]] = defaultdict(list)
    for found in score_files(scores / benchmark):
        curve = read_run_dir(found.parent)
        by_source[curve.method.split(":", 1)[0]].append(curve)
    return [write_scores(runs, scores / f"{source}-{benchmark}.json.gz")
            for source, runs in sorted(by_source.items())]


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(prog="python -m benchmarks.publish", description=doc_summary(__doc__))
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--scores", default="scores", help="the scores folder (default scores)")
    parser.add_argument("--method", default=None,
                        help="method label (default: agent, size, train ratio and lr, and "
                             "behaviour, encoder, distractor and repeat where not default)")
    parser.add_argument("--note", default=None,
                        help="what else a reader should know (contention, pauses, ...)")
    args = parser.parse_args(argv)
    try:
        for run in args.runs:
            print(f"{run} -> {publish(run, args.scores, args.method, args.note)}")
    except ScoreFileError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
