"""`dreamer-run --env SPEC --check`: Gymnasium's env checker plus this suite's contract
(dict observations, action spaces, metadata, episode ends), one line per problem."""

from __future__ import annotations

import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from envs.core import IMAGE_KEY, VECTOR_KEY


def _contract(env: gym.Env) -> list[str]:
    """Problems with the observation/action contract the agents rely on."""
    problems = []
    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Dict):
        return [f"observation space is {type(obs_space).__name__}, not a Dict of image/vector"]
    extra = sorted(set(obs_space.spaces) - {IMAGE_KEY, VECTOR_KEY})
    if extra or not obs_space.spaces:
        problems.append(f"observation keys {sorted(obs_space.spaces)}; allowed: image, vector")
    image = obs_space.spaces.get(IMAGE_KEY)
    if image is not None:
        shape = getattr(image, "shape", ())
        if image.dtype != np.uint8 or len(shape) != 3 or shape[2] not in (1, 3):
            problems.append(f"image must be uint8 HxWx(1|3), got {image.dtype} {shape}")
        elif shape[0] != shape[1] or shape[0] % 16:
            problems.append(f"image {shape[:2]} must be square with a side that is a multiple "
                            "of 16 (the CNN halves it 4 times)")
    vector = obs_space.spaces.get(VECTOR_KEY)
    if vector is not None and (vector.dtype != np.float32 or len(vector.shape) != 1):
        problems.append(f"vector must be float32 1-D, got {vector.dtype} {vector.shape}")
    if isinstance(act_space, gym.spaces.Box):
        if act_space.dtype != np.float32 or len(act_space.shape) != 1 or not (
                np.all(act_space.low == -1) and np.all(act_space.high == 1)):
            problems.append(f"Box actions must be float32 1-D in [-1, 1], got {act_space}")
    elif not isinstance(act_space, gym.spaces.Discrete) or act_space.start != 0:
        problems.append(f"action space {act_space}; allowed: Discrete(n) or Box in [-1, 1]")
    repeat = env.metadata.get("action_repeat")
    if not isinstance(repeat, int) or repeat < 1:
        problems.append(f"metadata['action_repeat'] must be an int >= 1, got {repeat!r}")
    return problems


def _rollout(env: gym.Env, max_steps: int, seed: int) -> list[str]:
    """Problems seen while playing random actions until an episode ends."""
    problems = []
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    for t in range(max_steps):
        if not env.observation_space.contains(obs):
            keys = {k: (np.asarray(v).dtype, np.asarray(v).shape) for k, v in obs.items()} \
                if isinstance(obs, dict) else type(obs).__name__
            problems.append(f"observation at step {t} is outside the observation space: {keys}")
            return problems
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if not np.isfinite(float(reward)):
            problems.append(f"reward at step {t + 1} is {reward!r}; rewards must be finite")
            return problems
        if terminated or truncated:
            return problems
    problems.append(f"no episode ended in {max_steps} random steps: give the env a time limit "
                    "(option max_episode_steps for gym: specs)")
    return problems


# Gymnasium warnings that say nothing about a user's env: we wrap envs on purpose, and
# proprioceptive observations are unbounded by nature.
_EXPECTED = ("different from the unwrapped version", "minimum value is -infinity",
             "maximum value is infinity")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check(spec: str, options: dict[str, Any] | None = None, max_steps: int = 10_000,
          seed: int = 0) -> tuple[list[str], list[str]]:
    """(problems, warnings) for `spec`; no problems means the agents can train on it.
    Gymnasium's checker runs on the raw env (its exceptions are problems, its warnings
    warnings); the contract, a random episode and a 2-env vector env on ours."""
    import envs

    options = dict(options or {})
    try:
        env = envs.make(spec, **options)
    except Exception as err:  # noqa: BLE001 - report any failure to build as a problem
        return [f"cannot build {spec}: {type(err).__name__}: {str(err).splitlines()[0]}"], []
    problems: list[str] = []
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                check_env(env.unwrapped, skip_render_check=True)
            except Exception as err:  # noqa: BLE001
                problems.append(f"Gymnasium's env checker: {str(err).splitlines()[0]}")
        for w in caught:
            text = _ANSI.sub("", str(w.message).splitlines()[0]).removeprefix("WARN: ")
            if not any(e in text for e in _EXPECTED) and text not in notes:
                notes.append(text)
        problems += _contract(env)
        if not problems:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the checker's warnings are reported above
                problems += _rollout(env, max_steps, seed)
    finally:
        env.close()
    if not problems:
        try:
            vec = envs.make_vector(spec, 2, seed=seed, **options)
            vec.reset()
            vec.step(vec.action_space.sample())
            vec.close()
        except Exception as err:  # noqa: BLE001
            problems.append(f"vector env: {type(err).__name__}: {str(err).splitlines()[0]}")
    return problems, notes
