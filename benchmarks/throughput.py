"""Agent throughput: seconds per training update, eager fp32 beside the fast path, against
this machine's arithmetic; parameter counts, policy latency and env steps per second while
collecting with the policy.

    python -m benchmarks.throughput [--rows all|1m-state,12m-pixels,peer-state,...,collect]
        [--modes eager,fast] [--updates 3] [--device auto|cpu|cuda] [--threads 0]
        [--parts] [--malloc keep|system] [--set KEY=VALUE ...]

Updates use synthetic [16, 64] batches (uint8 images, float vectors), so no replay is
involved. Each model row prints one line per mode: `eager` (fp32, no compile) and `fast`
(the run default: `compile=auto`, `precision=auto`, `conv_precision=auto`);
`fast-convfp32` / `fast-convbf16` are the fast path with `conv_precision=fp32` / `bf16`
(fp32 / bf16 conv stacks, where the fast path runs bf16). Columns: GFLOP per
update (matmuls and convs of the forward and backward, counted by torch's FlopCounterMode on
the eager fp32 update), the first update's seconds (the compile warm-up on the fast path),
the steady seconds per update, the achieved GFLOP/s, and that as a share of this machine's
matmul peak measured at the start of the same run (a 2048^3 matmul, fp32 and bf16): how
close an update is to the physical limit.

Rows: the 1m and 12m presets with state (24-d vector, 6-d continuous action,
walker-like) or 64x64x3 pixels, and the model size of the peer implementation
(NM512/dreamerv3-torch: deter 512, hidden 512, 32 x 32 latents, 512 units, CNN depth 32),
also with stride-2 convs as the peer's CNN has (`peer-pixels-strided`). Rows named `jepa-*`
time the JEPA agent (no pixel decoder in the update) at the same size, for the jepa vs
dreamerv3 comparison. `vit-finetune-1m-pixels-strided` replaces the CNN encoder by a
fine-tuned tiny JEPA ViT (`--encoder jepa:PATH --encoder-mode finetune`; random weights,
written to a temporary file). `all` is every row but `peer-state` and the ViT row.
`collect` times `dmc:walker-walk` (state) with 4 envs and the 1m agent's policy. `--set`
applies config overrides to every model row, e.g. `--set model.encoder.strided=true --set
model.decoder.strided=true` to time the strided CNN that the CPU pixel runs use.

The rows and the agents and synthetic batches they are timed on live in
`benchmarks/throughput_rows.py`.

`--parts` adds, for every pixel row, the image encoder (forward and backward over the
batch's B x T uint8 frames) and the image decoder (forward, the image loss, backward) alone,
eager and as the fast path runs them: where a pixel update's time goes. The header names
the CPU and the flags that decide the kernels, and a memory-copy rate beside the matmul
peaks (small-channel convs are bound by memory, not arithmetic).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from agents.compiled import resolve_compile
from agents.dreamerv3 import DreamerV3Agent
from agents.run.cli_args import ArgParser, add_set_arg, doc_summary
from agents.run.config import ConfigError, load_config
from agents.runtime import (
    MALLOC_SETTINGS,
    cpu_flags,
    cpu_has_bf16,
    describe_machine,
    select_device,
    set_malloc,
)
from benchmarks.throughput_rows import (
    ROWS,
    build_agent,
    one_obs,
    synthetic_batch,
)

COLLECT = "collect"
# The CPU flags oneDNN and inductor pick their kernels by (fp32 FMA width, bf16, AMX).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
# `fast-convfp32` / `fast-convbf16`: the fast path with `conv_precision=fp32` / `bf16` (the
# conv stacks in fp32 / bf16 where the fast path's precision is bf16; elsewhere both are
# `fast`), to weigh the two in one run; `fast` has the default (`auto`).
MODES = ("eager", "fast", "fast-convfp32", "fast-convbf16")
CONV_MODES = {"fast-convfp32": "conv_precision=fp32", "fast-convbf16": "conv_precision=bf16"}
DEFAULT_ROWS = ("1m-state", "1m-pixels", "12m-state", "12m-pixels", "peer-pixels",
                "peer-pixels-strided", "jepa-1m-pixels", "jepa-12m-pixels", COLLECT)


class BenchmarkArgError(ValueError):
    """A bad command-line value for the throughput benchmark."""


def parse_rows(text: str) -> list[str]:
    """Comma-separated names of ROWS and `collect`; `all` stands for DEFAULT_ROWS."""
    names = [*ROWS, COLLECT]
    picked = []
    for t in (t.strip() for t in text.split(",")):
        for name in DEFAULT_ROWS if t == "all" else [t] if t else []:
            if name not in picked:
                picked.append(name)
    unknown = [t for t in picked if t not in names]
    if unknown or not picked:
        raise BenchmarkArgError(f"unknown row(s) {unknown or text!r}; allowed: all or "
                                + ", ".join(names))
    return picked


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in MODES for m in modes):
        raise BenchmarkArgError(f"--modes {text!r} unknown; allowed: a comma-separated "
                                f"subset of {', '.join(MODES)}")
    return modes


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall seconds of `fn` over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count(module: torch.nn.Module) -> int:
    """Trainable parameters (the actor-critic's frozen slow critic is not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    """GFLOP/s of an n^3 matmul in `dtype` (best of 5): this machine's arithmetic limit."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = min(timed(lambda: a @ b, 1, 1 if i == 0 else 0, device) for i in range(5))
    return 2 * n**3 / best / 1e9


def copy_bandwidth(device: torch.device, mbytes: int = 256) -> float:
    """GB/s moved by a `mbytes` MB tensor copy (read + write, best of 5)."""
    src = torch.empty(mbytes * 2**18, device=device).uniform_()
    dst = torch.empty_like(src)
    best = min(timed(lambda: dst.copy_(src), 1, 1 if i == 0 else 0, device) for i in range(5))
    return 2 * src.numel() * 4 / best / 1e9


def update_gflop(agent: DreamerV3Agent, batch: dict[str, torch.Tensor]) -> float:
    """Matmul and conv GFLOP of one update (forward and backward), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    data = agent._to_torch(batch)
    with FlopCounterMode(display=False) as counter:
        loss, _, _ = agent.loss(data)
        loss.backward()
    agent.opt.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def mode_sets(mode: str, sets: Sequence[str]) -> list[str]:
    """The config overrides of a mode: `fast-conv*` adds its conv_precision."""
    return [*sets, CONV_MODES[mode]] if mode in CONV_MODES else list(sets)


def bench_row(name: str, args: argparse.Namespace, device: torch.device, mode: str,
              precision: str, compile: bool) -> dict[str, object]:
    row = ROWS[name]
    if mode == "eager":
        precision, compile = "fp32", False
    agent = build_agent(row, device, precision, mode_sets(mode, args.set), compile)
    batch = synthetic_batch(row.pixels, args.batch, args.length)
    first_s = timed(lambda: agent.train(batch), 1, 0, device)
    update_s = timed(lambda: agent.train(batch), args.updates, args.warmup, device)
    _, carry = agent.policy(one_obs(row.pixels, 1, True), None)
    obs = one_obs(row.pixels, 1, False)
    policy_s = timed(lambda: agent.policy(obs, carry), args.policy_calls, 3, device)
    return {"row": name, "agent": row.agent, "size": row.size, "mode": mode,
            "precision": precision, "compiled": compile, "conv_bf16": agent.conv_bf16,
            "obs": "pixels" if row.pixels else "state",
            "wm": count(agent.wm), "ac": count(agent.ac), "first_s": first_s,
            "update_s": update_s, "policy_ms": policy_s * 1000}


def image_parts(agent: DreamerV3Agent, batch: dict[str, torch.Tensor]
                ) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.nn.Parameter]]]:
    """The image encoder and decoder of `agent` as loss functions over the batch's frames,
    each with the parameters whose gradients its backward computes."""
    from world_models.encoders import IMAGE_KEY

    data = agent._to_torch(batch)
    image = data[IMAGE_KEY]
    encoder = agent.wm.encoder
    parts = {"encoder": (lambda: encoder({IMAGE_KEY: image}).square().mean(),
                         [p for p in encoder.parameters() if p.requires_grad])}
    decoder = agent.wm.decoder
    if decoder is not None and IMAGE_KEY in decoder.keys:
        feat = torch.randn(*image.shape[:2], agent.wm.feat_dim, device=image.device,
                           generator=torch.Generator(image.device).manual_seed(0))

        def decode() -> torch.Tensor:  # the update's image loss (`losses`: the phases' form)
            return decoder.losses(feat, data)["rec_image"].mean()

        parts["decoder"] = (decode, [p for p in decoder.parameters() if p.requires_grad])
    return parts


def bench_parts(name: str, args: argparse.Namespace, device: torch.device, mode: str,
                precision: str, compile: bool) -> list[dict[str, object]]:
    """GFLOP and seconds of each image part's forward + backward (see `image_parts`)."""
    from torch.utils.flop_counter import FlopCounterMode

    row = ROWS[name]
    if mode == "eager":
        precision, compile = "fp32", False
    agent = build_agent(row, device, precision, mode_sets(mode, args.set), compile)
    batch = synthetic_batch(True, args.batch, args.length)
    results = []
    for part, (fn, params) in image_parts(agent, batch).items():
        run = torch.compile(fn, dynamic=False) if compile else fn

        def step(run=run, params=params) -> None:
            for p in params:
                p.grad = None
            with agent._amp(batched=False):  # as the world-model loss runs
                loss = run()
            loss.backward()

        with FlopCounterMode(display=False) as counter:
            fn().backward()
        first_s = timed(step, 1, 0, device)
        seconds = timed(step, args.updates, args.warmup, device)
        results.append({"row": name, "part": part, "mode": mode, "precision": precision,
                        "compiled": compile, "conv_bf16": agent.conv_bf16,
                        "gflop": counter.get_total_flops() / 1e9,
                        "first_s": first_s, "update_s": seconds})
    return results


def bench_collect(args: argparse.Namespace, device: torch.device, precision: str
                  ) -> dict[str, float]:
    """Agent steps per second on dmc:walker-walk (state) with the 1m policy vs random."""
    import envs
    from agents.run.collector import Collector, random_policy

    spec = "dmc:walker-walk"
    cfg = load_config(spec, size="1m")
    env = envs.make_vector(spec, args.envs, seed=0, **cfg.env.options.to_dict())
    try:
        agent = DreamerV3Agent(env.single_observation_space, env.single_action_space, cfg,
                               device=device, precision=precision)
        collector = Collector(env)
        rates = {}
        policies = {"policy": lambda obs, carry: agent.policy(obs, carry, mode="train"),
                    "random": random_policy(env.single_action_space, seed=0)}
        for label, policy in policies.items():
            collector.collect(policy, 5)  # warm up workers and the first reset
            start = time.perf_counter()
            collector.collect(policy, args.collect_steps)
            rates[label] = args.collect_steps * args.envs / (time.perf_counter() - start)
        rates["repeat"] = float(env.metadata.get("action_repeat", 1))
    finally:
        env.close()
    return rates


def table_header(args: argparse.Namespace) -> str:
    return (f"| model | agent | obs | world model params | actor-critic params | mode | "
            f"GFLOP / update | first update s | s / update ({args.batch}x{args.length}, "
            f"median of {args.updates}) | GFLOP/s | % fp32 peak | % bf16 peak | "
            "policy ms (batch 1, median) |\n|---|---|---|---:|---:|---|---:|---:|---:|---:|"
            "---:|---:|---:|")


def table_row(r: dict[str, object], peaks: dict[str, float]) -> str:
    return (f"| {r['row']} | {r['agent']} | {r['obs']} | {r['wm'] / 1e6:.2f}M | "
            f"{r['ac'] / 1e6:.2f}M | {mode_label(r)} | {r['gflop']:.1f} | {timing_cells(r, peaks)}"
            f" {r['policy_ms']:.2f} |")


def mode_label(r: dict[str, object]) -> str:
    if r["mode"] == "eager":
        return "eager"
    return (f"fast ({r['precision']}{', compiled' if r['compiled'] else ''}"
            f"{', bf16 convs' if r.get('conv_bf16') else ''})")


def timing_cells(r: dict[str, object], peaks: dict[str, float]) -> str:
    """First-call seconds, steady seconds, GFLOP/s and its share of the fp32 and bf16 peaks
    ('-' where bf16 is emulated: no such peak)."""
    rate = r["gflop"] / r["update_s"]
    bf16 = f"{100 * rate / peaks['bf16']:.0f}%" if peaks["native_bf16"] else "-"
    return (f"{r['first_s']:.2f} | {r['update_s']:.3f} | {rate:.0f} | "
            f"{100 * rate / peaks['fp32']:.0f}% | {bf16} |")


def parts_header(args: argparse.Namespace) -> str:
    return (f"| model | part | mode | GFLOP | first call s | s (fwd + bwd, {args.batch}x"
            f"{args.length} frames, median of {args.updates}) | GFLOP/s | % fp32 peak | "
            "% bf16 peak |\n|---|---|---|---:|---:|---:|---:|---:|---:|")


def parts_row(r: dict[str, object], peaks: dict[str, float]) -> str:
    return (f"| {r['row']} | {r['part']} | {mode_label(r)} | {r['gflop']:.2f} | "
            f"{timing_cells(r, peaks)}")


def machine_line(device: torch.device) -> str:
    """The CPU (or GPU) and the flags that pick the kernels: what a timing ran on."""
    info = describe_machine()
    flags = [f for f in KERNEL_FLAGS if f in cpu_flags()]
    line = f"CPU {info['cpu']} ({info['cores']} cores here), flags: {' '.join(flags) or 'none'}"
    return line + (f"; GPU {info['gpu']}" if device.type == "cuda" else "")


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(description=doc_summary(__doc__))
    parser.add_argument("--rows", default="all",
                        help=f"all or comma-separated: {', '.join([*ROWS, COLLECT])}")
    parser.add_argument("--modes", default="eager,fast",
                        help="comma-separated: eager (fp32, no compile), fast (compile and "
                        "precision auto, the run default), fast-convfp32, fast-convbf16 (fast "
                        "with conv_precision fp32 / bf16)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates per row")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed updates after the first (which is timed on its own)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--policy-calls", type=int, default=20)
    parser.add_argument("--envs", type=int, default=4, help="envs for the collect row")
    parser.add_argument("--collect-steps", type=int, default=100,
                        help="timed vector steps for the collect row")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all")
    parser.add_argument("--malloc", default="keep", choices=MALLOC_SETTINGS,
                        help="the C allocator's setting, as config `malloc` (runs: keep)")
    parser.add_argument("--parts", action="store_true",
                        help="also time each pixel row's image encoder and decoder alone")
    add_set_arg(parser, "config override for every model row (repeatable)", dest="set")
    args = parser.parse_args(argv)
    try:
        rows = parse_rows(args.rows)
        modes = parse_modes(args.modes)
        for key in ("updates", "batch", "length", "policy_calls", "envs", "collect_steps"):
            if getattr(args, key) < 1:
                raise BenchmarkArgError(f"--{key.replace('_', '-')} must be >= 1")
        if args.warmup < 0 or args.threads < 0:
            raise BenchmarkArgError("--warmup and --threads must be >= 0")
        load_config("dmc:walker-walk", size="1m", sets=args.set)  # bad keys fail here
    except (BenchmarkArgError, ConfigError) as e:
        parser.error(str(e))
    device, precision = select_device(args.device, "auto")
    compile = resolve_compile("auto", device)
    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    malloc = args.malloc if set_malloc(args.malloc) else "system"
    print(f"torch {torch.__version__}, device {device}, fast path: {precision}"
          f"{', compiled' if compile else ', not compiled'}; {torch.get_num_threads()} "
          f"threads, malloc {malloc}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other "
          "processes share the CPU)")
    print(machine_line(device))
    # Collection first: it is short, and rows print as they finish, so an interrupted
    # run still reports what it measured.
    if COLLECT in rows:
        rates = bench_collect(args, device, precision)
        print(f"\n| collection: dmc:walker-walk state, {args.envs} envs, repeat "
              f"{rates['repeat']:.0f} | agent steps / s |")
        print("|---|---:|")
        print(f"| 1m DreamerV3 policy (train mode) | {rates['policy']:.0f} |")
        print(f"| uniform random actions | {rates['random']:.0f} |", flush=True)

    models = [name for name in rows if name != COLLECT]
    if not models:
        return
    # Without native bf16 (AVX512-BF16 / AMX) torch emulates it at a few GFLOP/s: a 2048^3
    # product would take minutes, so the emulated peak is measured on 512^3.
    native = device.type == "cuda" or cpu_has_bf16()
    peaks = {"fp32": matmul_peak(torch.float32, device),
             "bf16": matmul_peak(torch.bfloat16, device, 2048 if native else 512),
             "native_bf16": native}
    print(f"\nmatmul peak (this run): fp32 {peaks['fp32']:.0f} GFLOP/s (2048^3), bf16 "
          f"{peaks['bf16']:.0f} GFLOP/s" + (" (2048^3)" if native else
                                          " (512^3, emulated: this CPU has no native bf16)")
          + f"; memory copy {copy_bandwidth(device):.1f} GB/s (256 MB, read + write)")
    if args.set:
        print(f"Every row with {' '.join(args.set)}")
    print("\n" + table_header(args), flush=True)
    for name in models:
        # Counted once per row, on an eager fp32 copy: the same update for every mode.
        gflop = update_gflop(build_agent(ROWS[name], device, "fp32", args.set),
                             synthetic_batch(ROWS[name].pixels, args.batch, args.length))
        for mode in modes:
            r = bench_row(name, args, device, mode, precision, compile)
            print(table_row({**r, "gflop": gflop}, peaks), flush=True)
    pixel_rows = [name for name in models if ROWS[name].pixels]
    if args.parts and pixel_rows:
        print("\nImage parts alone (the encoder's input is uint8 frames; the decoder's "
              "loss is the update's image loss)\n\n" + parts_header(args), flush=True)
        for name in pixel_rows:
            for mode in modes:
                for r in bench_parts(name, args, device, mode, precision, compile):
                    print(parts_row(r, peaks), flush=True)


if __name__ == "__main__":
    main()
