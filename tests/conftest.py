"""Fixtures shared by every test folder: one torch thread, and tiny training-run configs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from agents.run.config import Config, load_config

# A few hundred steps with a tiny model and batch: checks wiring, not learning; eager fp32
# (compiling would cost more than such a run; the learning tests use the fast path). A small
# replay: the default (1M steps) reserves gigabytes of address space per run (64x64 pixels),
# and a test process that holds several of them can no longer fork ffmpeg or envs.
SMOKE: dict[str, Any] = {
    "replay.size": 20_000, "env.num_envs": 2, "threads": 1, "compile": "off",
    "precision": "fp32", "replay.batch_size": 4, "replay.batch_length": 16,
    "run.prefill": 64, "run.train_ratio": 16, "run.log_every": 0,
    "run.eval_every": 1_000_000, "run.report_every": 100, "run.eval_episodes": 1,
}


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One torch thread for a whole module of tiny ops (`pytestmark =
    pytest.mark.usefixtures("one_thread_per_module")`): on a shared 2-core machine extra
    threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (two busy threads on two cores are slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tiny_config(spec: str, logdir: str | Path, steps: int,
                     overrides: dict[str, Any] | None = None, size: str = "1m",
                     agent: str | None = None, base: dict[str, Any] | None = None) -> Config:
    """A resolved config for a short run: `base` (default SMOKE), then the dotted-key
    `overrides`, then the step budget and the run directory."""
    values = {**(SMOKE if base is None else base), **(overrides or {})}
    values.update({"run.steps": steps, "logdir": str(logdir)})
    return load_config(spec, size=size, agent=agent, overrides=values)


@pytest.fixture
def tiny_config() -> Callable[..., Config]:
    """Factory of tiny training-run configs (see `make_tiny_config`)."""
    return make_tiny_config


@pytest.fixture
def smoke_argv() -> list[str]:
    """The `dreamer-run` flags that spell SMOKE on the command line."""
    return ["--size", "1m"] + [a for k, v in SMOKE.items() for a in ("--set", f"{k}={v}")]
