"""Shared fixtures of the benchmark tests: the reference curves folder and run builders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

CURVES = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "curves"


def _write_official(path: Path, runs: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(runs, f)
    return path


@pytest.fixture
def fake_curves(tmp_path) -> Path:
    """Small score files in the published formats, with numbers whose aggregates are easy to
    work out by hand (see the tests that use them):

    - `atari100k-dreamerv3.json.gz`: pong (2 seeds) and boxing (1 seed) up to 400k frames;
    - `dmc_proprio-dreamerv3.json.gz`: walker_walk and cartpole_balance, 2 seeds, to 500k;
    - `tdmpc2_results/tdmpc2/<task>.csv`: two tasks, 2 seeds, logged steps (x2 = frames).
    """
    folder = tmp_path / "fake_curves"
    folder.mkdir()
    xs = [100_000, 200_000, 300_000, 392_000, 396_000, 399_000]
    _write_official(folder / "atari100k-dreamerv3.json.gz", [
        {"task": "atari100k_pong", "method": "dreamerv3", "seed": 0, "xs": xs,
         "ys": [-21, -20, -15, -10, -6, -2]},
        {"task": "atari100k_pong", "method": "dreamerv3", "seed": 1, "xs": xs,
         "ys": [-21, -19, -12, -9, -5, 1]},
        {"task": "atari100k_boxing", "method": "dreamerv3", "seed": 0, "xs": xs[:4] + [399_500],
         "ys": [0, 10, 20, 30, 40]},
    ])
    dxs = [100_000, 300_000, 440_000, 460_000, 480_000, 500_000]
    _write_official(folder / "dmc_proprio-dreamerv3.json.gz", [
        {"task": "dmc_walker_walk", "method": "dreamerv3", "seed": 0, "xs": dxs,
         "ys": [100, 300, 500, 900, 910, 920]},
        {"task": "dmc_walker_walk", "method": "dreamerv3", "seed": 1, "xs": dxs,
         "ys": [100, 300, 500, 700, 800, 900]},
        {"task": "dmc_cartpole_balance", "method": "dreamerv3", "seed": 0, "xs": dxs,
         "ys": [200, 400, 600, 990, 990, 990]},
        {"task": "dmc_cartpole_balance", "method": "dreamerv3", "seed": 1, "xs": dxs,
         "ys": [200, 400, 600, 950, 970, 960]},
    ])
    csvs = folder / "tdmpc2_results" / "tdmpc2"
    csvs.mkdir(parents=True)
    (csvs / "walker-walk.csv").write_text(
        "step,reward,seed\n0,0,1\n200000,800,1\n300000,900,1\n"
        "0,0,2\n200000,600,2\n300000,700,2\n")
    (csvs / "cartpole-balance.csv").write_text(
        "step,reward,seed\n0,0,1\n200000,990,1\n300000,990,1\n")
    return folder


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
