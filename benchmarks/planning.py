"""Actor vs MPPI at the same checkpoints: evaluation return and acting cost.

    python -m benchmarks.planning RUN [RUN...] [--behavior actor --behavior mppi
        --behavior mppi:samples=128,iterations=3 ...] [--episodes 10] [--envs 10]
        [--timing 1,4] [--policy mode|sample] [--compile auto] [--out planning.md]

Every behaviour acts from the run's last checkpoint on the same evaluation seeds (the
episodes are paired: env `i` starts from the same state for every behaviour). `mppi:K=V,...`
replaces settings of the run's `mppi` section. Acting time is milliseconds per policy call
for `--timing` batch sizes (one call acts for every env of the batch), measured over
`--timing-steps` env steps after a warm-up call, one thread; the first call of each batch
size, and with it any compile warm-up, is left out and reported as `warm-up s`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.run.cli_args import ArgParser, emit_table


def parse_behavior(text: str) -> tuple[str, dict[str, Any]]:
    """`mppi:samples=128,iterations=3` -> ("mppi", {"samples": 128, "iterations": 3}), the
    values read as `--set` reads them."""
    from agents.run.config import parse_override

    name, _, rest = text.partition(":")
    return name.strip(), dict(parse_override(item) for item in filter(None, rest.split(",")))


def evaluate(agent, cfg, episodes: int, envs: int, mode: str) -> list[float]:
    """Returns of `episodes` evaluation episodes on `envs` envs (dreamer-eval's seeds)."""
    from agents.run.collector import Collector
    from agents.run.train import make_eval_env

    env = make_eval_env(cfg, envs, cfg.seed + 20_000, False, agent.obs_space)
    try:
        policy = lambda obs, carry: agent.policy(obs, carry, mode=mode)
        records, _ = Collector(env).run_episodes(policy, episodes)
    finally:
        env.close()
    return [float(r["return"]) for r in records]


def acting_ms(agent, cfg, batch: int, steps: int, mode: str) -> tuple[float, float]:
    """(ms per policy call at `batch` envs over `steps` env steps, seconds of the first call)."""
    from agents.run.collector import ActingClock, Collector
    from agents.run.train import make_eval_env

    env = make_eval_env(cfg, batch, cfg.seed + 30_000, False, agent.obs_space)
    clock = ActingClock(lambda obs, carry: agent.policy(obs, carry, mode=mode))
    try:
        Collector(env).collect(clock, steps + 1)  # no replay: nothing is stored
    finally:
        env.close()
    return clock.ms_per_step(), clock.warmup_s


def table(rows: Sequence[dict[str, Any]], timing: Sequence[int]) -> str:
    head = ["task", "updates", "behavior", "episodes", "return mean", "std", "min", "max"]
    head += [f"ms/step b{b}" for b in timing] + ["warm-up s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        stats = (np.mean, np.std, np.min, np.max) if r["returns"] else ()
        cells = [r["task"], str(r["updates"]), r["behavior"], str(len(r["returns"]))]
        cells += [f"{f(r['returns']):.1f}" for f in stats] or ["-"] * 4
        cells += [f"{r['ms'][b]:.1f}" for b in timing] + [f"{r['warmup']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(prog="python -m benchmarks.planning",
                  description="Actor vs MPPI at the same checkpoints: return and acting cost.")
    p.add_argument("runs", nargs="+", help="run directories written by dreamer-run")
    p.add_argument("--behavior", action="append", default=[],
                   help="actor | mppi[:KEY=VALUE,...] (repeat; default: actor and mppi)")
    p.add_argument("--episodes", type=int, default=10, help="0: acting time only")
    p.add_argument("--envs", type=int, default=10, help="envs evaluated at once")
    p.add_argument("--timing", default="1,4", help="batch sizes to time acting at")
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--policy", choices=("mode", "sample"), default="mode")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="off")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    import torch

    from agents.run.inference import load_agent

    torch.set_num_threads(args.threads)
    try:
        behaviors = [parse_behavior(b) for b in args.behavior or ["actor", "mppi"]]
        timing = [int(b) for b in args.timing.split(",") if b.strip()]
    except ValueError as err:  # ConfigError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    mode = "eval" if args.policy == "mode" else "train"
    rows = []
    for run in args.runs:
        try:
            agent, cfg = load_agent(run, device="cpu", compile=args.compile)
        except (ValueError, FileNotFoundError) as err:  # CheckpointError included
            print(f"error: {run}: {str(err).splitlines()[0]}", file=sys.stderr)
            return 2
        for name, settings in behaviors:
            label = name + "".join(f" {k}={v}" for k, v in settings.items())
            agent.set_behavior(name, **settings)
            ms, warm = {}, 0.0
            for b in timing:
                ms[b], first = acting_ms(agent, cfg, b, args.timing_steps, mode)
                warm = max(warm, first)
            returns = evaluate(agent, cfg, args.episodes, args.envs, mode) if args.episodes else []
            rows.append({"task": cfg.env.spec, "updates": agent.step, "behavior": label,
                         "returns": returns, "ms": ms, "warmup": warm, "run": str(run)})
            print(f"{Path(run).name} {label}: returns {', '.join(f'{x:.0f}' for x in returns)}; "
                  f"ms/step {ms}", file=sys.stderr, flush=True)
    emit_table(table(rows, timing), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
