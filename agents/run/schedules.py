"""Named schedules for the training loop: when to log, save, evaluate, and how many
updates are due."""

from __future__ import annotations


class Every:
    """True once `interval` units (seconds or agent steps) have passed since it last fired.
    An interval of 0 fires every time."""

    def __init__(self, interval: float, last: float = 0.0):
        self.interval, self.last = float(interval), float(last)

    def __call__(self, now: float) -> bool:
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


class Ratio:
    """Number of updates due so that `ratio` updates happen per unit of progress counted
    from `start` (agent steps), as a whole count: after N steps, floor(N * ratio) in all.
    Nothing is due before `start` is set."""

    def __init__(self, ratio: float):
        if ratio < 0:
            raise ValueError(f"update ratio must be >= 0, got {ratio}")
        self.ratio = float(ratio)
        self.origin: float | None = None
        self.done = 0

    def start(self, origin: float, done: int = 0) -> None:
        """Count from `origin`, with `done` updates already made since then (a resume)."""
        self.origin, self.done = float(origin), int(done)

    def __call__(self, step: float) -> int:
        if self.origin is None:
            return 0
        due = max(0, int((step - self.origin) * self.ratio) - self.done)
        self.done += due
        return due
