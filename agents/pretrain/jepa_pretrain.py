"""`jepa-pretrain`: pretrain a ViT encoder on frames (JEPA by default; MAE and a frame
autoencoder as baselines), watching for collapse and acting on it.

Frames come from a random policy in an env (`--source random`), a folder of images/videos
(`folder:DIR`) or an agent run's saved replay (`run:LOGDIR`). They are stored once in
`OUT/frames.npy` (+ `episodes.npy`); rerunning the same command resumes from
`OUT/checkpoint.pt`. Outputs: `encoder.pt` (load with `--encoder jepa:OUT/encoder.pt`),
`metrics.jsonl`, TensorBoard logs in `tb/`, and `collapse.png`.

Collapse is measured every `--diag-every` steps on held-out frames (RankMe, std score, top
eigenvalue share); `--on-collapse` says what happens when it is found
(agents/pretrain/pretrainer.py: roll back to the best state and strengthen the regulariser,
stop, or only warn).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agents.pretrain.frame_sources import (
    PretrainError,
    clip_starts,
    collect_random_frames,
    embed_frames,
    load_folder_frames,
    load_run_frames,
    sample_windows,
)
from agents.pretrain.pretrainer import (
    ACTIONS,
    PRETRAIN_OBJECTIVES,
    CollapseGuard,
    PretrainConfigError,
    Pretrainer,
    build_objective,
)
from agents.run.checkpoint import load_checkpoint, save_checkpoint
from agents.run.cli_args import ArgParser, doc_summary
from agents.run.logger import RunLogger
from agents.run.rundir import atomic_open
from agents.runtime import select_device
from world_models.diagnostics import collapse_metrics, eigen_spectrum
from world_models.vit_jepa import INPUT_NORMS, fit_input_stats, make_config, save_encoder
from world_models.vit_jepa.model import CONTEXTS, REGULARIZERS, TARGET_NORMS, TOKEN_WEIGHTS

# Default budget: 2,000 steps x batch 64; the tiny ViT runs ~1.6 steps/s on one core of this
# machine (two runs side by side), so ~21 minutes.
STEPS, LR = 2000, 1e-3
# Architecture and objective flags added after the first release (issue 34).
LATER_OPTIONS = ("patch", "horizon", "context", "action_cond", "target_norm", "token_weight",
                 "target_layers", "input_norm")


# ----------------------------------------------------------------------------- outputs
def plot_collapse(history: list[dict], spectra: dict[int, list[float]], path: Path) -> None:
    """PNG with the eigenvalue spectrum (first/last diagnostics) and RankMe/std over training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = sorted(int(k) for k in spectra)
    for step in sorted(set(keys[:: max(1, len(keys) // 4)] + [keys[-1]])):
        eig = np.asarray(spectra[step])
        axes[0].semilogy(np.arange(1, len(eig) + 1), np.maximum(eig / eig.sum(), 1e-12),
                         label=f"step {step}")
    axes[0].set(xlabel="eigenvalue rank", ylabel="fraction of variance",
                title="covariance spectrum (held-out)")
    axes[0].legend(fontsize=7)
    steps = [h["step"] for h in history]
    (l1,) = axes[1].plot(steps, [h["collapse/rankme"] for h in history], "b-o", ms=3,
                         label="RankMe")
    for h in history:  # where the collapse guard rolled back or stopped
        if h.get("guard") in ("adapted", "stopped"):
            axes[1].axvline(h["step"], color="k", ls=":", lw=1)
    axes[1].set(xlabel="step", ylabel="RankMe", title="collapse diagnostics (held-out)")
    axes[1].set_ylim(bottom=0)
    ax2 = axes[1].twinx()
    (l2,) = ax2.plot(steps, [h["collapse/std_score"] for h in history], "r-s", ms=3,
                     label="std score")
    (l3,) = ax2.plot(steps, [h["collapse/eig_top1_frac"] for h in history], "g--", ms=3,
                     label="top eigenvalue share")
    ax2.set_ylabel("std score (~1 healthy) / top share")
    ax2.set_ylim(0, 1.1)
    axes[1].legend(handles=[l1, l2, l3], fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="jepa-pretrain", description=doc_summary(__doc__))
    p.add_argument("--env", default="dmc:walker-walk", help="env spec for --source random")
    p.add_argument("--frames", type=int, default=100_000, help="frames to collect/use")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--objective", default="jepa", help=f"{' | '.join(PRETRAIN_OBJECTIVES)}")
    p.add_argument("--preset", default="tiny", help="encoder size: tiny, small, base")
    p.add_argument("--steps", type=int, default=STEPS,
                   help="training steps; 0 writes the untrained encoder (seeded by --seed), "
                        "the random-ViT control for probes and agent runs")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=LR, help="peak learning rate")
    p.add_argument("--frames-per-clip", type=int, default=1, help="1 (images) or 2/4 (tubelets)")
    p.add_argument("--reg", default="sigreg",
                   help=f"JEPA anti-collapse term: {', '.join(REGULARIZERS)}")
    p.add_argument("--reg-weight", type=float, default=None,
                   help="its weight (default: sigreg 0.05; vicreg 1: variance x 1, "
                        "covariance x 1/25)")
    p.add_argument("--patch", type=int, default=8, help="ViT patch size in pixels (8: an 8x8 "
                   "token grid on 64x64 frames; 4: 16x16)")
    p.add_argument("--input-norm", default="center", choices=INPUT_NORMS,
                   help="input pixels: center (x/255 - 0.5), or standardised with the training "
                   "frames' mean and std per channel or per pixel (saved with the encoder)")
    p.add_argument("--horizon", type=int, default=0,
                   help="JEPA: predict the clip this many frames later (0: the same clip)")
    p.add_argument("--context", default="masked",
                   help=f"JEPA with a horizon: {' | '.join(CONTEXTS)} earlier clip")
    p.add_argument("--action-cond", action="store_true",
                   help="JEPA with a horizon: the predictor sees the actions in between")
    p.add_argument("--target-norm", default="layer", help=f"JEPA: {' | '.join(TARGET_NORMS)}")
    p.add_argument("--target-layers", type=int, default=1,
                   help="JEPA: targets averaged over the EMA encoder's last N blocks (data2vec)")
    p.add_argument("--token-weight", default="uniform",
                   help=f"JEPA: {' | '.join(TOKEN_WEIGHTS)} (change: by pixel change over "
                        "the horizon)")
    p.add_argument("--on-collapse", default="adapt", help=f"{' | '.join(ACTIONS)} (see module doc)")
    p.add_argument("--source", default="random", help="random | run:LOGDIR | folder:DIR")
    p.add_argument("--fast-render", action="store_true", help="DMC: shadows/reflections off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch default; 1 is far faster on a busy CPU)")
    p.add_argument("--diag-every", type=int, default=100)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--holdout", type=int, default=512, help="held-out frames for diagnostics")
    return p


def vit_options(args: argparse.Namespace) -> dict:
    """ViTConfig fields from the flags, beside the preset's widths."""
    return {"patch": args.patch, "input_norm": args.input_norm}


def jepa_options(args: argparse.Namespace, action_dim: int = 1) -> dict:
    """JEPAConfig fields from the flags (`action_dim`: the data's action size)."""
    return {"horizon": args.horizon, "context": args.context,
            "action_dim": action_dim if args.action_cond else 0,
            "target_norm": args.target_norm, "token_weight": args.token_weight,
            "target_layers": args.target_layers}


def _get_frames(args: argparse.Namespace, out: Path
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frames, episode ids and actions (None where the source has none), stored in `out`."""
    fpath, epath, apath = out / "frames.npy", out / "episodes.npy", out / "actions.npy"
    if fpath.is_file() and epath.is_file():
        actions = np.load(apath) if apath.is_file() else None
        return np.load(fpath, mmap_mode="r"), np.load(epath), actions
    kind, _, target = args.source.partition(":")
    if kind == "random":
        opts = {"fast_render": True} if args.fast_render and args.env.startswith("dmc:") else {}
        data = collect_random_frames(args.env, args.frames, args.seed, **opts)
    elif kind == "folder" and target:
        data = load_folder_frames(target, limit=args.frames)
    elif kind == "run" and target:
        data = load_run_frames(target, limit=args.frames)
    else:
        raise PretrainError(f"--source {args.source!r}; allowed: random, run:LOGDIR, folder:DIR")
    saved = [(epath, data["episodes"]), (fpath, data["frames"])]
    if "actions" in data:  # before the frames: frames.npy present means all are written
        saved.insert(0, (apath, data["actions"]))
    for path, array in saved:
        with atomic_open(path) as f:
            np.save(f, array)
    return np.load(fpath, mmap_mode="r"), data["episodes"], data.get("actions")


def check_args(args: argparse.Namespace) -> None:
    """Bad flags fail before any frame is collected or file written."""
    if args.steps < 0 or args.batch < 1 or args.frames < 1:
        raise PretrainError(f"--steps {args.steps}, --batch {args.batch}, --frames "
                            f"{args.frames}: --steps must be >= 0 (0: the untrained "
                            "encoder), --batch and --frames positive")
    if args.batch < 2:
        raise PretrainError(f"--batch {args.batch}; needs >= 2 (the regulariser works on "
                            "the batch's distribution)")
    try:  # an unknown preset or a patch that does not tile 64x64 frames names what is allowed
        make_config(args.preset, **vit_options(args))
    except ValueError as err:
        raise PretrainError(str(err)) from None
    set_flags = [f"--{k.replace('_', '-')}" for k in changed_later_options(args)
                 if k not in ("patch", "input_norm")]
    if args.objective != "jepa" and set_flags:
        raise PretrainError(f"{', '.join(set_flags)} apply to --objective jepa only, not "
                            f"{args.objective}")
    build_objective(args.objective, make_config(args.preset, **vit_options(args)), args.reg,
                    args.reg_weight, **jepa_options(args))
    if args.action_cond and args.source.startswith("folder:"):
        raise PretrainError("--action-cond needs actions: --source random or run:LOGDIR, "
                            "not a folder of frames")
    CollapseGuard(args.on_collapse)
    kind, _, target = args.source.partition(":")
    if kind not in ("random", "run", "folder") or (kind != "random" and not target):
        raise PretrainError(f"--source {args.source!r}; allowed: random, run:LOGDIR, folder:DIR")
    if kind != "random" and not Path(target).exists():
        raise PretrainError(f"--source {args.source}: {target} does not exist")
    if kind == "random":
        import envs

        envs.parse_spec(args.env)


def _arch_args(args: argparse.Namespace) -> dict:
    base = {"objective": args.objective, "preset": args.preset,
            "frames_per_clip": args.frames_per_clip, "reg": args.reg,
            "reg_weight": args.reg_weight, "on_collapse": args.on_collapse, "steps": args.steps,
            "lr": args.lr, "batch": args.batch}
    # Options added later are recorded only when set, so older checkpoints still resume.
    return {**base, **{k: getattr(args, k) for k in changed_later_options(args)}}


def changed_later_options(args: argparse.Namespace) -> list[str]:
    """The LATER_OPTIONS whose flags differ from their defaults."""
    defaults = build_parser().parse_args(["--out", "-"])
    return [k for k in LATER_OPTIONS if getattr(args, k) != getattr(defaults, k)]


def run(args: argparse.Namespace) -> dict:
    """Pretrain as the CLI does; returns the final diagnostics."""
    from tqdm import tqdm

    check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device, _ = select_device(args.device)
    torch.manual_seed(args.seed)
    frames, episodes, actions = _get_frames(args, out)
    if args.action_cond and actions is None:
        if args.source == "random":  # frames cached by a version that kept no actions
            raise PretrainError(f"--action-cond: {out / 'frames.npy'} was collected without "
                                "actions; use a new --out or delete frames.npy")
        raise PretrainError(f"--action-cond needs actions; {args.source} stores none")
    n_hold = min(args.holdout, len(frames) // 5)
    train_eps = episodes[: len(frames) - n_hold]
    try:
        vit_cfg = make_config(args.preset, tuple(frames.shape[1:]), args.frames_per_clip,
                              **vit_options(args))
    except ValueError as err:
        raise PretrainError(str(err)) from None
    model = build_objective(args.objective, vit_cfg, args.reg, args.reg_weight,
                            **jepa_options(args, 0 if actions is None else actions.shape[1]))
    fit_input_stats(model, frames[: len(frames) - n_hold])  # a resumed checkpoint's replace them
    model = model.to(device)
    starts = clip_starts(train_eps, model.clip_frames)
    if len(starts) == 0:
        raise PretrainError(
            f"no run of {model.clip_frames} consecutive frames in one episode among "
            f"{len(train_eps)} training frames"
        )
    held = np.ascontiguousarray(frames[len(frames) - n_hold :]) if n_hold > 1 else frames[:64]
    step_actions = actions if model.needs_actions else None
    trainer = Pretrainer(model, args.steps, lr=args.lr)
    guard = CollapseGuard(args.on_collapse)
    ckpt_path = out / "checkpoint.pt"
    start, history, spectra, stopped = 0, [], {}, False
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck["args"] != _arch_args(args):
            raise PretrainError(
                f"{ckpt_path} was written with {ck['args']}, not {_arch_args(args)}; "
                "use the same options or a new --out"
            )
        model.load_state_dict(ck["model"])
        trainer.opt.load_state_dict(ck["opt"])
        guard.load_state_dict(ck["guard"], trainer)
        start, history, spectra, stopped = ck["step"], ck["history"], ck["spectra"], ck["stopped"]
        print(f"resuming from step {start} ({ckpt_path})")
    # metrics.jsonl and TensorBoard events; lines from after the last checkpoint are dropped
    # so a resumed run does not duplicate them.
    logger = RunLogger(out)
    logger.truncate_after(start)
    d = vit_cfg.width

    def diagnose(step: int) -> None:
        z = embed_frames(model.export_encoder(), held, device)
        m = collapse_metrics(z)
        what, found = guard.observe(step, m, d, len(z), trainer)
        spectra[step] = eigen_spectrum(z).tolist()  # int keys survive torch.save
        history.append({"step": step, **m, "guard": what})
        logger.scalars({**m, "collapse/rollbacks": float(guard.adapts)}, step)
        if what in ("adapted", "stopped"):
            tqdm.write(f"collapse at step {step}: {found[0]}; rolled back to the state of step "
                       f"{guard.best['step']}" + (
                           f", regulariser weight now {trainer.reg_weight:g}"
                           if what == "adapted" else ", stopping"))
        plot_collapse(history, spectra, out / "collapse.png")

    def save(step: int) -> None:
        info = {"env": args.env, "source": args.source, "frames": int(len(frames)),
                "steps": step, "objective": args.objective, "preset": args.preset,
                "frames_per_clip": args.frames_per_clip, "seed": args.seed,
                **{k: getattr(args, k) for k in LATER_OPTIONS},
                "rollbacks": guard.adapts, "stopped": stopped,
                **(history[-1] if history else {})}
        save_encoder(out / "encoder.pt", model.export_encoder(), info)
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": trainer.opt.state_dict(),
                                    "step": step, "args": _arch_args(args), "history": history,
                                    "spectra": spectra, "guard": guard.state_dict(trainer),
                                    "stopped": stopped})

    if start == 0:
        diagnose(0)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="jepa-pretrain",
               mininterval=1, disable=None)
    t0, done = time.time(), start
    for step in ([] if stopped else bar):
        # Per-step generator: a resumed run draws the same batches and masks it would have.
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        clip, acts = sample_windows(frames, step_actions, starts, args.batch, model.clip_frames,
                                    gen)
        metrics = trainer.step(step, clip.to(device),
                               gen, None if acts is None else acts.to(device))
        done = step + 1
        if done % 10 == 0 or done == args.steps:
            metrics["perf/steps_per_s"] = (done - start) / max(time.time() - t0, 1e-9)
            logger.scalars(metrics, done)
            bar.set_postfix(loss=f"{metrics['loss/total']:.4f}",
                            rankme=f"{history[-1]['collapse/rankme']:.1f}")
        if done % args.diag_every == 0 or done == args.steps:
            diagnose(done)
            stopped = history[-1]["guard"] == "stopped"
        if stopped or done % args.ckpt_every == 0 or done == args.steps:
            save(done)
        if stopped:
            break
    bar.close()
    if start >= args.steps or (stopped and done == start):
        save(start)
    logger.close()
    final = {k: v for k, v in history[-1].items() if k != "guard"}
    note = f" (stopped by the collapse guard at step {done})" if stopped else ""
    print(f"encoder: {out / 'encoder.pt'}{note} | " + ", ".join(
        f"{k.split('/')[-1]}={v:.3f}" for k, v in final.items() if k != "step"))
    return final


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (PretrainError, PretrainConfigError, ValueError) as e:
        raise SystemExit(f"jepa-pretrain: error: {e}") from None
    finally:
        torch.set_num_threads(threads)  # callers in the same process keep their setting


if __name__ == "__main__":
    main()
