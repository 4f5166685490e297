"""Latency of one acting step at batch 1: the PyTorch policy beside its TorchScript and ONNX
Runtime exports (`dreamer-export`), on this CPU.

    python -m benchmarks.export_latency [--run RUN ...] [--rows 1m-state,1m-pixels]
        [--calls 300] [--threads 1]

Without `--run`, fresh agents of the 1m preset (state: 24-d vector, 6-d continuous action;
pixels: 64x64x3, 6-d continuous action) are timed; weights do not change the latency. Each
line: milliseconds per step (median of `--calls` steps after warm-up) for `agent.policy`
eager, `agent.policy` compiled (the fast path), the TorchScript export and the ONNX export
in onnxruntime (one intra-op thread per `--threads`), all with the carry fed back.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from agents.run.cli_args import ArgParser, doc_summary
from agents.run.export import ExportedPolicy, export_policy
from benchmarks.throughput_rows import ROWS, build_agent


def median_ms(step: Callable[[], object], calls: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def agent_obs(agent, n: int = 1) -> dict[str, np.ndarray]:
    """One observation of the agent's own shapes (a run's, whatever its env): random uint8
    images, normal vectors, not an episode start."""
    rng = np.random.default_rng(0)
    obs = {"is_first": np.zeros(n, bool)}
    for key, space in agent.obs_space.spaces.items():
        if key not in agent.shapes:
            continue
        if space.dtype == np.uint8:
            obs[key] = rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
        else:
            obs[key] = rng.normal(size=(n, *space.shape)).astype(np.float32)
    return obs


def policy_ms(agent, calls: int) -> float:
    state = {"carry": None}
    obs = agent_obs(agent)

    def step():
        _, state["carry"] = agent.policy(obs, state["carry"], mode="eval")

    return median_ms(step, calls)


def exported_ms(path: Path, obs: dict, calls: int, threads: int) -> float:
    policy = ExportedPolicy(path, seed=0)
    if policy.session is not None:  # one session per thread count
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        policy.session = onnxruntime.InferenceSession(str(path), options,
                                                      providers=["CPUExecutionProvider"])
    state = {"carry": None}

    def step():
        _, state["carry"] = policy.policy(obs, state["carry"])

    return median_ms(step, calls)


def bench(agent_fn: Callable, calls: int, threads: int) -> dict[str, float]:
    eager = agent_fn(False)
    out = {"eager": policy_ms(eager, calls)}
    out["compiled"] = policy_ms(agent_fn(True), calls)
    obs = agent_obs(eager)
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix in (("torchscript", "pt"), ("onnx", "onnx")):
            path = Path(tmp) / f"policy.{suffix}"
            export_policy(eager, path, fmt, "mode")
            out[fmt] = exported_ms(path, obs, calls, threads)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgParser(prog="python -m benchmarks.export_latency",
                  description=doc_summary(__doc__))
    p.add_argument("--rows", default="1m-state,1m-pixels")
    p.add_argument("--run", action="append", default=[], help="a trained run instead")
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or (not rows and not args.run):
        p.error(f"--rows: {unknown or 'none'} unknown; allowed: {', '.join(ROWS)}")
    if args.calls < 1 or args.threads < 1:
        p.error(f"--calls and --threads must be >= 1, got {args.calls} and {args.threads}")
    torch.set_num_threads(args.threads)
    jobs: list[tuple[str, Callable]] = []
    if args.run:
        from agents.run.inference import load_agent

        def loader(run: str) -> Callable:
            def make(compiled: bool):
                agent, _ = load_agent(run, device="cpu")
                if compiled:
                    from agents.compiled import compile_policy

                    agent._act = compile_policy(agent._act, agent.device)
                return agent
            return make

        jobs = [(run, loader(run)) for run in args.run]
    else:
        for name in rows:
            row = ROWS[name]
            jobs.append((name, lambda c, row=row: build_agent(row, torch.device("cpu"), "fp32",
                                                              compile=c)))
    print(f"acting step at batch 1, ms (median of {args.calls}), {args.threads} thread(s)")
    print(f"{'row':<22} {'eager':>7} {'compiled':>9} {'torchscript':>12} {'onnxruntime':>12}")
    for name, fn in jobs:
        r = bench(fn, args.calls, args.threads)
        print(f"{name:<22} {r['eager']:>7.3f} {r['compiled']:>9.3f} {r['torchscript']:>12.3f} "
              f"{r['onnx']:>12.3f}")


if __name__ == "__main__":
    main()
