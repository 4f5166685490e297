"""Linear-probe benchmark: do frozen embeddings encode the true physics state, and at what cost?

    python -m benchmarks.probe --env dmc:walker-walk --frames 4000 --steps 500 --seeds 0,1,2

collects frames plus qpos/qvel with a random policy (seeded once: every encoder and seed sees
the same frames), then for each seed trains the encoders named in `--encoders` on the same ViT
with the same loop (agents/pretrain/pretrainer.py) and batch:

- `random`: the ViT at initialisation (no training, 0 CPU-seconds);
- `autoencoder`: whole-frame reconstruction through the pooled embedding;
- `mae`: masked autoencoder (75% of patches hidden, pixels of the hidden ones predicted);
- `jepa`: the `jepa-pretrain` default recipe;
- `jepa-tubelet`: the same on 2-frame clips (tubelet depth 2), embedding frames t-1 and t;
- `jepa:OPTION:...`: JEPA with objective options (those from `horizon` to `reg_weight` are
  also `jepa-pretrain` flags; the EMA, predictor and mask ones are probe-only): `horizon=K`
  (predict the frame K later), `context=full`, `actions` (the predictor sees the actions
  in between), `target_norm=none|center`, `token_weight=change`, `target_layers=L` (targets
  averaged over the last L blocks), `reg=sigreg|vicreg|none` and `reg_weight=W` (the
  anti-collapse term), `ema_start=M` and `ema_end=M` (the target encoder's EMA momentum,
  linear from one to the other over training, or over `ema_stretch=S` times its length;
  both 0 make the target the online encoder under a stop-gradient), `pred_depth=D`
  (predictor blocks), `targets=N` and `target_scale=LO-HI` (the mask: N target blocks,
  each LO-HI of the frame; I-JEPA's 4 and 0.15-0.2), `shared_masks=1` (one mask for the
  whole batch, so the regulariser on the pooled context sees the frames vary, not the
  mask); e.g. `jepa:horizon=2:actions`.

`--patch 4` trains and probes every encoder (random included) with 4x4-pixel patches;
`--input-norm channel|pixel` gives every encoder inputs standardised with the frames' mean
and std per colour channel or per pixel (`center`, the default: x / 255 - 0.5).

`--budget equal-cpu` gives every trained encoder the CPU-seconds JEPA spends in `--steps`
steps (JEPA trains first and its measured CPU-seconds are the budget; each other objective's
steps are that over its CPU-seconds per step from a short timing), so the comparison is at
equal compute; `--budget equal-steps` (default) uses `--steps` for all. CPU-seconds are the
process's CPU time over training (all threads), measured, not estimated.

Ridge probes (`benchmarks/ridge_probe.py`; lambda by an inner grouped cross-validation)
map one embedding to the positions a frame can show (`position_targets`: qpos with
unlimited hinges as sine and cosine, camera-tracked x dropped) and `--stack` consecutive
embeddings, concatenated, to qvel; R^2 (uniform over state dimensions) is cross-validated
over episodes (every episode held out once; contiguous chunks of episodes when there are
fewer than 8). Writes `probe.md` and `probe.json`: per encoder the mean and standard
deviation over seeds. They are rewritten after every encoder, and rerunning with the same
`--out` and settings keeps the rows there (a killed run resumes; more seeds or encoders
add rows). `--merge A,B --out C` joins runs made on separate cores (those files:
`benchmarks/probe_results.py`).

`--pool` says how token features become the probe's input: `mean` (the pooled vector an
agent gets) and/or `grid:G` (tokens averaged over G x G cells of the patch grid and
concatenated, G^2 x width features), which keeps where things are in the frame. Several,
comma-separated, probe the same trained encoders; rows other than `mean` are named
`ENCODER grid:G`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agents.pretrain.frame_sources import clip_starts, collect_random_frames, sample_windows
from agents.pretrain.pretrainer import Pretrainer, build_objective
from agents.run.cli_args import ArgParser, doc_summary
from benchmarks.probe_results import (
    load_results,
    markdown_table,
    merge,
    summarise,
    title,
    write_results,
)
from benchmarks.ridge_probe import ridge_probe, split_groups
from world_models.diagnostics import collapse_metrics
from world_models.vit_jepa import (
    INPUT_NORMS,
    ViT,
    ViTConfig,
    fit_input_stats,
    make_config,
    parse_pool,
    pool_tokens,
    sample_masks,
)

ENCODERS = ("random", "autoencoder", "mae", "jepa", "jepa-tubelet")
# Which objective trains each encoder, on clips of how many frames.
RECIPES = {"autoencoder": ("autoencoder", 1), "mae": ("mae", 1), "jepa": ("jepa", 1),
           "jepa-tubelet": ("jepa", 2)}


def scale_range(text: str) -> tuple[float, float]:
    """`0.3-0.4` -> (0.3, 0.4); one number -> that number twice; ValueError otherwise."""
    lo, sep, hi = text.partition("-")
    return float(lo), float(hi if sep else lo)


# `jepa:` options and the JEPAConfig field each sets (`actions` takes no value).
JEPA_OPTIONS = {"horizon": int, "context": str, "target_norm": str, "token_weight": str,
                "target_layers": int, "reg": str, "reg_weight": float, "ema_start": float,
                "ema_end": float, "ema_stretch": float, "pred_depth": int}
# `jepa:` options of the mask geometry (MaskConfig fields), set on the built model.
MASK_OPTIONS = {"targets": ("num_targets", int), "target_scale": ("target_scale", scale_range),
                "shared_masks": ("shared", lambda v: bool(int(v)))}


def parse_encoder(name: str, action_dim: int = 1) -> tuple[str, int, dict]:
    """(objective, frames per clip, JEPA options) of an `--encoders` name; a bad name or
    option raises ValueError saying what is allowed."""
    if name in RECIPES:
        return (*RECIPES[name], {})
    kind, *opts = name.split(":")
    if kind != "jepa" or not opts:
        raise ValueError(f"encoder {name!r}; allowed: {', '.join(ENCODERS)} or "
                         "jepa:OPTION[:OPTION...]")
    options: dict = {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key == "actions" and not eq:
            options["action_dim"] = action_dim
        elif key in JEPA_OPTIONS | MASK_OPTIONS and eq:
            kind_of = JEPA_OPTIONS.get(key) or MASK_OPTIONS[key][1]
            try:
                options[key] = kind_of(value)
            except ValueError:
                raise ValueError(f"encoder {name!r}: {key}={value!r} is not a number") from None
        else:
            raise ValueError(f"encoder {name!r}: option {opt!r}; allowed: actions, "
                             + ", ".join(f"{k}=..." for k in JEPA_OPTIONS | MASK_OPTIONS))
    return "jepa", 1, options


def position_targets(env_spec: str, qpos: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """qpos [N, nq] as a frame can show it, with a name per column.

    An unlimited hinge becomes the sine and cosine of its angle (a frame shows the angle
    modulo a full turn, and a walker that rolled over twice looks the same as one that did
    not). An unlimited slide along x is dropped: DMC's cameras follow such bodies sideways
    (walker, cheetah and hopper `rootx`), so no frame tells where they are. A free joint
    keeps its height and orientation quaternion, not its x and y.
    """
    from envs.dmc import suite  # imported after the GL backend is chosen

    domain, _, task = env_spec.split(":", 1)[1].partition("-")
    model = suite.load(domain, task).physics.model
    cols, names = [], []
    for j in range(model.njnt):
        adr, kind, name = (int(model.jnt_qposadr[j]), int(model.jnt_type[j]),
                           model.id2name(j, "joint"))
        limited = bool(model.jnt_limited[j])
        if kind == 0:  # free: x, y, z, quaternion
            cols += [qpos[:, adr + 2 : adr + 7]]
            names += [f"{name}_z"] + [f"{name}_q{i}" for i in range(4)]
        elif kind == 1:  # ball: quaternion
            cols.append(qpos[:, adr : adr + 4])
            names += [f"{name}_q{i}" for i in range(4)]
        elif kind == 2 and not limited and abs(model.jnt_axis[j][0]) > 0.99:
            continue  # unlimited slide along x: the camera follows it
        elif kind == 3 and not limited:
            cols += [np.sin(qpos[:, adr : adr + 1]), np.cos(qpos[:, adr : adr + 1])]
            names += [f"sin_{name}", f"cos_{name}"]
        else:
            cols.append(qpos[:, adr : adr + 1])
            names.append(name)
    return np.concatenate(cols, axis=1), names


def stacked(z: np.ndarray, episodes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate embeddings of frames t-k+1..t (same episode); returns (features, valid t)."""
    starts = clip_starts(episodes, k)
    return np.concatenate([z[starts + i] for i in range(k)], axis=1), starts + k - 1


