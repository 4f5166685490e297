"""MiniGrid suite: `minigrid:ENV-ID`, e.g. `minigrid:MiniGrid-DoorKey-5x5-v0`.

The `image` is an RGB rendering resized to `size`. Options (defaults): view="full" (the
whole grid, MiniGrid's RGBImgObsWrapper) or "partial" (the agent's egocentric view,
RGBImgPartialObsWrapper), size=(64, 64), mission=False, kwargs={} (passed to `gym.make`,
e.g. max_steps), render_mode=None. The agent's heading is visible in the full view and
fixed (facing up) in the partial view, so MiniGrid's `direction` entry is dropped.
With mission=True the mission string is also given as `vector`: a float32 bag of words of
length MISSION_DIM (each lower-cased word counted at crc32(word) % MISSION_DIM), which is
deterministic across processes, and `info["mission"]` holds the string. Actions are
MiniGrid's Discrete(7).
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* and BabyAI-* ids)
import numpy as np
from minigrid.wrappers import RGBImgObsWrapper, RGBImgPartialObsWrapper

from envs.core import (
    IMAGE_KEY,
    VECTOR_KEY,
    EnvSpecError,
    check_choice,
    check_options,
    check_size,
    image_space,
    resize_image,
    unknown_name,
    vector_space,
    with_metadata,
)

DEFAULTS: dict[str, Any] = {
    "view": "full",
    "size": (64, 64),
    "mission": False,
    "kwargs": {},
    "render_mode": None,
}
MISSION_DIM = 64


def env_ids() -> list[str]:
    """Registered MiniGrid and BabyAI env ids."""
    return sorted(k for k in gym.registry if k.startswith(("MiniGrid-", "BabyAI-")))


task_names = env_ids  # the suite interface (see envs/__init__.py)


def encode_mission(mission: str, dim: int = MISSION_DIM) -> np.ndarray:
    """Hashed bag-of-words of a mission string, float32 of length `dim`."""
    out = np.zeros(dim, np.float32)
    for word in mission.lower().replace(",", " ").split():
        out[zlib.crc32(word.encode()) % dim] += 1.0
    return out


class MiniGridDict(gym.ObservationWrapper):
    """MiniGrid RGB image observations (and optionally the mission) as the dict contract."""

    def __init__(self, env: gym.Env, size: tuple[int, int], mission: bool):
        super().__init__(env)
        self._size = size
        self._mission = mission
        spaces: dict[str, gym.Space] = {IMAGE_KEY: image_space(size)}
        if mission:
            spaces[VECTOR_KEY] = vector_space(MISSION_DIM)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {IMAGE_KEY: resize_image(np.array(observation["image"]), self._size)}
        if self._mission:
            out[VECTOR_KEY] = encode_mission(observation["mission"])
        return out

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        return self.observation(obs), self._info(obs, info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self.observation(obs), reward, terminated, truncated, self._info(obs, info)

    def _info(self, obs: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        return {**info, "mission": obs["mission"]} if self._mission else info


def make_env(task: str, *, suite: str = "minigrid", **options: Any) -> gym.Env:
    """Build a MiniGrid env with RGB image observations; see the module docstring."""
    opts = check_options(suite, options, DEFAULTS)
    check_choice("view", opts["view"], ("full", "partial"))
    check_choice("render_mode", opts["render_mode"], (None, "rgb_array"))
    size = check_size(opts["size"])
    if task not in gym.registry or not task.startswith(("MiniGrid-", "BabyAI-")):
        raise unknown_name("minigrid env", task, env_ids(), "dreamer-run --list-envs minigrid")
    if not isinstance(opts["kwargs"], dict):
        raise EnvSpecError(f"option kwargs={opts['kwargs']!r} is invalid; expected a dict")
    env = gym.make(task, render_mode=opts["render_mode"], **opts["kwargs"])
    base = env.unwrapped
    # Render at least `size` pixels and area-downsample, so small grids stay sharp.
    cells = max(base.width, base.height) if opts["view"] == "full" else base.agent_view_size
    tile = max(1, math.ceil(max(size) / cells))
    wrapper = RGBImgObsWrapper if opts["view"] == "full" else RGBImgPartialObsWrapper
    env = MiniGridDict(wrapper(env, tile_size=tile), size, opts["mission"])
    return with_metadata(env, 1)
