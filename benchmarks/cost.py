"""`dreamer-cost`: what a run will cost before it starts, and on which GPU it fits.

    dreamer-cost --env dmc:walker-walk [--size 12m] [--set KEY=VALUE ...] [--frames 1e6]
                 [--mfu 0.05] [--updates 3] [--gpus FILE]
    dreamer-cost --vit --layers 24 --hidden 1024 --heads 16 --frames-per-clip 16
                 --resolution 224 --patch 16 --tubelet 2 --batch 8 [--params 3e8] [--no-flash]

Agent mode takes `dreamer-run`'s flags, builds the agent on this CPU and prints: parameters
per module; training memory (16 bytes per trained parameter: fp32 weights, gradients and the
optimizer's two moments, the same as Adam in bf16 mixed precision with its fp32 master copy;
2 bytes per parameter for bf16 inference); activation memory **measured** on one update (the
bytes of the tensors autograd saves for backward, each storage counted once, parameters
excluded); replay memory at the configured capacity; GFLOP per update (torch's flop
counter); seconds per update measured here with the run's own compile and precision
settings; and for the frame budget, the number of updates and their time here and on each
GPU of `benchmarks/gpus.yaml` at the model-FLOPs utilisation `--mfu` (printed; small
recurrent models use a few percent of a GPU), with cost and whether the run fits.

ViT mode estimates a transformer encoder (the JEPA ViT, V-JEPA 2-style video encoders) with
the standard activation estimate per layer, s*b*h*(34 + 5*a*s/h) bytes (16-bit activations;
the second term, the attention matrix, disappears with FlashAttention), and `--measure`
compares it with the saved-tensor bytes of our own ViT blocks at a small size on this CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import yaml

from world_models.encoders import EMBED_KEY

GPU_TABLE = Path(__file__).with_name("gpus.yaml")
TRAIN_BYTES_PER_PARAM = 16  # fp32 weights 4 + gradients 4 + two optimizer moments 8
INFER_BYTES_PER_PARAM = 2   # bf16 weights
GB = 1e9


class CostArgError(ValueError):
    """A bad command-line value for dreamer-cost."""


def load_gpus(path: str | Path = GPU_TABLE) -> dict[str, dict]:
    table = yaml.safe_load(Path(path).read_text())
    for name, row in table.items():
        missing = {"memory_gb", "bf16_tflops", "usd_per_hour"} - set(row)
        if missing:
            raise CostArgError(f"GPU table {path}: {name!r} lacks {sorted(missing)}")
    return table


# -- arithmetic (pure functions, tested on worked figures) -----------------------------------
def training_bytes(trained_params: int, frozen_params: int = 0) -> int:
    """Weights, gradients and optimizer state: 16N for trained, 4N (fp32) for frozen ones."""
    return TRAIN_BYTES_PER_PARAM * trained_params + 4 * frozen_params


def vit_tokens(frames: int, resolution: int, patch: int, tubelet: int) -> int:
    """Tokens of a clip: (frames / tubelet) x (resolution / patch)^2."""
    if frames % tubelet or resolution % patch:
        raise CostArgError(f"frames {frames} must divide by tubelet {tubelet} and resolution "
                           f"{resolution} by patch {patch}")
    return (frames // tubelet) * (resolution // patch) ** 2


def vit_params(layers: int, hidden: int) -> int:
    """12 L h^2: attention (4 h^2) and a 4x MLP (8 h^2) per layer; embeddings left out."""
    return 12 * layers * hidden * hidden


def activation_bytes_per_layer(tokens: int, batch: int, hidden: int, heads: int,
                               flash: bool = True) -> float:
    """Korthikanti et al. (2022): s b h (34 + 5 a s / h) bytes per transformer layer with
    16-bit activations; FlashAttention keeps no s x s attention matrix (the second term)."""
    s, b, h, a = tokens, batch, hidden, heads
    return s * b * h * (34 + (0 if flash else 5 * a * s / h))


def vit_memory(layers: int, hidden: int, heads: int, tokens: int, batch: int,
               params: int | None = None, flash: bool = True, overhead: float = 0.1) -> dict:
    """Training memory of a transformer encoder: 16N + L x activations, times 1 + overhead."""
    n = vit_params(layers, hidden) if params is None else int(params)
    act_sample = layers * activation_bytes_per_layer(tokens, 1, hidden, heads, flash)
    states = training_bytes(n)
    total = (states + act_sample * batch) * (1 + overhead)
    return {"params": n, "tokens": tokens, "states_bytes": states,
            "activation_bytes_per_sample": act_sample, "activation_bytes": act_sample * batch,
            "total_bytes": total}


def updates_for(frames: float, repeat: int, train_ratio: float, batch: int, length: int
                ) -> int:
    """Updates in a budget: agent steps x train ratio / replayed steps per update."""
    return int(frames / repeat * train_ratio / (batch * length))


def gpu_projection(gpus: Mapping[str, dict], gflop_per_update: float, updates: int,
                   memory_bytes: float, mfu: float) -> list[dict]:
    """Hours, cost range and fit on each GPU at model-FLOPs utilisation `mfu`."""
    rows = []
    for name, gpu in gpus.items():
        seconds = updates * gflop_per_update * 1e9 / (gpu["bf16_tflops"] * 1e12 * mfu)
        hours = seconds / 3600
        lo, hi = gpu["usd_per_hour"]
        rows.append({"gpu": name, "hours": hours, "usd": (hours * lo, hours * hi),
                     "fits": memory_bytes <= gpu["memory_gb"] * GB,
                     "memory_gb": gpu["memory_gb"]})
    return rows


# -- measurements ---------------------------------------------------------------------------
def saved_tensor_bytes(fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]
                       ) -> tuple[int, torch.Tensor]:
    """Bytes of the tensors autograd saves while `fn()` builds its graph (each storage once,
    the parameters excluded): the activation memory a backward pass needs. Returns
    (bytes, what fn returned)."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in skip and key not in seen:
            seen[key] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out