@torch.no_grad()
def embed_all(vit: ViT, frames: np.ndarray, episodes: np.ndarray, device: torch.device,
              chunk: int = 256, cells: int = 0) -> np.ndarray:
    """Pooled embedding per frame t (`pool_tokens`: mean [N, D] by default); a clip model sees
    frames t-f+1..t (the first frames of an episode repeat its first frame), as an agent
    would feed it."""
    vit.eval()
    n = len(frames)
    out = []
    for i in range(0, n, chunk):
        idx = clip_index(episodes, vit.cfg.frames_per_clip, np.arange(i, min(n, i + chunk)))
        x = torch.from_numpy(np.asarray(frames[idx])).to(device)
        out.append(pool_tokens(vit(x), vit.cfg.grid, cells).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def clip_index(episodes: np.ndarray, fpc: int, t: np.ndarray) -> np.ndarray:
    """Frame indices [len(t), fpc] of the clip ending at each frame t: t-fpc+1..t, the
    episode's first frame repeated where the clip would reach before it."""
    starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])
    first = starts[np.searchsorted(starts, t, side="right") - 1]
    return np.maximum(t[:, None] + np.arange(-fpc + 1, 1)[None], first[:, None])


def build_encoder_model(name: str, data: dict[str, np.ndarray], vit: dict | None = None
                        ) -> torch.nn.Module:
    """The pretraining model of one `--encoders` name for these frames (and their actions);
    `vit`: ViTConfig overrides of every encoder (patch, input_norm), whose input statistics
    come from these frames."""
    objective, fpc, options = parse_encoder(name, data["actions"].shape[1])
    cfg = make_config("tiny", tuple(data["frames"].shape[1:]), fpc, **(vit or {}))
    model = build_jepa_or_baseline(objective, cfg, options)
    fit_input_stats(model, data["frames"])
    return model


