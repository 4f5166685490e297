"""Gymnasium suite: `gym:ENV-ID` (a registered id) or `gym:package.module:Class` (your own env).

Observations become the dict contract: image-like Box spaces (uint8 HxW or HxWxC) go to
`image`, resized to `size`; everything else is flattened into the float32 `vector`. Box
actions are rescaled to [-1, 1] float32, Discrete actions stay.
Options (defaults): repeat=1 (action repeat, rewards summed), size=(64, 64),
max_episode_steps=None (override the registered time limit), kwargs={} (passed to
`gym.make` / the class), render_mode=None.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

# pygame (classic-control rendering) probes for a sound card otherwise and prints ALSA errors.
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from envs.core import (
    IMAGE_KEY,
    VECTOR_KEY,
    ActionRepeat,
    EnvSpecError,
    check_options,
    check_positive_int,
    check_size,
    image_space,
    rescale_actions,
    resize_image,
    unknown_name,
    vector_space,
    with_metadata,
)

DEFAULTS: dict[str, Any] = {
    "repeat": 1,
    "size": (64, 64),
    "max_episode_steps": None,
    "kwargs": {},
    "render_mode": None,
}


def _is_image(space: gym.Space) -> bool:
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and (len(space.shape) == 2 or (len(space.shape) == 3 and space.shape[2] in (1, 3, 4)))
    )


class DictObservation(gym.ObservationWrapper):
    """Maps any observation space onto `{image, vector}`: image-like parts resized, rest flat."""

    def __init__(self, env: gym.Env, size: tuple[int, int]):
        super().__init__(env)
        space = env.observation_space
        self._size = size
        self._is_dict = isinstance(space, gym.spaces.Dict)
        parts = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {None: space}
        images = [k for k, s in parts.items() if _is_image(s)]
        if len(images) > 1:
            raise EnvSpecError(f"observation space has several image entries {images}; max 1")
        self._has_image = bool(images)
        self._image_key = images[0] if images else None
        self._rest = {k: s for k, s in parts.items() if k not in images}
        spaces: dict[str, gym.Space] = {}
        if images:
            img = parts[self._image_key]
            channels = img.shape[2] if len(img.shape) == 3 else 1
            spaces[IMAGE_KEY] = image_space(size, min(channels, 3))
        if self._rest:
            dim = sum(gym.spaces.flatdim(s) for s in self._rest.values())
            spaces[VECTOR_KEY] = vector_space(dim)
        self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        parts = observation if self._is_dict else {None: observation}
        out = {}
        if self._has_image:
            frame = np.asarray(parts[self._image_key])
            if frame.ndim == 2:
                frame = frame[..., None]
            # A copy, so an env that reuses its frame buffer cannot change stored observations.
            out[IMAGE_KEY] = resize_image(np.array(frame[..., :3]), self._size)
        if self._rest:
            flat = [gym.spaces.flatten(s, parts[k]) for k, s in self._rest.items()]
            out[VECTOR_KEY] = np.concatenate(flat).astype(np.float32)
        return out


def task_names() -> list[str]:
    """Registered Gymnasium ids; Atari ids belong to the atari suites and are left out."""
    return sorted(k for k, s in gym.registry.items()
                  if not str(s.entry_point).startswith("ale_py"))


def _make_base(task: str, opts: dict[str, Any]) -> gym.Env:
    kwargs = dict(opts["kwargs"])
    # render_mode only when asked for: an env class whose constructor has no render_mode
    # keyword (plenty of users' envs) must still build.
    common: dict[str, Any] = {"max_episode_steps": opts["max_episode_steps"]}
    if opts["render_mode"] is not None:
        common["render_mode"] = opts["render_mode"]
    if ":" in task:
        module_name, _, attr = task.partition(":")
        try:
            getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise EnvSpecError(
                f"cannot load env class '{task}' (expected 'package.module:Class'): {exc}"
            ) from exc
        spec = EnvSpec(id=f"{attr}-v0", entry_point=task, kwargs=kwargs)
        try:
            return gym.make(spec, **common)
        except TypeError as exc:  # the constructor refused an argument: say which, one line
            raise EnvSpecError(f"cannot build {task}: {str(exc).splitlines()[0]}") from None
    if task not in gym.registry:
        raise unknown_name("Gymnasium env id", task, task_names(), "dreamer-run --list-envs gym")
    try:
        return gym.make(task, **common, **kwargs)
    except (gym.error.DependencyNotInstalled, ImportError) as exc:
        raise EnvSpecError(f"Gymnasium env '{task}' needs a missing dependency: {exc}") from exc


def make_env(task: str, *, suite: str = "gym", **options: Any) -> gym.Env:
    """Build a Gymnasium env with the dict-observation contract."""
    opts = check_options(suite, options, DEFAULTS)
    opts["size"] = check_size(opts["size"])
    opts["repeat"] = check_positive_int("repeat", opts["repeat"])
    if not isinstance(opts["kwargs"], dict):
        raise EnvSpecError(f"option kwargs={opts['kwargs']!r} is invalid; expected a dict")
    env = _make_base(task, opts)
    env = rescale_actions(DictObservation(env, opts["size"]))
    if opts["repeat"] > 1:
        env = ActionRepeat(env, opts["repeat"])
    return with_metadata(env, opts["repeat"])