def module_params(agent) -> dict[str, tuple[int, int]]:
    """(trained, frozen) parameter counts per module of a DreamerV3-family agent."""
    wm, ac = agent.wm, agent.ac
    parts = {"encoder": wm.encoder, "rssm": wm.rssm, "objective": wm.objective,
             "reward": wm.reward, "continue": wm.cont, "actor": ac.policy, "critic": ac.value}
    out = {}
    for name, module in parts.items():
        ps = list(module.parameters())
        if name == "objective":  # its encoder reference (latent objective) is counted above
            own = {id(p) for p in wm.encoder.parameters()}
            ps = [p for p in ps if id(p) not in own]
        out[name] = (sum(p.numel() for p in ps if p.requires_grad),
                     sum(p.numel() for p in ps if not p.requires_grad))
    # The slow critic is an EMA copy: weights only, no gradients or moments.
    out["slow critic"] = (0, sum(p.numel() for p in ac.slow_value.parameters()))
    return out


def replay_bytes_per_step(agent) -> int:
    """Bytes of one stored step: observations, action, reward, flags, stored latents."""
    total = 3 + 4 + 4 * agent.act_dim  # flags, reward, action
    for key, shape in agent.shapes.items():
        total += math.prod(shape) * (1 if key == "image" else 4)
    for shape, dtype in agent.latent_spec().values():
        total += math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return total


def measure_update(agent, batch: dict, updates: int) -> dict[str, float]:
    """Seconds per update with the agent's own settings (after two warm-up updates), then
    GFLOP (flop counter) and activation bytes (saved tensors) of one more update's loss.
    Timed first: once a compiled function has run under the flop counter, dynamo keeps
    running it eager (measured: 0.30 -> 0.57 s per update at 1m)."""
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(2):
        agent.train(batch)  # warm-up (compiles on the fast path)
    t = time.perf_counter()
    for _ in range(updates):
        agent.train(batch)
    seconds = (time.perf_counter() - t) / max(updates, 1)
    data = agent._to_torch(batch)
    start, data = agent._context(data)
    params = [p for group in agent.opt.param_groups for p in group["params"]]
    with FlopCounterMode(display=False) as counter:
        act, (loss, _, _) = saved_tensor_bytes(lambda: agent.loss(data, start), params)
        loss.backward()
    agent.opt.zero_grad(set_to_none=True)
    return {"gflop": counter.get_total_flops() / 1e9, "activation_bytes": float(act),
            "seconds": seconds}