def build_jepa_or_baseline(objective: str, cfg: ViTConfig, options: dict) -> torch.nn.Module:
    """`build_objective` with the mask-geometry options applied to the JEPA it builds."""
    mask = {MASK_OPTIONS[k][0]: v for k, v in options.items() if k in MASK_OPTIONS}
    model = build_objective(objective, cfg,
                            **{k: v for k, v in options.items() if k not in MASK_OPTIONS})
    if mask:
        model.mask_cfg = dataclasses.replace(model.mask_cfg, **mask)
    return model


def training_starts(name: str, data: dict[str, np.ndarray], model: torch.nn.Module
                    ) -> np.ndarray:
    """Where the model's training clips may start; a clear error where none fits."""
    starts = clip_starts(data["episodes"], model.clip_frames)
    if len(starts) == 0:
        raise SystemExit(f"probe: error: encoder {name!r} trains on {model.clip_frames} "
                         "consecutive frames; no episode here is that long")
    return starts


def _batch(model: torch.nn.Module, data: dict[str, np.ndarray], starts: np.ndarray, batch: int,
           gen: torch.Generator, device: torch.device) -> tuple:
    clip, acts = sample_windows(data["frames"], data["actions"] if model.needs_actions else None,
                                starts, batch, model.clip_frames, gen)
    return clip.to(device), gen, None if acts is None else acts.to(device)


