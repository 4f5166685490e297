"""Linear-probe benchmark: do frozen embeddings encode the true physics state?

`python -m benchmarks.probe --env dmc:walker-walk --frames 4000 --steps 300 --out DIR`
collects frames plus qpos/qvel with a random policy, trains on the same frames for the same
steps (a) a JEPA encoder and (b) a pixel autoencoder with the same ViT encoder and a conv
decoder, and compares them with (c) the same ViT at random init. Ridge probes (lambda chosen
by grouped cross-validation on training episodes) map one frame's embedding to qpos and three
consecutive embeddings, concatenated, to qvel; R^2 is measured on held-out episodes (or
contiguous chunks when there are fewer than 4 episodes). Writes `probe.md` and `probe.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agents.cli_args import ArgParser
from agents.jepa_pretrain import (
    JEPATrainer,
    clip_starts,
    collect_random_frames,
    embed_frames,
    sample_clips,
)
from world_models.diagnostics import collapse_metrics
from world_models.vit_jepa import JEPA, JEPAConfig, ViT, ViTConfig, make_config

LAMBDAS = np.logspace(-3, 4, 15)


class PixelAutoencoder(nn.Module):
    """The JEPA ViT as encoder, mean-pooled, then a transposed-conv decoder back to the frame."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.encoder = ViT(cfg)
        h, w, c = cfg.image_shape
        self.start = (h // 16, w // 16)
        self.fc = nn.Linear(cfg.width, 128 * self.start[0] * self.start[1])
        layers: list[nn.Module] = []
        chans = [128, 64, 32, 16]
        for cin, cout in zip(chans, chans[1:] + [c]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.SiLU()]
        self.decoder = nn.Sequential(*layers[:-1])  # no activation on the output

    def loss(self, frames: torch.Tensor) -> torch.Tensor:
        """MSE reconstruction of uint8 frames [B, H, W, C] (targets scaled to [-0.5, 0.5])."""
        z = self.encoder(frames.unsqueeze(1)).mean(1)
        x = self.fc(z).view(-1, 128, *self.start)
        target = frames.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return nn.functional.mse_loss(self.decoder(x), target)


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Closed-form ridge weights for already-centred x [N, D], y [N, K]."""
    d = x.shape[1]
    return np.linalg.solve(x.T @ x + lam * len(x) * np.eye(d), x.T @ y)


def r2_per_dim(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 of each target dim (NaN where the target does not vary)."""
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-8, 1 - ss_res / ss_tot, np.nan)


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """Uniform average over target dims of R^2 (dims with no variance skipped)."""
    per = r2_per_dim(y, pred)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def ridge_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, test: np.ndarray,
                folds: int = 4) -> tuple[float, float, list[float]]:
    """Fit on ~test, choose lambda by grouped K-fold CV on train groups.

    Returns (mean test R^2, lambda, per-dim test R^2)."""
    xtr, ytr, gtr = x[~test], y[~test], groups[~test]

    def standardise(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (a - ref.mean(0)) / (ref.std(0) + 1e-6)

    uniq = np.unique(gtr)
    fold_of = {g: i % folds for i, g in enumerate(uniq)}
    fold = np.array([fold_of[g] for g in gtr])
    scores = np.zeros(len(LAMBDAS))
    for f in range(min(folds, len(uniq))):
        tr, va = fold != f, fold == f
        xa, xv = standardise(xtr[tr], xtr[tr]), standardise(xtr[va], xtr[tr])
        ym = ytr[tr].mean(0)
        for i, lam in enumerate(LAMBDAS):
            scores[i] += r2(ytr[va], xv @ ridge_fit(xa, ytr[tr] - ym, lam) + ym)
    lam = float(LAMBDAS[int(np.argmax(scores))])
    ym = ytr.mean(0)
    w = ridge_fit(standardise(xtr, xtr), ytr - ym, lam)
    pred = standardise(x[test], xtr) @ w + ym
    return r2(y[test], pred), lam, r2_per_dim(y[test], pred).tolist()


def split_groups(episodes: np.ndarray, min_groups: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(group id per frame, test mask): episodes, or contiguous chunks if there are few."""
    n_ep = len(np.unique(episodes))
    if n_ep >= 4:
        groups = episodes
    else:
        # Few episodes: cut each into contiguous chunks so held-out data is still unseen time.
        chunk = max(1, len(episodes) // min_groups)
        groups = episodes * (len(episodes) + 1) + np.arange(len(episodes)) // chunk
    uniq = np.unique(groups)
    n_test = max(1, len(uniq) // 4)
    return groups, np.isin(groups, uniq[-n_test:])


def stacked(z: np.ndarray, episodes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate embeddings of frames t-k+1..t (same episode); returns (features, valid t)."""
    starts = clip_starts(episodes, k)
    return np.concatenate([z[starts + i] for i in range(k)], axis=1), starts + k - 1


def train_encoders(frames: np.ndarray, episodes: np.ndarray, cfg: ViTConfig, steps: int,
                   batch: int, lr: float, seed: int, device: torch.device,
                   vicreg: float = 0.0) -> dict[str, ViT]:
    """Train JEPA and the autoencoder on the same frames/steps; add a random-init ViT."""
    torch.manual_seed(seed)
    random_vit = ViT(cfg).to(device)
    jepa = JEPA(cfg, JEPAConfig(vicreg_var=vicreg, vicreg_cov=vicreg / 25)).to(device)
    trainer = JEPATrainer(jepa, steps, lr=lr)
    ae = PixelAutoencoder(cfg).to(device)
    ae_opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=0.04, betas=(0.9, 0.95))
    starts = clip_starts(episodes, 1)
    t0 = time.time()
    for step in range(steps):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = sample_clips(frames, starts, batch, 1, gen).to(device)
        m = trainer.step(step, x, gen)
        for g in ae_opt.param_groups:
            g["lr"] = trainer.lr_at(step)  # same schedule for a fair comparison
        loss = ae.loss(x[:, 0])
        ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        ae_opt.step()
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"step {step + 1}/{steps} jepa {m['loss/total']:.4f} ae {loss.item():.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    return {"jepa": jepa.target, "autoencoder": ae.encoder, "random": random_vit}


def evaluate(encoders: dict[str, ViT], data: dict[str, np.ndarray], device: torch.device,
             stack: int = 3) -> dict[str, dict[str, float]]:
    """Probe R^2 for qpos (1 frame) and qvel (`stack` frames), plus collapse metrics."""
    groups, test = split_groups(data["episodes"])
    results = {}
    for name, vit in encoders.items():
        z = embed_frames(vit, data["frames"], device).numpy().astype(np.float64)
        pos_r2, pos_lam, pos_dims = ridge_probe(z, data["qpos"], groups, test)
        zs, t = stacked(z, data["episodes"], stack)
        vel_r2, vel_lam, vel_dims = ridge_probe(zs, data["qvel"][t], groups[t], test[t])
        cm = collapse_metrics(torch.from_numpy(z[test]).float())
        results[name] = {"qpos_r2": pos_r2, "qvel_r2": vel_r2, "qpos_lambda": pos_lam,
                         "qvel_lambda": vel_lam, "rankme": cm["collapse/rankme"],
                         "std_score": cm["collapse/std_score"], "qpos_r2_dims": pos_dims,
                         "qvel_r2_dims": vel_dims}
    return results


def markdown_table(results: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"### {title}", "", "| encoder | qpos R^2 | qvel R^2 | RankMe | std score |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['qpos_r2']:.3f} | {r['qvel_r2']:.3f} | "
                     f"{r['rankme']:.1f} | {r['std_score']:.2f} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="python -m benchmarks.probe",
                                description=__doc__.splitlines()[0])
    p.add_argument("--env", default="dmc:walker-walk", help="a dmc:DOMAIN-TASK spec")
    p.add_argument("--frames", type=int, default=4000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vicreg", type=float, default=0.0,
                   help="JEPA VICReg weight (variance x C, covariance x C/25)")
    p.add_argument("--stack", type=int, default=3, help="frames stacked for the qvel probe")
    p.add_argument("--time-limit", type=int, default=None, help="episode length in env frames")
    p.add_argument("--fast-render", action="store_true", help="shadows/reflections off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch default; 1 is far faster on a busy CPU)")
    p.add_argument("--out", default=None, help="directory for probe.md / probe.json")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        return run(args)
    finally:
        torch.set_num_threads(threads)  # callers in the same process keep their setting


def run(args: argparse.Namespace) -> dict:
    """Collect, train, probe and report as the CLI does; returns the results dict."""
    if not args.env.startswith("dmc:"):
        raise SystemExit(f"probe: error: --env {args.env!r}; only dmc:DOMAIN-TASK has qpos/qvel")
    if args.stack not in (2, 3):
        raise SystemExit(f"probe: error: --stack {args.stack}; allowed: 2, 3")
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    opts = {"fast_render": args.fast_render}
    if args.time_limit:
        opts["time_limit"] = args.time_limit
    t0 = time.time()
    data = collect_random_frames(args.env, args.frames, args.seed, physics_info=True, **opts)
    print(f"collected {len(data['frames'])} frames, {data['episodes'].max() + 1} episodes "
          f"in {time.time() - t0:.0f}s", flush=True)
    cfg = make_config(args.preset, tuple(data["frames"].shape[1:]))
    encoders = train_encoders(data["frames"], data["episodes"], cfg, args.steps, args.batch,
                              args.lr, args.seed, device, args.vicreg)
    results = evaluate(encoders, data, device, args.stack)
    title = (f"{args.env}: {args.frames} random-policy frames, {args.steps} steps x batch "
             f"{args.batch}, preset {args.preset}, vicreg {args.vicreg}, seed {args.seed}")
    table = markdown_table(results, title)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "probe.md").write_text(table)
        (out / "probe.json").write_text(json.dumps(
            {"config": vars(args), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
