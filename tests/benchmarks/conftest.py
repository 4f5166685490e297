"""Shared fixtures of the benchmark tests: the reference curves folder and run builders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CURVES = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "curves"


@pytest.fixture
def curves() -> Path:
    """../shared/reference/curves relative to the repo root (tests skip without it)."""
    if not CURVES.is_dir():
        pytest.skip(f"reference curves not found at {CURVES.resolve()} (../shared/reference)")
    return CURVES.resolve()


def _make_run_dir(
    path: Path, spec: str, seed: int, episodes: list[tuple[int, float]], repeat: int = 2,
    finished: bool = True, agent: str = "dreamerv3",
) -> Path:
    """A synthetic run directory in the `dreamer-run` layout: (frames, return) per episode."""
    path.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"step": f // repeat, "frames": f, "return": r, "length": 10, "time": 1.0})
        for f, r in episodes
    ]
    (path / "scores.jsonl").write_text("\n".join(lines) + "\n")
    (path / "config.yaml").write_text(f"seed: {seed}\nagent: {agent}\nenv:\n  spec: {spec}\n")
    last = episodes[-1][0] if episodes else 0
    status = {"step": last // repeat, "frames": last, "target_steps": last // repeat,
              "finished": finished}
    (path / "status.json").write_text(json.dumps(status))
    return path


@pytest.fixture
def make_run_dir():
    """Factory of synthetic run directories (see `_make_run_dir`)."""
    return _make_run_dir