def cpu_per_step(name: str, data: dict[str, np.ndarray], batch: int, device: torch.device,
                 steps: int = 5, vit: dict | None = None) -> float:
    """CPU-seconds per training step of a throw-away model of this encoder kind."""
    model = build_encoder_model(name, data, vit).to(device)
    trainer = Pretrainer(model, 100)
    gen = torch.Generator().manual_seed(12345)
    batch_args = _batch(model, data, training_starts(name, data, model), batch, gen, device)
    trainer.step(0, *batch_args)  # the first call pays one-off costs
    t0 = time.process_time()
    for s in range(steps):
        trainer.step(s + 1, *batch_args)
    return (time.process_time() - t0) / steps


def train_encoder(name: str, data: dict[str, np.ndarray], steps: int | None, batch: int,
                  lr: float, seed: int, device: torch.device, cpu_budget: float | None = None,
                  vit: dict | None = None) -> tuple[ViT, dict[str, float]]:
    """Train one encoder kind on `data` (frames, episodes, actions); returns (encoder,
    {"steps", "cpu_s"}). With `cpu_budget`, the step count is the budget over this
    objective's measured CPU-seconds per step."""
    if cpu_budget is not None:
        steps = max(1, int(cpu_budget / cpu_per_step(name, data, batch, device, vit=vit)))
    torch.manual_seed(seed)
    model = build_encoder_model(name, data, vit).to(device)
    starts = training_starts(name, data, model)
    trainer = Pretrainer(model, steps, lr=lr)
    t0, w0 = time.process_time(), time.time()
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        m = trainer.step(step, *_batch(model, data, starts, batch, gen, device))
        if (step + 1) % max(1, steps // 5) == 0:
            print(f"  {name} seed {seed}: step {step + 1}/{steps} loss {m['loss/total']:.4f} "
                  f"({time.time() - w0:.0f}s)", flush=True)
    return model.export_encoder(), {"steps": steps, "cpu_s": time.process_time() - t0}


@torch.no_grad()
def token_variance_shares(vit: ViT, frames: np.ndarray, episodes: np.ndarray,
                          device: torch.device, n: int = 256) -> dict[str, float]:
    """Where the variance of the encoder's layer-normed tokens (a JEPA's targets) lies, over
    the clips ending at `n` evenly spaced frames (built as `embed_all` does): a two-way
    split of the sum of squares into `positional` (the per-position mean over frames: what a
    mask token's position alone predicts), `frame` (the per-frame mean over positions: what
    any context token carries) and `local` (the rest: content at one place in one frame,
    what only local evidence predicts). Shares of the total, summing to 1."""
    vit.eval()
    pick = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    x = torch.from_numpy(np.asarray(frames[clip_index(episodes, vit.cfg.frames_per_clip,
                                                      pick)])).to(device)
    z = vit(x).double()
    z = torch.nn.functional.layer_norm(z, z.shape[-1:])  # [n, P, D]
    grand = z.mean((0, 1), keepdim=True)
    by_pos, by_frame = z.mean(0, keepdim=True) - grand, z.mean(1, keepdim=True) - grand
    total = float(((z - grand) ** 2).sum())
    pos = float((by_pos ** 2).sum()) * z.shape[0]
    frame = float((by_frame ** 2).sum()) * z.shape[1]
    return {"positional": pos / total, "frame": frame / total,
            "local": 1.0 - (pos + frame) / total}


def probe_encoder(vit: ViT, data: dict[str, np.ndarray], device: torch.device,
                  stack: int, cells: int = 0) -> dict[str, float]:
    """Held-out R^2 for positions (one embedding; `data["pos"]`, see `position_targets`) and
    qvel (`stack` embeddings), plus RankMe (of the features probed)."""
    groups = split_groups(data["episodes"])
    z = embed_all(vit, data["frames"], data["episodes"], device, cells=cells)
    pos_r2, pos_dims = ridge_probe(z, data["pos"], groups)
    zs, t = stacked(z, data["episodes"], stack)
    vel_r2, vel_dims = ridge_probe(zs, data["qvel"][t], groups[t])
    cm = collapse_metrics(torch.from_numpy(z).float())
    return {"pos_r2": pos_r2, "vel_r2": vel_r2, "rankme": cm["collapse/rankme"],
            "pos_r2_dims": pos_dims, "vel_r2_dims": vel_dims}


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="python -m benchmarks.probe", description=doc_summary(__doc__))
    p.add_argument("--env", default="dmc:walker-walk", help="a dmc:DOMAIN-TASK spec")
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--steps", type=int, default=500, help="JEPA's training steps")
    p.add_argument("--budget", default="equal-steps", choices=["equal-steps", "equal-cpu"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--encoders", default=",".join(ENCODERS),
                   help=f"comma-separated, from {', '.join(ENCODERS)} and jepa:OPTION:...")
    p.add_argument("--patch", type=int, default=8, help="ViT patch size of every encoder")
    p.add_argument("--input-norm", default="center", choices=INPUT_NORMS,
                   help="input scaling of every encoder: center (x/255 - 0.5), or standardised "
                   "with the frames' mean and std per channel or per pixel")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--stack", type=int, default=3, help="frames stacked for the qvel probe")
    p.add_argument("--pool", default="mean",
                   help="comma-separated probe inputs: mean (default) and/or grid:G")
    p.add_argument("--time-limit", type=int, default=None, help="episode length in env frames")
    p.add_argument("--fast-render", action="store_true", help="shadows/reflections off")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the random-policy frames")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch default; 1 is far faster on a busy CPU)")
    p.add_argument("--out", default=None, help="directory for probe.md / probe.json; rows "
                   "already there (same settings) are kept, so rerunning resumes")
    p.add_argument("--merge", default=None, metavar="DIR,DIR,...",
                   help="write one table to --out from these runs' probe.json (same settings); "
                   "trains nothing")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.merge:
        if not args.out:
            raise SystemExit("probe: error: --merge needs --out (where the merged table goes)")
        return merge([d.strip() for d in args.merge.split(",") if d.strip()], args.out)
    threads = torch.get_num_threads()
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        return run(args)
    finally:
        torch.set_num_threads(threads)  # callers in the same process keep their setting


