"""Frames for encoder pretraining and probing: a random policy in any env with images, a folder
of images or videos, or an agent run's saved replay; plus clip sampling and frame embedding.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".gif", ".avi", ".mov", ".mkv", ".webm"}


class PretrainError(ValueError):
    """Bad command-line input or data for `jepa-pretrain`."""


def collect_random_frames(
    env_spec: str, frames: int, seed: int = 0, physics_info: bool = False, **options
) -> dict[str, np.ndarray]:
    """Run a uniform-random policy; returns `frames` [N, H, W, C] uint8, `episodes` [N],
    `actions` [N, A] float32 (the action taken at each frame, one-hot for a discrete space)
    and, with `physics_info`, `qpos`/`qvel` [N, *] (DMC only)."""
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
    out: dict[str, list] = {"frames": [], "episodes": [], "actions": [], "qpos": [], "qvel": []}
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
            action = env.action_space.sample()
            out["actions"].append(action_vector(env.action_space, action))
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                episode += 1
                obs, info = env.reset()
    finally:
        env.close()
    result = {"frames": np.stack(out["frames"]), "episodes": np.asarray(out["episodes"]),
              "actions": np.stack(out["actions"])}
    if physics_info:
        result["qpos"] = np.stack(out["qpos"]).astype(np.float32)
        result["qvel"] = np.stack(out["qvel"]).astype(np.float32)
    return result


def action_vector(space, action) -> np.ndarray:
    """An env action as a flat float32 vector: one-hot for Discrete, flattened otherwise."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return np.eye(int(space.n), dtype=np.float32)[int(action) - int(space.start)]
    return np.asarray(action, dtype=np.float32).reshape(-1)


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
    """Frames from a run's saved SequenceReplay (the folder holding `sequence_replay.json`)
    and, where it stores actions, the action taken at each frame (the replay keeps the one
    that led to it). `limit` keeps the newest `limit // num_envs` frames of every env's
    stream (at least one each), taken before anything is copied."""
    from replay.sequence import META_FILE, SequenceReplay

    metas = sorted(Path(logdir).rglob(META_FILE))
    if not metas:
        raise PretrainError(f"no saved replay ({META_FILE}) under {str(logdir)!r}")
    meta = json.loads(metas[0].read_text())
    rb = SequenceReplay(meta["capacity"], meta["num_envs"])
    rb.load(metas[0].parent)
    data = rb.chronological()  # [rows, num_envs], oldest first
    if data is None or "image" not in data.keys():
        raise PretrainError(f"replay under {str(logdir)!r} stores no 'image' key")
    if limit is not None:  # every env's newest rows, not the last env's alone
        data = data[-max(1, limit // data.shape[1]):]
    rows = data.shape[0]
    img = data["image"].transpose(0, 1).numpy()  # env-major so each stream is contiguous
    first = data["is_first"].transpose(0, 1).reshape(-1).numpy().astype(bool)
    episodes = np.cumsum(first) + np.repeat(np.arange(img.shape[0]) * rows, rows)
    frames = img.reshape(-1, *img.shape[2:])
    out = {"frames": frames, "episodes": episodes}
    if "action" in data.keys():
        # The action taken at frame t is the one stored with frame t + 1 (zero past the last).
        led_to = data["action"].transpose(0, 1).float().numpy()
        taken = np.concatenate([led_to[:, 1:], np.zeros_like(led_to[:, :1])], axis=1)
        out["actions"] = taken.reshape(-1, taken.shape[-1])
    return out


def clip_starts(episodes: np.ndarray, length: int) -> np.ndarray:
    """Indices i where frames i..i+length-1 lie in one episode."""
    n = len(episodes) - length + 1
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    same = episodes[:n] == episodes[length - 1 :]
    return np.nonzero(same)[0]


def sample_windows(frames: np.ndarray, actions: np.ndarray | None, starts: np.ndarray,
                   batch: int, length: int, gen: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clips [B, length, H, W, C] uint8 from random valid starts and, given `actions` [N, A],
    the actions between their frames [B, length - 1, A]."""
    pick = starts[torch.randint(len(starts), (batch,), generator=gen).numpy()]
    idx = pick[:, None] + np.arange(length)[None]
    clip = torch.from_numpy(np.array(frames[idx]))
    if actions is None:
        return clip, None
    return clip, torch.from_numpy(np.asarray(actions[idx[:, :-1]], dtype=np.float32))


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
