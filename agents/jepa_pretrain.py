"""`jepa-pretrain`: pretrain a JEPA ViT encoder on frames, watching for collapse as it trains.

Frames come from a random policy in an env (`--source random`), a folder of images/videos
(`folder:DIR`) or an agent run's saved replay (`run:LOGDIR`). They are stored once in
`OUT/frames.npy` (+ `episodes.npy`); rerunning the same command resumes from
`OUT/checkpoint.pt`. Outputs: `encoder.pt` (load with `--encoder jepa:OUT/encoder.pt`),
`metrics.jsonl`, TensorBoard logs in `tb/`, and `collapse.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.cli_args import ArgParser
from agents.logger import RunLogger
from agents.rundir import atomic_open
from agents.runtime import select_device
from world_models.diagnostics import check_collapse, collapse_metrics, eigen_spectrum
from world_models.vit_jepa import JEPA, JEPAConfig, make_config, save_encoder

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm"}


class PretrainError(ValueError):
    """Bad command-line input or data for `jepa-pretrain`."""


# ----------------------------------------------------------------------------- frame sources
def collect_random_frames(
    env_spec: str, frames: int, seed: int = 0, physics_info: bool = False, **options
) -> dict[str, np.ndarray]:
    """Run a uniform-random policy; returns `frames` [N, H, W, C] uint8, `episodes` [N] and,
    with `physics_info`, `qpos`/`qvel` [N, *] (DMC only)."""
    import envs

    if env_spec.startswith("dmc:"):
        options.setdefault("obs", "pixels")
        if physics_info:
            options["physics_info"] = True
    env = envs.make(env_spec, seed=seed, **options)
    if "image" not in env.observation_space.spaces:
        env.close()
        raise PretrainError(f"env {env_spec!r} has no image observation; JEPA needs frames")
    env.action_space.seed(seed)
    out: dict[str, list] = {"frames": [], "episodes": [], "qpos": [], "qvel": []}
    episode = 0
    obs, info = env.reset()
    try:
        from tqdm import tqdm

        for _ in tqdm(range(frames), desc=f"collect {env_spec}", leave=False, mininterval=2):
            out["frames"].append(obs["image"])
            out["episodes"].append(episode)
            if physics_info:
                out["qpos"].append(info["qpos"])
                out["qvel"].append(info["qvel"])
            obs, _, terminated, truncated, info = env.step(env.action_space.sample())
            if terminated or truncated:
                episode += 1
                obs, info = env.reset()
    finally:
        env.close()
    result = {"frames": np.stack(out["frames"]), "episodes": np.asarray(out["episodes"])}
    if physics_info:
        result["qpos"] = np.stack(out["qpos"]).astype(np.float32)
        result["qvel"] = np.stack(out["qvel"]).astype(np.float32)
    return result


def _fit_frame(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]  # drop alpha
    if img.dtype != np.uint8:
        img = np.clip(img * (255 if img.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    if img.shape[:2] != size:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return img


def load_folder_frames(
    folder: str | os.PathLike, size: tuple[int, int] = (64, 64), limit: int | None = None
) -> dict[str, np.ndarray]:
    """Frames from images (each subfolder = one episode, sorted by name) and videos (one each)."""
    import imageio.v3 as iio

    root = Path(folder)
    if not root.is_dir():
        raise PretrainError(f"frame folder {str(root)!r} does not exist")
    frames, episodes = [], []
    episode = -1
    last_dir = None
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ext = path.suffix.lower()
        if limit is not None and len(frames) >= limit:
            break
        try:
            if ext in VIDEO_EXTS:
                episode += 1
                for frame in iio.imiter(path):
                    frames.append(_fit_frame(frame, size))
                    episodes.append(episode)
                    if limit is not None and len(frames) >= limit:
                        break
                last_dir = None
            elif ext in IMAGE_EXTS:
                if path.parent != last_dir:
                    episode, last_dir = episode + 1, path.parent
                frames.append(_fit_frame(iio.imread(path), size))
                episodes.append(episode)
        except OSError as e:  # a corrupt file should not kill a long import
            print(f"skipping unreadable {path}: {e}", file=sys.stderr)
    if not frames:
        raise PretrainError(
            f"no images ({', '.join(sorted(IMAGE_EXTS))}) or videos "
            f"({', '.join(sorted(VIDEO_EXTS))}) found under {str(root)!r}"
        )
    return {"frames": np.stack(frames), "episodes": np.asarray(episodes)}


def load_run_frames(logdir: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """Frames from a run's saved SequenceReplay (the folder holding `sequence_replay.json`)."""
    from replay.sequence import _META_FILE, SequenceReplay

    metas = sorted(Path(logdir).rglob(_META_FILE))
    if not metas:
        raise PretrainError(f"no saved replay ({_META_FILE}) under {str(logdir)!r}")
    meta = json.loads(metas[0].read_text())
    rb = SequenceReplay(meta["capacity"], meta["num_envs"])
    rb.load(metas[0].parent)
    rows = rb.steps_per_env
    data = rb.chronological()  # [rows, num_envs], oldest first
    if data is None or "image" not in data.keys():
        raise PretrainError(f"replay under {str(logdir)!r} stores no 'image' key")
    img = data["image"].transpose(0, 1).numpy()  # env-major so each stream is contiguous
    first = data["is_first"].transpose(0, 1).reshape(-1).numpy().astype(bool)
    episodes = np.cumsum(first) + np.repeat(np.arange(img.shape[0]) * rows, rows)
    frames = img.reshape(-1, *img.shape[2:])
    if limit is not None:
        frames, episodes = frames[-limit:], episodes[-limit:]
    return {"frames": frames, "episodes": episodes}


