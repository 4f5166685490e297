"""The run directory: the one place that knows its file names, and how files in it are
written so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

CONFIG = "config.yaml"
STATUS = "status.json"
COMPLETE = "complete"  # written into a checkpoint folder once everything else is
METRICS = "metrics.jsonl"
SCORES = "scores.jsonl"
EVAL_SCORES = "eval_scores.jsonl"
MACHINES = "machines.jsonl"  # one line per (re)start: the machine each part of a run used
VIDEOS = "videos"
CHECKPOINT = "checkpoint"
AGENT_FILE = "agent.pt"
REPLAY = "replay"


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on a clean exit it is fsynced and renamed over `path`,
    on an error it is removed, so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to `path` atomically (see `atomic_open`)."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


class RunDir:
    """Layout of one training run: config, logs, videos and the checkpoint folders. A
    checkpoint is written whole into `checkpoint.tmp`, then swapped in as `checkpoint`; the
    one before it stays as `checkpoint.prev`, so a corrupt latest one still leaves a
    complete checkpoint behind."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    config = property(lambda self: self.path / CONFIG)
    status = property(lambda self: self.path / STATUS)
    metrics = property(lambda self: self.path / METRICS)
    scores = property(lambda self: self.path / SCORES)
    eval_scores = property(lambda self: self.path / EVAL_SCORES)
    machines = property(lambda self: self.path / MACHINES)
    videos = property(lambda self: self.path / VIDEOS)
    checkpoint = property(lambda self: self.path / CHECKPOINT)

    def record_machine(self, info: dict) -> None:
        """Append one line to `machines.jsonl`: a run resumed elsewhere says which machine
        made which part of its curve (wall times differ several-fold between CPUs)."""
        line = json.dumps({"time": time.time(), **info})
        with open(self.machines, "a") as f:
            f.write(line + "\n")

    def exists(self) -> bool:
        """Whether a run was started here (it has its config)."""
        return self.config.is_file()

    def checkpoints(self, repair: bool = True) -> list[Path]:
        """Checkpoint folders that hold an agent file, newest first: `checkpoint`, then
        `checkpoint.prev`, then `checkpoint.old` (the name older versions used for it). A
        swap that a crash cut between its two renames (`checkpoint` gone, the new one
        complete in `checkpoint.tmp`) is finished first, unless `repair` is False (a reader
        beside a training run must not rename its folders)."""
        tmp, final = self.path / f"{CHECKPOINT}.tmp", self.path / CHECKPOINT
        if repair and not final.exists() and (tmp / COMPLETE).is_file():
            tmp.rename(final)
        names = (CHECKPOINT, f"{CHECKPOINT}.prev", f"{CHECKPOINT}.old")
        return [self.path / n for n in names if (self.path / n / AGENT_FILE).is_file()]

    def latest_checkpoint(self) -> Path | None:
        """The newest checkpoint folder, or None."""
        found = self.checkpoints()
        return found[0] if found else None

    def write_checkpoint(self, fill: Callable[[Path], None]) -> Path:
        """Have `fill(folder)` write a checkpoint into a fresh temp folder, then swap it in,
        keeping the one it replaces as `checkpoint.prev`."""
        tmp, final, prev = (self.path / f"{CHECKPOINT}{s}" for s in (".tmp", "", ".prev"))
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            fill(tmp)
            # On disk before the marker and the renames: a power loss or a reclaimed VM
            # must not leave a checkpoint that looks whole and holds unwritten replay rows.
            _fsync_tree(tmp)
            (tmp / COMPLETE).touch()  # what tells a whole one from a cut one, see checkpoints
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a full disk keeps what was complete
            raise
        if final.exists():
            shutil.rmtree(prev, ignore_errors=True)
            final.rename(prev)
        tmp.rename(final)
        _fsync_path(self.path)  # the renames themselves
        shutil.rmtree(self.path / f"{CHECKPOINT}.old", ignore_errors=True)
        return final

    @staticmethod
    def find(path: str | os.PathLike) -> tuple[RunDir, Path]:
        """The run directory and agent file for a run directory (its newest checkpoint with
        an agent file: `checkpoint`, else `checkpoint.prev`...), one of its checkpoint
        folders or an agent file; FileNotFoundError (one line) when there is none."""
        path = Path(path)
        if (path / CONFIG).is_file():
            found = RunDir(path).checkpoints(repair=False)
            path = found[0] if found else path
        for file in (path / AGENT_FILE, path):
            if file.is_file():
                folder = file.parent
                is_checkpoint = folder.name == CHECKPOINT or folder.name.startswith(
                    f"{CHECKPOINT}.")
                run = RunDir(folder.parent if is_checkpoint else folder)
                if not run.exists():
                    raise FileNotFoundError(f"no {CONFIG} beside checkpoint {file}")
                return run, file
        raise FileNotFoundError(f"no checkpoint at {path}; expected a run directory containing "
                                f"{CHECKPOINT}/{AGENT_FILE}")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file below `root`, then the folders that name them, to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(folder, name))
        _fsync_path(Path(folder))
