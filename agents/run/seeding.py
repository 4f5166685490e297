"""What a run's randomness is made of across a restart: the random streams a checkpoint
saves (so resuming on CPU is exact) and the env seeds a run's envs start from."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
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


@contextlib.contextmanager
def streams_aside(*generators: torch.Generator | None) -> Iterator[None]:
    """Run a block (an evaluation, a report) without moving training's random streams: the
    global ones and `generators` (the replay's sampler) are as before afterwards, so the
    settings a resume may change (eval_every, eval_episodes, video, ...) change nothing that
    training draws."""
    state = rng_state()
    saved = [(g, g.get_state()) for g in generators if g is not None]
    try:
        yield
    finally:
        set_rng_state(state)
        for g, s in saved:
            g.set_state(s)


# What an env seed is drawn for (a SeedSequence key): the streams never coincide.
TRAIN_ENVS, EVAL_ENVS, CHECKPOINT_EVAL_ENVS = 0, 1, 2


def env_seed(seed: int, step: int = 0, purpose: int = TRAIN_ENVS) -> int:
    """The first env seed (sub-env i gets it + i, Gymnasium's rule) of a run with seed `seed`
    whose envs (re)start at agent step `step`: training envs at the start (step 0) and at
    each resume point, evaluation envs (`EVAL_ENVS`) at each evaluation, `dreamer-eval`'s
    (`CHECKPOINT_EVAL_ENVS`, `step`: the checkpoint's updates). Hashed, so runs
    with seeds 0, 1, 2 share no env stream (`seed + i` would give seeds 0 and 1 three of
    their four), a resume does not replay the opening episodes and every evaluation plays a
    new episode; the same for the same point, so a rerun is reproducible."""
    state = np.random.SeedSequence([seed, step, purpose]).generate_state(1)[0]
    return int(state & 0x7FFFFFFF)
