"""Atomic, tagged checkpoints and a SIGINT/SIGTERM/SIGHUP guard that lets a run save before
exiting."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

from agents.run.rundir import atomic_open

FORMAT = "dreamjepa-checkpoint"
VERSION = 1

def _numpy_safe_globals() -> list[Any]:
    """numpy pieces that RNG states and small arrays pickle to. Allowing them keeps
    torch.load's weights_only mode (no arbitrary code) usable for our own files."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    found = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    found += [t for t in vars(getattr(np, "dtypes", object)).values() if isinstance(t, type)]
    return found


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, truncated or not ours."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "time": time.time(), "state": state}
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | os.PathLike, weights_only: bool | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU and return its state.

    ``weights_only=None`` tries torch's safe loader first and falls back to full unpickling
    (our own files only) when the state holds other Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (a write was interrupted?)")
    payload = _load(path, weights_only)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file (no format tag)")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {payload.get('version')!r}; "
            f"this code reads version {VERSION}"
        )
    if not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"checkpoint {path} has no state dict")
    return payload["state"]


def _load(path: Path, weights_only: bool | None) -> Any:
    def fail(e: BaseException, what: str = "is corrupt or truncated") -> CheckpointError:
        lines = str(e).strip().splitlines()
        msg = (lines[0] if lines else "").split(". ")[0][:160]
        return CheckpointError(f"checkpoint {path} {what} ({type(e).__name__}: {msg})")

    if weights_only is not False:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # The safe loader names an unlisted global: not corruption, just richer content.
            if "weights only" not in str(e).lower().replace("_", " "):
                raise fail(e) from None
            if weights_only:
                raise fail(e, "holds objects that weights_only=True refuses") from None
        except Exception as e:
            raise fail(e) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise fail(e) from None


class GracefulExit:
    """Context manager turning the first SIGINT/SIGTERM/SIGHUP into ``.requested = True`` so
    the loop can finish its step, checkpoint and exit; a second signal raises
    KeyboardInterrupt, unless ``escalate=False`` (Ray workers: a suite that pauses sends its
    running runs Ray's cancel, which Python delivers as SIGINT, possibly after the user's)."""

    # SIGHUP: a closed terminal or ssh session stops the run cleanly instead of killing it.
    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, message: bool = True, escalate: bool = True) -> None:
        self.requested = False
        self.signal: str | None = None
        self.message = message
        self.escalate = escalate
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulExit:
        # Handlers can only be installed from the main thread (not, e.g., in a Ray Tune
        # trial thread); elsewhere the guard is inert and the host handles signals.
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def request(self, reason: str = "request") -> None:
        """Ask the loop to stop as if a signal had arrived (e.g. a time budget)."""
        self.requested = True
        self.signal = self.signal or reason

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            if not self.escalate:
                return  # already stopping: the checkpoint is on its way
            raise KeyboardInterrupt(f"second {name}: stopping now")
        self.request(name)
        if self.message:
            print(
                f"\n{name} received: finishing this step and saving a checkpoint "
                "(send it again to stop now)",
                file=sys.stderr,
                flush=True,
            )
