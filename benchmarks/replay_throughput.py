"""Replay throughput: add rate and [B, T] sample latency, in-memory vs memmap storage.

Run: ``python -m benchmarks.replay_throughput`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from tensordict import TensorDict

from agents.run.cli_args import ArgParser, doc_summary
from replay import SequenceReplay


def make_step(num_envs: int, image: int, vector: int, actions: int) -> TensorDict:
    """One random vector-env step in the replay's data convention."""
    return TensorDict(
        {
            "image": torch.randint(0, 256, (num_envs, image, image, 3), dtype=torch.uint8),
            "vector": torch.randn(num_envs, vector),
            "action": torch.randn(num_envs, actions),
            "reward": torch.randn(num_envs),
            "is_first": torch.zeros(num_envs, dtype=torch.bool),
            "is_last": torch.zeros(num_envs, dtype=torch.bool),
            "is_terminal": torch.zeros(num_envs, dtype=torch.bool),
        },
        batch_size=[num_envs],
    )


def bench(replay: SequenceReplay, args: argparse.Namespace) -> dict[str, float]:
    """Fill ``replay`` past capacity, then time sampling; return the figures."""
    steps = [make_step(args.envs, args.image, args.vector, args.actions) for _ in range(16)]
    vector_steps = args.capacity // args.envs + args.capacity // (4 * args.envs)
    replay.add(steps[0])  # first add allocates the storage; keep it out of the timing
    start = time.perf_counter()
    for i in range(vector_steps):
        replay.add(steps[i % len(steps)])
    add_s = time.perf_counter() - start
    for _ in range(3):
        replay.sample(args.batch, args.length)
    start = time.perf_counter()
    for _ in range(args.samples):
        replay.sample(args.batch, args.length)
    sample_s = (time.perf_counter() - start) / args.samples
    return {
        "add_steps_per_s": vector_steps * args.envs / add_s,
        "add_vector_steps_per_s": vector_steps / add_s,
        "sample_ms": sample_s * 1000,
        "samples_per_s": 1 / sample_s,
        "sampled_steps_per_s": args.batch * args.length / sample_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgParser(description=doc_summary(__doc__))
    parser.add_argument("--capacity", type=int, default=40_000, help="total steps stored")
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--image", type=int, default=64, help="image side (HxWx3 uint8)")
    parser.add_argument("--vector", type=int, default=24)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--recency", type=float, default=0.0)
    args = parser.parse_args(argv)
    sizes = ("capacity", "envs", "image", "vector", "actions", "batch", "length", "samples")
    bad = [f"--{k}" for k in sizes if getattr(args, k) < 1]
    if bad or not 0.0 <= args.recency <= 1.0:
        parser.error(f"{', '.join(bad) or '--recency'} out of range: sizes must be >= 1 and "
                     f"--recency in [0, 1]")
    print(
        f"N={args.envs} envs, image {args.image}x{args.image}x3 uint8 + vector {args.vector}, "
        f"capacity {args.capacity} steps (filled past wrap), sample B={args.batch} "
        f"T={args.length}, recency={args.recency}"
    )
    print(f"{'storage':<8} {'add steps/s':>12} {'sample ms':>10} {'samples/s':>10}", end="")
    print(f" {'sampled steps/s':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, directory in (("memory", None), ("memmap", tmp)):
            replay = SequenceReplay(
                args.capacity, args.envs, directory=directory, recency=args.recency, seed=0
            )
            r = bench(replay, args)
            print(
                f"{name:<8} {r['add_steps_per_s']:>12.0f} {r['sample_ms']:>10.1f} "
                f"{r['samples_per_s']:>10.1f} {r['sampled_steps_per_s']:>16.0f}"
            )
            del replay


if __name__ == "__main__":
    main()
