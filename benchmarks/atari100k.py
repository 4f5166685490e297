"""Atari-100k suite: every game x seed as a DreamerV3 run of 400k frames (100k agent steps).

python -m benchmarks.atari100k [--games all|pong,boxing] [--seeds 5] [--frames 400000]
    [--agent dreamerv3] [--address auto] [--cpus-per-run N] [--gpus-per-run G]
    [--out DIR] [--set k=v ...] [--reference FILE_OR_DIR ...]

Runs go to `runs/atari100k` unless `--out` says otherwise; plot them with
`python -m benchmarks.plot runs/atari100k --reference DREAMERV3_SCORES_DIR`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.run.cli_args import ArgParser
from benchmarks.reference_tables import ATARI100K_GAMES
from benchmarks.references import reference_files
from benchmarks.scores import ScoreFileError
from benchmarks.suite import SuiteError, add_common_args, exit_with, suite_main

REPEAT = 4  # frames per agent step (Atari-100k frameskip)


def games_from(text: str) -> list[str]:
    """`all` or a comma-separated list of the 26 Atari-100k games (ale-py snake-case ids)."""
    if text.strip() == "all":
        return list(ATARI100K_GAMES)
    games = [g.strip() for g in text.split(",") if g.strip()]
    unknown = [g for g in games if g not in ATARI100K_GAMES]
    if unknown or not games:
        raise SuiteError(
            f"unknown Atari-100k game(s) {unknown or text!r}; allowed: all or "
            + ", ".join(ATARI100K_GAMES)
        )
    return games


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(
        prog="python -m benchmarks.atari100k",
        description="Run the Atari-100k suite on Ray and aggregate human-normalised scores."
    )
    parser.add_argument("--games", default="all", help="all or comma-separated game ids")
    add_common_args(parser, frames=400_000)
    args = parser.parse_args(argv)
    try:
        envs = [f"atari100k:{game}" for game in games_from(args.games)]
        # Checked now, not after hours of training; a folder becomes its matching files.
        args.reference = [str(f) for f in reference_files(args.reference, ["atari100k"])]
        code = suite_main(args, envs, REPEAT, out="runs/atari100k")
    except (SuiteError, ScoreFileError) as exc:
        parser.error(str(exc))
    exit_with(code)


if __name__ == "__main__":
    main()