def vit_overrides(args: argparse.Namespace) -> dict:
    """The ViTConfig settings the command line gives every encoder."""
    return {"patch": args.patch, "input_norm": getattr(args, "input_norm", "center")}


def _parse(args: argparse.Namespace) -> tuple[list[str], list[int], dict[str, int]]:
    if not args.env.startswith("dmc:"):
        raise SystemExit(f"probe: error: --env {args.env!r}; only dmc:DOMAIN-TASK has qpos/qvel")
    if args.stack not in (2, 3):
        raise SystemExit(f"probe: error: --stack {args.stack}; allowed: 2, 3")
    names = [n.strip() for n in args.encoders.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"probe: error: --encoders {args.encoders!r}; allowed: "
                         f"{', '.join(ENCODERS)} or jepa:OPTION[:OPTION...]")
    try:
        make_config("tiny", **vit_overrides(args))
    except ValueError as err:
        raise SystemExit(f"probe: error: --patch: {err}") from None
    for name in (n for n in names if n != "random"):
        try:
            objective, fpc, options = parse_encoder(name)
            model = build_jepa_or_baseline(
                objective, make_config("tiny", frames_per_clip=fpc, **vit_overrides(args)),
                options)
            if hasattr(model, "mask_cfg"):  # targets that leave no context fail here, not later
                sample_masks(args.batch, model.vit_cfg.grid, model.mask_cfg, torch.Generator())
        except ValueError as err:
            raise SystemExit(f"probe: error: --encoders: {err}") from None
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise SystemExit(f"probe: error: --seeds {args.seeds!r}; expected integers "
                         "like 0,1,2") from None
    try:
        pools = {p.strip(): parse_pool(p.strip()) for p in args.pool.split(",") if p.strip()}
    except ValueError as err:
        raise SystemExit(f"probe: error: --pool: {err}") from None
    if not pools:
        raise SystemExit("probe: error: --pool is empty; allowed: mean or grid:G")
    return names, seeds, pools


