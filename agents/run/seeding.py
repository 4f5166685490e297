"""What a run's randomness is made of across a restart: the random streams a checkpoint
saves (so resuming on CPU is exact) and the env seeds a resumed run starts from."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The torch (and CUDA), numpy and python random streams (actions and latents are
    sampled)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():  # on a GPU the policy and latents sample from these
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and \
            len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_seed(seed: int, step: int) -> int:
    """The env seed of a run with seed `seed` resumed at agent step `step`: the same for the
    same resume point (a rerun of it is reproducible), unrelated across points and to the
    run's first seeds `seed + i`."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] & 0x7FFFFFFF)
