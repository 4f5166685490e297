"""Run-directory logging: JSONL metrics and scores, TensorBoard, mp4 videos, status, progress."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from agents.run.rundir import EVAL_SCORES, METRICS, SCORES, STATUS, VIDEOS, atomic_write


def _scalar(value: Any) -> Any:
    """Plain Python number from a float/int/numpy/0-dim tensor value."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    return float(value)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _repair_tail(path: Path) -> None:
    """Drop a half-written last line (a crash mid-write) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)


class RunLogger:
    """Writes a run's metrics.jsonl, scores.jsonl, eval_scores.jsonl, TensorBoard events,
    videos/ and status.json into ``logdir``; appends, so a resumed run continues its files."""

    def __init__(self, logdir: str | os.PathLike, tensorboard: bool = True) -> None:
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.tensorboard = tensorboard
        self._writer: Any = None
        self._purge_step: int | None = None
        self._status: dict[str, Any] = {}
        for name in (METRICS, SCORES, EVAL_SCORES):
            _repair_tail(self.logdir / name)

    @property
    def writer(self) -> Any:
        """The TensorBoard SummaryWriter, created on first use (None if disabled)."""
        if self._writer is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

            self._writer = SummaryWriter(str(self.logdir), purge_step=self._purge_step)
        return self._writer

    def _append(self, name: str, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, default=_json_default)
        with open(self.logdir / name, "a") as f:
            f.write(line + "\n")

    def scalars(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log namespaced scalars (``loss/dyn``, ``perf/fps``...) at agent step ``step``."""
        values = {k: _scalar(v) for k, v in metrics.items()}
        self._append(METRICS, {"step": int(step), **values})
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(key, value, int(step))

    def episode(self, record: Mapping[str, Any], eval: bool = False) -> None:
        """Log one finished episode (``step``, ``frames``, ``return``, ``length``, ``time``)."""
        values = {k: _scalar(v) for k, v in record.items()}
        self._append(EVAL_SCORES if eval else SCORES, values)
        if self.writer is not None and "step" in values and "return" in values:
            prefix = "eval_episode" if eval else "episode"
            for key in ("return", "length"):
                if key in values and values[key] is not None:
                    self.writer.add_scalar(f"{prefix}/{key}", values[key], int(values["step"]))

    def video(self, name: str, frames: Any, step: int, fps: int = 15) -> Path:
        """Write ``videos/<name>_<step>.mp4`` from [T, H, W, C] frames (uint8, or float in
        [0, 1]; [T, C, H, W] is accepted too); returns its path."""
        import imageio.v2 as imageio

        video = _channels_last(to_uint8(frames))
        if video.ndim != 4 or video.shape[-1] not in (1, 3):
            raise ValueError(f"video '{name}' needs frames [T, H, W, 1|3], got {video.shape}")
        if video.shape[-1] == 1:
            video = np.repeat(video, 3, axis=-1)
        # yuv420p needs even sides: pad by one black row/column instead of letting ffmpeg rescale.
        pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
        if pad_h or pad_w:
            video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        safe = name.replace("/", "_")
        path = self.logdir / VIDEOS / f"{safe}_{int(step)}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(path, list(video), fps=fps, macro_block_size=2, codec="libx264")
        if self.writer is not None:
            # TensorBoard's add_video needs moviepy, which we do not install: log the clip as
            # a strip of frames (every frame up to 16, else 16 evenly spaced) instead.
            keep = np.linspace(0, len(video) - 1, min(len(video), 16)).round().astype(int)
            strip = np.concatenate(list(video[keep]), axis=1)
            self.writer.add_image(f"videos/{safe}", strip, int(step), dataformats="HWC")
        return path

    def status(self, **fields: Any) -> None:
        """Merge ``fields`` into status.json and rewrite it atomically (readers never see
        a half-written file)."""
        self._status.update({k: _scalar(v) if hasattr(v, "item") else v for k, v in fields.items()})
        self._status["updated"] = time.time()
        text = json.dumps(self._status, indent=1, default=_json_default)
        atomic_write(self.logdir / STATUS, text + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop JSONL lines with ``step`` > ``step`` (written after the checkpoint a resume
        starts from); later TensorBoard events past ``step`` are purged too."""
        for name in (METRICS, SCORES, EVAL_SCORES):
            path = self.logdir / name
            if not path.exists():
                continue
            kept = []
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by the crash
                if not isinstance(record, dict) or record.get("step", -math.inf) <= step:
                    kept.append(line)
            atomic_write(path, "".join(f"{line}\n" for line in kept))
        if self._writer is None:
            self._purge_step = int(step) + 1

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def sync(self) -> None:
        """Put the score and metric logs on disk (fsync): a checkpoint at step S is only
        whole with every row up to S, which a resume keeps (and drops the rows after)."""
        for name in (METRICS, SCORES, EVAL_SCORES):
            path = self.logdir / name
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def to_uint8(frames: Any) -> np.ndarray:
    """Frames as a uint8 numpy array; floats are taken to be in [0, 1]."""
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if frames.dtype == np.bool_:
        return frames.astype(np.uint8) * 255
    return (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _channels_last(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] not in (1, 3) and x.ndim >= 3 and x.shape[-3] in (1, 3):
        x = np.moveaxis(x, -3, -1)
    return x


def open_loop_video(truth: Any, pred: Any, error_gain: float = 2.0) -> np.ndarray:
    """[T, H, 3W, C] uint8 frames: truth | prediction | |error| x ``error_gain``.

    Inputs are [T, H, W, C] (or [B, T, H, W, C], stacked top to bottom; channels-first is
    accepted too), float in [0, 1] or uint8.
    """
    t = _channels_last(to_uint8(truth)).astype(np.float32) / 255.0
    p = _channels_last(to_uint8(pred)).astype(np.float32) / 255.0
    if t.shape != p.shape:
        raise ValueError(f"open_loop_video: truth {t.shape} and prediction {p.shape} differ")
    if t.ndim == 5:  # [B, T, H, W, C] -> [T, B*H, W, C]
        t = np.concatenate(list(t), axis=1)
        p = np.concatenate(list(p), axis=1)
    if t.ndim != 4:
        raise ValueError(f"open_loop_video: expected [T, H, W, C] frames, got {t.shape}")
    err = np.clip(np.abs(t - p) * error_gain, 0.0, 1.0)
    return to_uint8(np.concatenate([t, p, err], axis=2))


class Progress:
    """tqdm bar over agent steps with frames, fps and last return in the postfix. When
    stderr is not a terminal (output sent to a file) the bar turns itself off and a plain
    line is printed every `every` seconds instead."""

    def __init__(
        self,
        total_steps: int,
        initial: int = 0,
        action_repeat: int = 1,
        disable: bool | None = None,
        desc: str = "train",
        every: float = 30.0,
        stream: IO[str] | None = None,
        clock=time.monotonic,
    ) -> None:
        from tqdm.auto import tqdm

        self.action_repeat = action_repeat
        self.total = int(total_steps)
        self.steps = int(initial)
        self.last_return: float | None = None
        self._t0 = time.perf_counter()
        self._s0 = self.steps
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.every = clock, float(every)
        self._last_line = clock()
        self._last_steps = self.steps
        self._rate = 0.0  # agent steps/s over the last interval: a fair ETA after prefill
        # disable=None lets tqdm turn itself off when stderr is not a terminal.
        self.bar = tqdm(
            total=self.total, initial=int(initial), unit="step", desc=desc,
            disable=disable, dynamic_ncols=True, smoothing=0.05, file=self.stream,
        )
        self.desc = desc
        self.plain = self.bar.disable and disable is None  # off because not a terminal

    def line(self) -> str:
        """`train 1200/50000 steps (2400 frames), 310 frames/s, return 12.5, ETA 5m13s`; the ETA
        uses the rate since the previous line, the frames/s the whole run."""
        text = (f"{self.desc} {self.steps}/{self.total} steps "
                f"({self.steps * self.action_repeat} frames), {self.fps:.0f} frames/s")
        if self.last_return is not None:
            text += f", return {self.last_return:.1f}"
        rate = self._rate or self.fps / max(self.action_repeat, 1)
        if rate > 0 and self.steps < self.total:
            eta = int((self.total - self.steps) / rate)
            text += f", ETA {eta // 3600}h{eta % 3600 // 60:02d}m" if eta >= 3600 else \
                f", ETA {eta // 60}m{eta % 60:02d}s"
        return text

    @property
    def fps(self) -> float:
        """Env frames per second since this bar started (action repeat included)."""
        elapsed = time.perf_counter() - self._t0
        return (self.steps - self._s0) * self.action_repeat / elapsed if elapsed > 0 else 0.0

    def update(self, n: int, last_return: float | None = None, **extra: Any) -> None:
        """Advance by ``n`` agent steps; ``extra`` fields go to the postfix."""
        self.steps += int(n)
        if last_return is not None:
            self.last_return = float(last_return)
        if self.bar.disable:
            self.bar.n = self.steps
            now = self.clock()
            if self.plain and (now - self._last_line >= self.every or self.steps >= self.total):
                if now > self._last_line:
                    self._rate = (self.steps - self._last_steps) / (now - self._last_line)
                self._last_line, self._last_steps = now, self.steps
                print(self.line(), file=self.stream, flush=True)
            return
        postfix = {"frames": self.steps * self.action_repeat, "fps": f"{self.fps:.0f}"}
        if self.last_return is not None:
            postfix["return"] = f"{self.last_return:.1f}"
        postfix.update(extra)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(int(n))

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
