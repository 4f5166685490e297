"""DeepMind Control suites (DreamerV3 v2 protocol, action repeat 2): proprio or vision.

    python -m benchmarks.dmc --suite proprio|vision [--tasks walker-walk,cartpole-balance|all]
        [--seeds 5] [--frames 500000 (vision: 1000000)] [--agent dreamerv3] [--address auto]
        [--out DIR] ...

Proprio runs use state observations (`dmc:walker-walk`), vision runs 64x64 pixels
(`dmc:walker-walk-pixels`); proprio has 18 tasks, vision the same plus two quadruped tasks.
Runs go to `runs/dmc_proprio` or `runs/dmc_vision` unless `--out` says otherwise; plot them
with `python -m benchmarks.plot runs/dmc_proprio --reference DREAMERV3_SCORES_DIR`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.run.cli_args import ArgParser
from benchmarks.reference_tables import DMC_PROPRIO_TASKS, DMC_VISION_TASKS
from benchmarks.references import reference_files
from benchmarks.scores import ScoreFileError, task_id
from benchmarks.suite import SuiteError, add_common_args, exit_with, suite_main

REPEAT = 2  # frames per agent step, as in the published curves
SUITES = {"proprio": DMC_PROPRIO_TASKS, "vision": DMC_VISION_TASKS}


def tasks_from(suite: str, text: str) -> list[str]:
    """Env specs for `all` or comma-separated `domain-task` names of the suite."""
    if suite not in SUITES:
        raise SuiteError(f"unknown DMC suite {suite!r}; allowed: {', '.join(SUITES)}")
    names = {f"{d}-{t}": (d, t) for d, t in SUITES[suite]}
    # DreamerV3-style ids (walker_walk, ball_in_cup_catch) are accepted too.
    aliases = {f"{d}_{t}": f"{d}-{t}" for d, t in SUITES[suite]}
    picked = list(names) if text.strip() == "all" else [t.strip() for t in text.split(",")]
    picked = [aliases.get(t, t) for t in picked if t]
    unknown = [t for t in picked if t not in names]
    if unknown or not picked:
        raise SuiteError(
            f"unknown {suite} task(s) {unknown or text!r}; allowed: all or " + ", ".join(names)
        )
    suffix = "-pixels" if suite == "vision" else ""
    return [f"dmc:{task}{suffix}" for task in picked]


FRAMES = {"proprio": 500_000, "vision": 1_000_000}


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(
        prog="python -m benchmarks.dmc",
        description="Run a DMC suite on Ray and aggregate mean/median returns."
    )
    parser.add_argument("--suite", required=True, choices=sorted(SUITES))
    parser.add_argument("--tasks", default="all", help="all or comma-separated domain-task")
    add_common_args(parser, frames=None)
    args = parser.parse_args(argv)
    if args.frames is None:  # the published budgets: proprio 500k frames, vision 1M
        args.frames = FRAMES[args.suite]
    try:
        envs = tasks_from(args.suite, args.tasks)
        # Checked now, not after hours of training; a folder becomes its matching files.
        args.reference = [str(f) for f in reference_files(
            args.reference, [f"dmc_{args.suite}"], {task_id(e) for e in envs})]
        code = suite_main(args, envs, REPEAT, out=f"runs/dmc_{args.suite}")
    except (SuiteError, ScoreFileError) as exc:
        parser.error(str(exc))
    exit_with(code)


if __name__ == "__main__":
    main()