def run(args: argparse.Namespace) -> dict:
    """Collect, train, probe and report as the CLI does; returns the per-encoder summary."""
    names, seeds, pools = _parse(args)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    opts = {"fast_render": args.fast_render}
    if args.time_limit:
        opts["time_limit"] = args.time_limit
    t0 = time.time()
    data = collect_random_frames(args.env, args.frames, args.data_seed, physics_info=True, **opts)
    print(f"collected {len(data['frames'])} frames, {data['episodes'].max() + 1} episodes "
          f"in {time.time() - t0:.0f}s", flush=True)
    data["pos"], pos_names = position_targets(args.env, data["qpos"])
    rows = {(n, p): n if p == "mean" else f"{n} {p}" for n in names for p in pools}
    per_seed = load_results(Path(args.out), args) if args.out else {}
    for row in rows.values():
        per_seed.setdefault(row, [])
    for seed in seeds:
        todo = [n for n in names
                if any(seed not in {r["seed"] for r in per_seed[rows[n, p]]} for p in pools)]
        if len(todo) < len(names):
            print(f"seed {seed}: {', '.join(n for n in names if n not in todo)} kept from "
                  f"{args.out}", flush=True)
        budget = None
        if args.budget == "equal-cpu" and any(n != "random" for n in todo):
            # JEPA's CPU-seconds at --steps set everyone's budget: measured, so JEPA trains
            # first (a 5-step estimate was 25% off at 2,000 steps), or read from its kept row.
            kept = [r["cpu_s"] for r in per_seed.get(rows.get(("jepa", next(iter(pools)))), [])
                    if r["seed"] == seed]
            if "jepa" in todo:
                todo = ["jepa"] + [n for n in todo if n != "jepa"]
            elif kept:
                budget = kept[0]
            else:  # no JEPA row: its estimated cost at --steps
                budget = args.steps * cpu_per_step("jepa", data, args.batch, device,
                                                   vit=vit_overrides(args))
        for name in todo:
            if name == "random":
                torch.manual_seed(seed)
                vit = ViT(make_config("tiny", tuple(data["frames"].shape[1:]),
                                      **vit_overrides(args))).to(device)
                fit_input_stats(vit, data["frames"])
                cost = {"steps": 0, "cpu_s": 0.0}
            else:
                own = budget if name != "jepa" else None  # JEPA sets the budget
                vit, cost = train_encoder(name, data, None if own else args.steps, args.batch,
                                          args.lr, seed, device, own, vit_overrides(args))
                if name == "jepa" and args.budget == "equal-cpu":
                    budget = cost["cpu_s"]
            # The token-variance split does not depend on the pooling: once per encoder.
            shares = token_variance_shares(vit, data["frames"], data["episodes"], device)
            cost = {**cost, **{f"var_{k}": v for k, v in shares.items()}}
            for pool, cells in pools.items():
                row = rows[name, pool]
                per_seed[row] = [r for r in per_seed[row] if r["seed"] != seed]
                per_seed[row].append({"seed": seed, **cost,
                                      **probe_encoder(vit, data, device, args.stack, cells)})
                r = per_seed[row][-1]
                print(f"{row} seed {seed}: pos {r['pos_r2']:.3f} vel {r['vel_r2']:.3f} "
                      f"({r['cpu_s']:.0f} CPU-s)", flush=True)
            if args.out:  # after every encoder: a killed run keeps what it finished
                summary = write_results(Path(args.out), vars(args), pos_names, per_seed)
    if args.out:
        summary = write_results(Path(args.out), vars(args), pos_names, per_seed)
    else:
        summary = summarise(per_seed)
        print(markdown_table(summary, title(vars(args), per_seed)))
    return summary


if __name__ == "__main__":
    main()
