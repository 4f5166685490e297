"""Shared pieces of the env suites: spec errors, option checking and small wrappers."""

from __future__ import annotations

import ctypes.util
import difflib
import os
from collections.abc import Mapping
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

IMAGE_KEY = "image"
VECTOR_KEY = "vector"


def pick_gl_backend() -> None:
    """Set MUJOCO_GL (unless the user did) before dm_control is imported anywhere."""
    # EGL is the fast headless path; without an EGL driver (no libEGL) fall back to OSMesa.
    if "MUJOCO_GL" not in os.environ:
        os.environ["MUJOCO_GL"] = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


class EnvSpecError(ValueError):
    """A bad env spec or option: the message names what was wrong and what is allowed."""


def closest(name: str, names: list[str], n: int = 3) -> list[str]:
    """The names most like `name`, ignoring case, `-` and `_` (`cartpole` ~ `CartPole-v1`)."""
    norm = lambda s: s.lower().replace("_", "-")
    by_norm: dict[str, str] = {}
    for full in names:
        by_norm.setdefault(norm(full), full)
    found = difflib.get_close_matches(norm(name), list(by_norm), n=n, cutoff=0.5)
    # A name that contains the query or starts like it is a good guess too.
    found += [k for k in by_norm if norm(name) in k and k not in found]
    return [by_norm[k] for k in found[:n]]


def unknown_name(kind: str, name: str, names: list[str], listing: str) -> EnvSpecError:
    """One line for an unknown task or game: the closest names, a few examples, and the
    command that lists them all."""
    close = closest(name, names)
    guess = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return EnvSpecError(f"unknown {kind} '{name}'; {guess}{len(names)} available ({shown}; "
                        f"`{listing}` lists them all)")


def check_options(
    suite: str, options: Mapping[str, Any], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge `options` over `defaults`, rejecting names the suite does not know."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise EnvSpecError(
            f"unknown option(s) {unknown} for suite '{suite}'; valid options: {sorted(defaults)}"
        )
    return {**defaults, **options}


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> Any:
    """Return `value` if it is one of `allowed`, else raise EnvSpecError."""
    if value not in allowed:
        raise EnvSpecError(f"option {name}={value!r} is invalid; allowed: {list(allowed)}")
    return value


def check_size(size: Any) -> tuple[int, int]:
    """Validate an image size option given as an int or a (height, width) pair."""
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise EnvSpecError(f"option size={size!r} is invalid; expected (height, width)") from None
    if h <= 0 or w <= 0:
        raise EnvSpecError(f"option size={size!r} is invalid; both sides must be positive")
    return h, w


def check_positive_int(name: str, value: Any) -> int:
    """Validate an integer option that must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise EnvSpecError(f"option {name}={value!r} is invalid; expected an integer >= 1")
    return int(value)


def resize_image(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC uint8 frame to `size` with area interpolation (a no-op if already there)."""
    if frame.shape[:2] == tuple(size):
        return frame
    out = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if out.ndim == 2:  # cv2 drops a trailing channel of size 1
        out = out[..., None]
    return out


def image_space(size: tuple[int, int], channels: int = 3) -> gym.spaces.Box:
    """The `image` observation space: uint8 HxWxC."""
    return gym.spaces.Box(0, 255, (*size, channels), np.uint8)


def vector_space(dim: int) -> gym.spaces.Box:
    """The `vector` observation space: float32, 1-D, unbounded."""
    return gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)


class SeedOnFirstReset(gym.Wrapper):
    """Uses the seed given to `make` for the first `reset()` that has no seed of its own."""

    def __init__(self, env: gym.Env, seed: int | None, spec: EnvSpec | None = None):
        super().__init__(env)
        self._pending_seed = seed
        self._spec = spec
        if seed is not None:
            self.env.action_space.seed(seed)

    @property
    def spec(self) -> EnvSpec | None:
        # A spec that rebuilds this env through `envs.make`, so `env.spec.make()` works even
        # though inner wrappers (MiniGrid's, ours) do not record their constructor args.
        return self._spec if self._spec is not None else self.env.spec

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


class VectorSeedOnFirstReset(gym.vector.VectorWrapper):
    """Vector version of SeedOnFirstReset: sub-env i gets `seed + i` on the first reset."""

    def __init__(self, env: gym.vector.VectorEnv, seed: int | None):
        super().__init__(env)
        self._pending_seed = seed
        if seed is not None:
            self.env.action_space.seed(seed)
            self.env.single_action_space.seed(seed)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


class ActionRepeat(gym.Wrapper):
    """Repeats each action `repeat` times, summing rewards and stopping early at episode end."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self._repeat = repeat

    def step(self, action: Any):
        total = 0.0
        for _ in range(self._repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def rescale_actions(env: gym.Env) -> gym.Env:
    """Make a Box action space [-1, 1] float32, actions clipped to it before they are mapped
    to the env's bounds (as the official agent's ClipAction: a policy or a user's code can
    send any value); Discrete spaces must start at 0."""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        if space.start != 0:
            raise EnvSpecError(f"Discrete action spaces must start at 0, got start={space.start}")
        return env
    if isinstance(space, gym.spaces.Box):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise EnvSpecError(f"Box action space needs finite bounds to rescale, got {space}")
        if space.dtype != np.float32 or np.any(space.low != -1) or np.any(space.high != 1):
            low = np.full(space.shape, -1.0, np.float32)
            env = gym.wrappers.RescaleAction(env, low, -low)
            # RescaleAction keeps the inner dtype; the contract is float32.
            env.action_space = gym.spaces.Box(low, -low, dtype=np.float32)
        clipped = gym.wrappers.ClipAction(env)
        clipped.action_space = env.action_space  # ClipAction widens it to +-inf
        return clipped
    raise EnvSpecError(f"action space {space} is not supported; expected Discrete or Box")


def with_metadata(env: gym.Env, action_repeat: int) -> gym.Env:
    """Record the action repeat in the env's metadata (a copy, so class metadata stays intact)."""
    env.metadata = {**env.metadata, "action_repeat": int(action_repeat)}
    return env


def vector_metadata(vec: gym.vector.VectorEnv, action_repeat: int) -> gym.vector.VectorEnv:
    """Record the action repeat and the NEXT_STEP autoreset mode in a vector env's metadata."""
    vec.metadata = {
        **vec.metadata,
        "action_repeat": int(action_repeat),
        "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP,
    }
    return vec