def measure_vit_blocks(hidden: int, layers: int, heads: int, tokens: int, batch: int) -> int:
    """Saved-tensor bytes of our ViT's transformer blocks (bf16 autocast, CPU) on one batch."""
    from world_models.vit_jepa.vit import transformer

    torch.manual_seed(0)
    blocks = transformer(hidden, layers, heads, 4.0).train()
    x = torch.randn(batch, tokens, hidden, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nbytes, out = saved_tensor_bytes(lambda: blocks(x), list(blocks.parameters()))
    out.float().sum().backward()
    return nbytes


# -- command line -----------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    from agents.run.cli_args import ArgParser, run_parser

    p = ArgParser(prog="dreamer-cost", parents=[run_parser()], add_help=False,
                  description="Parameters, memory, FLOPs, time and GPU cost of a dreamer-run "
                  "configuration (same flags), or of a ViT encoder (--vit).")
    p.add_argument("--frames", type=float, default=None,
                   help="env frame budget (default: the config's run.steps x action repeat)")
    p.add_argument("--mfu", type=float, default=0.05,
                   help="model-FLOPs utilisation assumed on GPUs (default 0.05)")
    p.add_argument("--updates", type=int, default=3, help="updates timed here (default 3)")
    p.add_argument("--gpus", default=str(GPU_TABLE), help="GPU table (YAML)")
    vit = p.add_argument_group("ViT mode")
    vit.add_argument("--vit", action="store_true", help="estimate a transformer encoder")
    vit.add_argument("--layers", type=int, default=24)
    vit.add_argument("--hidden", type=int, default=1024)
    vit.add_argument("--heads", type=int, default=16)
    vit.add_argument("--frames-per-clip", type=int, default=16)
    vit.add_argument("--resolution", type=int, default=224)
    vit.add_argument("--patch", type=int, default=16)
    vit.add_argument("--tubelet", type=int, default=2)
    vit.add_argument("--tokens", type=int, default=None, help="tokens (overrides the clip)")
    vit.add_argument("--batch", type=int, default=8)
    vit.add_argument("--params", type=float, default=None, help="parameters (default 12 L h^2)")
    vit.add_argument("--no-flash", action="store_true", help="keep the s x s attention term")
    vit.add_argument("--overhead", type=float, default=0.1, help="extra share (default 0.1)")
    vit.add_argument("--measure", action="store_true",
                     help="also measure our ViT blocks at this size on the CPU (keep it small)")
    return p


def gb(x: float) -> str:
    return f"{x / GB:.2f} GB" if x >= 0.1 * GB else f"{x / 1e6:.1f} MB"


def print_gpus(rows: list[dict], mfu: float, out=print) -> None:
    out(f"\nprojected at MFU {mfu:g} (bf16 dense peak x MFU):")
    out(f"  {'GPU':<10} {'mem':>6} {'fits':>5} {'hours':>9} {'USD':>17}")
    for r in rows:
        lo, hi = r["usd"]
        out(f"  {r['gpu']:<10} {r['memory_gb']:>4} GB {('yes' if r['fits'] else 'no'):>5} "
            f"{r['hours']:>9.3g} {lo:>8.3g}-{hi:<8.3g}")


def vit_main(args: argparse.Namespace, out=print) -> None:
    tokens = args.tokens or vit_tokens(args.frames_per_clip, args.resolution, args.patch,
                                       args.tubelet)
    flash = not args.no_flash
    m = vit_memory(args.layers, args.hidden, args.heads, tokens, args.batch, args.params,
                   flash, args.overhead)
    out(f"ViT: L={args.layers} h={args.hidden} a={args.heads}, {tokens} tokens, "
        f"batch {args.batch}, {m['params'] / 1e6:.0f}M params")
    out(f"  weights+grads+optimizer (16N): {gb(m['states_bytes'])}; bf16 inference weights "
        f"(2N): {gb(INFER_BYTES_PER_PARAM * m['params'])}")
    out(f"  activations per sample ({'FlashAttention' if flash else 'with the s x s term'}): "
        f"{gb(m['activation_bytes_per_sample'])}; at batch {args.batch}: "
        f"{gb(m['activation_bytes'])}")
    out(f"  total with {args.overhead:.0%} overhead: {gb(m['total_bytes'])}")
    fits = [name for name, g in load_gpus(args.gpus).items()
            if m["total_bytes"] <= g["memory_gb"] * GB]
    out(f"  fits on: {', '.join(fits) or 'none of the table (shard or checkpoint it)'}")
    if args.measure:
        measured = measure_vit_blocks(args.hidden, args.layers, args.heads, tokens, args.batch)
        est = {f: args.layers * activation_bytes_per_layer(tokens, args.batch, args.hidden,
                                                           args.heads, f) for f in (True, False)}
        out(f"  measured (our ViT blocks, bf16 autocast, CPU): {gb(measured)}; estimate "
            f"{gb(est[True])} without / {gb(est[False])} with the attention term "
            f"(measured / estimate: {measured / est[True]:.2f} / {measured / est[False]:.2f})")


def agent_main(args: argparse.Namespace, out=print) -> None:
    import envs
    from agents.base import make_agent
    from agents.compiled import resolve_compile
    from agents.run.cli_args import build_config
    from agents.runtime import select_device, set_threads

    cfg = build_config(args)
    set_threads(cfg.threads)
    # The run's own device: a GPU where there is one (train() returns floats, so the timed
    # updates have synchronised).
    device, precision = select_device(cfg.device, cfg.precision)
    probe = envs.make(cfg.env.spec, seed=cfg.seed, **cfg.env.options.to_dict())
    try:
        agent = make_agent(cfg.agent, probe.observation_space, probe.action_space, cfg,
                           device=device, precision=precision,
                           compile=resolve_compile(cfg.compile, device))
        repeat = int(probe.metadata.get("action_repeat", 1))
    finally:
        probe.close()
    params = module_params(agent)
    trained = sum(t for t, _ in params.values())
    frozen = sum(f for _, f in params.values())
    out(f"{cfg.env.spec} {cfg.agent} {cfg.size} ({cfg.env.options.get('obs', '')}): "
        f"{trained / 1e6:.2f}M trained parameters, {frozen / 1e6:.2f}M frozen")
    for name, (t, f) in params.items():
        out(f"  {name:<12} {t:>12,d} trained {f:>12,d} frozen")
    B, T = cfg.replay.batch_size, cfg.replay.batch_length
    batch = batch_for(agent, B, T)  # no stored latents: T steps from zeros
    measured = measure_update(agent, batch, args.updates)
    states = training_bytes(trained, frozen)
    replay = replay_bytes_per_step(agent) * int(cfg.replay.size)
    out(f"memory: weights+grads+optimizer {gb(states)} (16 B/param), activations "
        f"{gb(measured['activation_bytes'])} (measured, batch {B}x{T}), replay {gb(replay)} "
        f"({replay_bytes_per_step(agent)} B/step x {int(cfg.replay.size):,d}, host RAM); "
        f"bf16 inference weights {gb(INFER_BYTES_PER_PARAM * trained)}")
    frames = args.frames or cfg.run.steps * repeat
    n = updates_for(frames, repeat, cfg.run.train_ratio, B, T)
    here = n * measured["seconds"] / 3600
    out(f"update: {measured['gflop']:.1f} GFLOP, {measured['seconds']:.3f} s here "
        f"({device.type}, {precision}, compile {'on' if agent.compiled else 'off'}, "
        f"{torch.get_num_threads()} threads; {measured['gflop'] / measured['seconds']:.0f} "
        f"GFLOP/s)")
    out(f"budget: {frames:,.0f} frames (repeat {repeat}, train ratio {cfg.run.train_ratio:g}) = "
        f"{n:,d} updates: {here:.2f} h here")
    device_bytes = states + measured["activation_bytes"]
    print_gpus(gpu_projection(load_gpus(args.gpus), measured["gflop"], n, device_bytes, args.mfu),
               args.mfu, out)
    out(f"  (fits: weights+grads+optimizer+activations = {gb(device_bytes)}; replay stays in "
        "host RAM)")


def batch_for(agent, B: int, T: int) -> dict:
    """A synthetic [B, T] replay batch with the agent's observation keys and action width
    (and, for a frozen encoder, the embeddings replay keeps)."""
    from benchmarks.throughput_rows import synthetic_batch

    batch = synthetic_batch(False, B, T)
    del batch["vector"]
    g = torch.Generator().manual_seed(1)
    batch["action"] = torch.rand(B, T, agent.act_dim, generator=g) * 2 - 1
    for key, shape in agent.shapes.items():
        if key == "image":
            batch[key] = torch.randint(0, 256, (B, T, *shape), dtype=torch.uint8, generator=g)
        else:
            batch[key] = torch.randn(B, T, *shape, generator=g)
    spec = agent.latent_spec()
    if EMBED_KEY in spec:
        # A frozen encoder's steady state: every replayed frame was embedded once already,
        # so an update reads the stored embeddings and runs no ViT (agents/dreamerv3.py).
        with torch.no_grad():
            image = batch["image"].to(agent.device)
            batch[EMBED_KEY] = agent.wm.encoder.embed_images(image).cpu()
    return batch


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.mfu <= 0 or args.mfu > 1:
            raise CostArgError(f"--mfu {args.mfu} out of range; allowed: > 0 and <= 1")
        if args.vit:
            vit_main(args)
        else:
            if not args.env:
                raise CostArgError("--env is required (or --vit for a transformer estimate)")
            agent_main(args)
    except (CostArgError, ValueError) as err:
        print(f"dreamer-cost: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