def clip_starts(episodes: np.ndarray, length: int) -> np.ndarray:
    """Indices i where frames i..i+length-1 lie in one episode."""
    n = len(episodes) - length + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    same = episodes[:n] == episodes[length - 1 :]
    return np.nonzero(same)[0]


# ----------------------------------------------------------------------------- training
class JEPATrainer:
    """A JEPA model plus AdamW, warmup-cosine lr and the EMA schedule; one call per step."""

    def __init__(self, model: JEPA, steps: int, lr: float = 1e-3, weight_decay: float = 0.04,
                 warmup_frac: float = 0.05) -> None:
        self.model, self.steps, self.lr = model, steps, lr
        self.warmup = max(1, int(warmup_frac * steps))
        params = [p for n, p in model.named_parameters() if not n.startswith("target.")]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95),
        )

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    def step(self, step: int, clip: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        self.model.train()
        lr = self.lr_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        losses = self.model.loss(clip, gen)
        self.opt.zero_grad(set_to_none=True)
        losses["loss/total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.opt.param_groups[0]["params"], 10.0)
        self.opt.step()
        momentum = self.model.momentum(step, self.steps)
        self.model.update_target(momentum)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update({"train/lr": lr, "train/ema": momentum, "train/grad_norm": float(grad_norm)})
        return out


def sample_clips(frames: np.ndarray, starts: np.ndarray, batch: int, length: int,
                 gen: torch.Generator) -> torch.Tensor:
    """A [B, length, H, W, C] uint8 batch of clips starting at random valid indices."""
    pick = starts[torch.randint(len(starts), (batch,), generator=gen).numpy()]
    idx = pick[:, None] + np.arange(length)[None]
    return torch.from_numpy(np.array(frames[idx]))


@torch.no_grad()
def embed_frames(vit: torch.nn.Module, frames: np.ndarray, device: torch.device,
                 chunk: int = 256) -> torch.Tensor:
    """Mean-pooled embeddings [N, D] of single frames (repeated over the clip, as agents do)."""
    vit.eval()
    fpc = vit.cfg.frames_per_clip
    out = []
    for i in range(0, len(frames), chunk):
        x = torch.from_numpy(np.array(frames[i : i + chunk])).to(device)
        out.append(vit(x.unsqueeze(1).expand(-1, fpc, -1, -1, -1)).mean(1).cpu())
    return torch.cat(out)


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
    p = ArgParser(prog="jepa-pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--env", default="dmc:walker-walk", help="env spec for --source random")
    p.add_argument("--frames", type=int, default=100_000, help="frames to collect/use")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--preset", default="tiny", help="encoder size: tiny, small, base")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--frames-per-clip", type=int, default=1, help="1 (images) or 2/4 (tubelets)")
    p.add_argument("--vicreg", type=float, default=0.0,
                   help="VICReg weight: variance term x C, covariance x C/25 (paper ratio)")
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


def _get_frames(args: argparse.Namespace, out: Path) -> tuple[np.ndarray, np.ndarray]:
    fpath, epath = out / "frames.npy", out / "episodes.npy"
    if fpath.is_file() and epath.is_file():
        return np.load(fpath, mmap_mode="r"), np.load(epath)
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
    for path, array in ((epath, data["episodes"]), (fpath, data["frames"])):
        with atomic_open(path) as f:
            np.save(f, array)
    return np.load(fpath, mmap_mode="r"), data["episodes"]


def check_args(args: argparse.Namespace) -> None:
    """Bad flags fail before any frame is collected or file written."""
    if args.steps < 1 or args.batch < 1 or args.frames < 1:
        raise PretrainError("--steps, --batch and --frames must be positive")
    make_config(args.preset)  # an unknown preset names the allowed ones
    kind, _, target = args.source.partition(":")
    if kind not in ("random", "run", "folder") or (kind != "random" and not target):
        raise PretrainError(f"--source {args.source!r}; allowed: random, run:LOGDIR, folder:DIR")
    if kind != "random" and not Path(target).exists():
        raise PretrainError(f"--source {args.source}: {target} does not exist")
    if kind == "random":
        import envs

        envs.parse_spec(args.env)


def _arch_args(args: argparse.Namespace) -> dict:
    return {"preset": args.preset, "frames_per_clip": args.frames_per_clip,
            "vicreg": args.vicreg, "steps": args.steps, "lr": args.lr, "batch": args.batch}


def run(args: argparse.Namespace) -> dict:
    """Pretrain as the CLI does; returns the final diagnostics."""
    from tqdm import tqdm

    check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device, _ = select_device(args.device)
    torch.manual_seed(args.seed)
    frames, episodes = _get_frames(args, out)
    n_hold = min(args.holdout, len(frames) // 5)
    train_eps = episodes[: len(frames) - n_hold]
    starts = clip_starts(train_eps, args.frames_per_clip)
    if len(starts) == 0:
        raise PretrainError(
            f"no run of {args.frames_per_clip} consecutive frames in one episode among "
            f"{len(train_eps)} training frames"
        )
    held = np.ascontiguousarray(frames[len(frames) - n_hold :]) if n_hold > 1 else frames[:64]
    vit_cfg = make_config(args.preset, tuple(frames.shape[1:]), args.frames_per_clip)
    jcfg = JEPAConfig(vicreg_var=args.vicreg, vicreg_cov=args.vicreg / 25)
    model = JEPA(vit_cfg, jcfg).to(device)
    trainer = JEPATrainer(model, args.steps, lr=args.lr)
    ckpt_path = out / "checkpoint.pt"
    start, history, spectra = 0, [], {}
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck["args"] != _arch_args(args):
            raise PretrainError(
                f"{ckpt_path} was written with {ck['args']}, not {_arch_args(args)}; "
                "use the same options or a new --out"
            )
        model.load_state_dict(ck["model"])
        trainer.opt.load_state_dict(ck["opt"])
        start, history, spectra = ck["step"], ck["history"], ck["spectra"]
        print(f"resuming from step {start} ({ckpt_path})")
    # metrics.jsonl and TensorBoard events; lines from after the last checkpoint are dropped
    # so a resumed run does not duplicate them.
    logger = RunLogger(out)
    logger.truncate_after(start)
    d = vit_cfg.width

    def log(step: int, metrics: dict[str, float]) -> None:
        logger.scalars(metrics, step)

    def diagnose(step: int) -> dict[str, float]:
        z = embed_frames(model.target, held, device)
        m = collapse_metrics(z)
        check_collapse(m, d=d, n=len(z))
        spectra[step] = eigen_spectrum(z).tolist()  # int keys survive torch.save
        history.append({"step": step, **m})
        log(step, m)
        plot_collapse(history, spectra, out / "collapse.png")
        return m

    def save(step: int) -> None:
        info = {"env": args.env, "source": args.source, "frames": int(len(frames)),
                "steps": step, "preset": args.preset, "frames_per_clip": args.frames_per_clip,
                "seed": args.seed, **(history[-1] if history else {})}
        save_encoder(out / "encoder.pt", model.target, info)
        save_checkpoint(ckpt_path, {"model": model.state_dict(), "opt": trainer.opt.state_dict(),
                                    "step": step, "args": _arch_args(args), "history": history,
                                    "spectra": spectra})

    if start == 0:
        diagnose(0)
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="jepa-pretrain",
               mininterval=1, disable=None)
    t0 = time.time()
    for step in bar:
        # Per-step generator: a resumed run draws the same batches and masks it would have.
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        clip = sample_clips(frames, starts, args.batch, args.frames_per_clip, gen).to(device)
        metrics = trainer.step(step, clip, gen)
        done = step + 1
        if done % 10 == 0 or done == args.steps:
            metrics["perf/steps_per_s"] = (done - start) / max(time.time() - t0, 1e-9)
            log(done, metrics)
            bar.set_postfix(loss=f"{metrics['loss/total']:.4f}",
                            rankme=f"{history[-1]['collapse/rankme']:.1f}")
        if done % args.diag_every == 0 or done == args.steps:
            diagnose(done)
        if done % args.ckpt_every == 0 or done == args.steps:
            save(done)
    if start >= args.steps:
        save(args.steps)
    logger.close()
    final = history[-1]
    print(f"encoder: {out / 'encoder.pt'} | " + ", ".join(
        f"{k.split('/')[-1]}={v:.3f}" for k, v in final.items() if k != "step"))
    return final


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    except (PretrainError, ValueError) as e:
        raise SystemExit(f"jepa-pretrain: error: {e}") from None
    finally:
        torch.set_num_threads(threads)  # callers in the same process keep their setting


if __name__ == "__main__":
    main()
