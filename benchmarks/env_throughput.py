"""Env throughput: vectorized random-action steps per second for the main env specs.

    python -m benchmarks.env_throughput [--envs 8] [--steps 200] [--cases dmc-state,atari100k]

Prints a table of agent steps/s and env frames/s (agent steps x action repeat) over all
envs of one vector env, after a short warm-up. Numbers are wall-clock on this machine:
run it while nothing else is busy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import envs
from agents.run.cli_args import ArgParser, doc_summary


@dataclass(frozen=True)
class Case:
    """One row of the table: an env spec, its options and how it is vectorized."""

    name: str
    spec: str
    options: dict[str, Any] = field(default_factory=dict)
    asynchronous: bool | None = None


CASES = [
    Case("dmc-state", "dmc:walker-walk"),
    Case("dmc-state-async", "dmc:walker-walk", asynchronous=True),
    Case("dmc-pixels", "dmc:walker-walk", {"obs": "pixels"}),
    Case("dmc-pixels-fast", "dmc:walker-walk", {"obs": "pixels", "fast_render": True}),
    Case("atari100k", "atari100k:pong"),
]


def measure(case: Case, num_envs: int, steps: int, warmup: int = 10) -> dict[str, Any]:
    """Step `case` as a vector env of `num_envs` for `steps` steps; return rates and setup."""
    start = time.perf_counter()
    vec = envs.make_vector(
        case.spec, num_envs, seed=0, asynchronous=case.asynchronous, **case.options
    )
    vec.reset()
    setup = time.perf_counter() - start
    repeat = vec.metadata["action_repeat"]
    actions = [vec.action_space.sample() for _ in range(warmup + steps)]
    for action in actions[:warmup]:
        vec.step(action)
    start = time.perf_counter()
    for action in actions[warmup:]:
        vec.step(action)
    elapsed = time.perf_counter() - start
    kind = type(vec.unwrapped).__name__
    vec.close()
    agent_rate = steps * num_envs / elapsed
    return {
        "case": case.name,
        "vector env": kind,
        "agent steps/s": agent_rate,
        "env frames/s": agent_rate * repeat,
        "ms per vector step": 1000 * elapsed / steps,
        "setup s": setup,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a markdown table."""
    headers = list(rows[0])
    cells = [[_fmt(v) for v in row.values()] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = ArgParser(description=doc_summary(__doc__))
    parser.add_argument("--envs", type=int, default=8, help="envs per vector env")
    parser.add_argument("--steps", type=int, default=200, help="timed vector steps per case")
    names = [c.name for c in CASES]
    parser.add_argument(
        "--cases", default=",".join(names), help=f"comma-separated subset of {names}"
    )
    args = parser.parse_args(argv)
    chosen = args.cases.split(",")
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {names}")
    if args.envs < 1 or args.steps < 1:
        parser.error("--envs and --steps must be >= 1")
    rows = []
    for case in CASES:
        if case.name in chosen:
            rows.append(measure(case, args.envs, args.steps))
            print(f"done: {case.name}", flush=True)
    print(f"\n{args.envs} envs, {args.steps} timed vector steps each, random actions")
    print(format_table(rows))


if __name__ == "__main__":
    main()
