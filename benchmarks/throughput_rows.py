"""The models `benchmarks.throughput` times: its rows (a size preset, overrides, the
observation kind, the agent), the agents they build, and the synthetic batches and
observations they are timed on (no replay, no env)."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from agents.base import make_agent
from agents.dreamerv3 import DreamerV3Agent
from agents.run.config import load_config

STATE_DIM, ACT_DIM, IMAGE = 24, 6, (64, 64, 3)

# Peer model: NM512/dreamerv3-torch's default widths, CNN channels 32 x (1, 2, 4, 8) and
# 2-layer heads; our block GRU and 3-layer MLP encoder stay. 16.3M world-model params
# with pixels (the peer: 15.7M); 7.9M with state (the peer's 5 x 1024 MLPs give 16.5M).
PEER_SETS = (
    "model.rssm.deter=512", "model.rssm.hidden=512", "model.rssm.stoch=32",
    "model.rssm.classes=32", "model.encoder.depth=32", "model.decoder.depth=32",
    "model.encoder.units=512", "model.decoder.units=512", "model.reward_head.units=512",
    "model.cont_head.units=512", "actor_critic.policy.units=512", "actor_critic.value.units=512",
    "model.encoder.mults=[1,2,4,8]", "model.decoder.mults=[1,2,4,8]",
    "model.reward_head.layers=2", "model.cont_head.layers=2",
    "actor_critic.policy.layers=2", "actor_critic.value.layers=2",
)
STRIDED_SETS = ("model.encoder.strided=true", "model.decoder.strided=true")


@dataclass(frozen=True)
class Row:
    """One benchmarked model: a size preset (plus overrides) and an observation kind."""

    size: str
    pixels: bool
    sets: tuple[str, ...] = ()
    agent: str = "dreamerv3"
    vit: str = ""  # a ViT preset: the image encoder is a fine-tuned JEPA ViT of that size


ROWS: dict[str, Row] = {
    "1m-state": Row("1m", False),
    "1m-pixels": Row("1m", True),
    "1m-pixels-strided": Row("1m", True, STRIDED_SETS),
    "12m-state": Row("12m", False),
    "12m-pixels": Row("12m", True),
    "peer-pixels": Row("1m", True, PEER_SETS),
    "peer-state": Row("1m", False, PEER_SETS),
    # The peer's CNN is stride-2 convs; ours follows the official conv + max-pool (4x FLOPs).
    "peer-pixels-strided": Row("1m", True, PEER_SETS + STRIDED_SETS),
    "jepa-1m-pixels": Row("1m", True, agent="jepa"),
    # The JEPA study's setting (issue 35): beside 1m-pixels-strided, equal size and CNN.
    "jepa-1m-pixels-strided": Row("1m", True, STRIDED_SETS, agent="jepa"),
    "jepa-12m-pixels": Row("12m", True, agent="jepa"),
    # `--encoder jepa:PATH --encoder-mode finetune` (issue 34's agent run): the pretrained
    # ViT's forward and backward over every frame of a batch, in place of the CNN encoder.
    "vit-finetune-1m-pixels-strided": Row("1m", True, STRIDED_SETS, vit="tiny"),
}
def spaces(pixels: bool) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    if pixels:
        obs = {"image": gym.spaces.Box(0, 255, IMAGE, np.uint8)}
    else:
        obs = {"vector": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)}
    return gym.spaces.Dict(obs), gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)


_VIT_DIRS: list[tempfile.TemporaryDirectory] = []  # removed when the process exits


@functools.cache
def vit_encoder_file(preset: str) -> str:
    """A randomly initialised JEPA ViT of `preset` saved as an encoder file (what
    `jepa-pretrain` writes; the weights' values do not change an update's time)."""
    from world_models.vit_jepa import ViT, make_config, save_encoder

    _VIT_DIRS.append(tempfile.TemporaryDirectory(prefix="throughput-vit-"))
    path = os.path.join(_VIT_DIRS[-1].name, "encoder.pt")
    save_encoder(path, ViT(make_config(preset, image_shape=IMAGE)))
    return path


def build_agent(row: Row, device: torch.device, precision: str,
                sets: Sequence[str] = (), compile: bool = False) -> DreamerV3Agent:
    spec = "dmc:walker-walk-pixels" if row.pixels else "dmc:walker-walk"
    if row.vit:
        sets = [f"model.encoder.kind=jepa:{vit_encoder_file(row.vit)}",
                "model.encoder.mode=finetune", *sets]
    cfg = load_config(spec, size=row.size, agent=row.agent, sets=[*row.sets, *sets])
    obs_space, act_space = spaces(row.pixels)
    return make_agent(row.agent, obs_space, act_space, cfg, device=device,
                      precision=precision, compile=compile)


def synthetic_batch(pixels: bool, B: int, T: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random [B, T] replay batch with the replay's keys and dtypes; episodes start at t=0."""
    g = torch.Generator().manual_seed(seed)
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    action = torch.rand(B, T, ACT_DIM, generator=g) * 2 - 1
    action[:, 0] = 0.0
    batch = {"action": action, "reward": torch.rand(B, T, generator=g), "is_first": is_first,
             "is_last": torch.zeros(B, T, dtype=torch.bool),
             "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    if pixels:
        batch["image"] = torch.randint(0, 256, (B, T, *IMAGE), dtype=torch.uint8, generator=g)
    else:
        batch["vector"] = torch.randn(B, T, STATE_DIM, generator=g)
    return batch


def one_obs(pixels: bool, n: int, first: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = {"is_first": np.full(n, first)}
    if pixels:
        obs["image"] = rng.integers(0, 256, (n, *IMAGE), dtype=np.uint8)
    else:
        obs["vector"] = rng.normal(size=(n, STATE_DIM)).astype(np.float32)
    return obs
