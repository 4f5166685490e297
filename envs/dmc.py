"""DeepMind Control suite: `dmc:DOMAIN-TASK[-pixels|-state|-both]`, e.g. `dmc:walker-walk`.

Options (defaults): obs="state" ("state" -> `vector`, "pixels" -> `image`, "both"),
size=(64, 64), repeat=2 (rewards summed over repeats), camera=None (the domain's usual
camera: 2 for quadruped, else 0), fast_render=False (shadows and reflections off: ~3x
faster frames, slightly different pictures), physics_info=False (adds flattened `qpos` and
`qvel` to every info), time_limit=None (episode length in env frames, shorter or longer
than dm_control's; None keeps dm_control's 1000), render_mode=None ("rgb_array" for
`render()` frames of `size`), distractor=None ("noise", "shapes", "video:DIR" or
"atari[:train|:eval|:GAME+GAME]": a moving background behind the robot in every rendered
frame, see envs/distractors.py; needs obs "pixels" or "both").
Time-limit ends are `truncated`; only discount-0 ends are `terminated`.
State observations never render.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import (
    IMAGE_KEY,
    VECTOR_KEY,
    EnvSpecError,
    check_choice,
    check_options,
    check_positive_int,
    check_size,
    image_space,
    pick_gl_backend,
    unknown_name,
    vector_space,
    with_metadata,
)

pick_gl_backend()

from dm_control import mujoco, suite  # noqa: E402  (needs MUJOCO_GL set first)

from envs.distractors import background_mask, make_distractor  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "obs": "state",
    "size": (64, 64),
    "repeat": 2,
    "camera": None,
    "fast_render": False,
    "physics_info": False,
    "time_limit": None,
    "render_mode": None,
    "distractor": None,
}
_OBS_SUFFIXES = ("pixels", "state", "both")
_DEFAULT_CAMERA = {"quadruped": 2}


def tasks() -> list[str]:
    """All `DOMAIN-TASK` names of the dm_control suite."""
    return sorted(f"{d}-{t}" for d, t in suite.ALL_TASKS)


task_names = tasks  # the suite interface (see envs/__init__.py)


def canonical_task(task: str) -> str:
    """`walker_walk` (DreamerV3's spelling) -> `walker-walk`, keeping an obs suffix; unknown
    names come back unchanged (`make_env` reports them)."""
    try:
        domain, name, obs = _parse_task(task)
    except EnvSpecError:
        return task
    return f"{domain}-{name}" + (f"-{obs}" if obs else "")


def _parse_task(task: str) -> tuple[str, str, str | None]:
    obs = None
    head, _, tail = task.rpartition("-")
    if tail in _OBS_SUFFIXES and head:
        task, obs = head, tail
    by_name = {f"{d}-{t}": (d, t) for d, t in suite.ALL_TASKS}
    # DreamerV3-style underscore names (walker_walk) are accepted too.
    by_name.update({f"{d}_{t}": (d, t) for d, t in suite.ALL_TASKS})
    if task not in by_name:
        raise unknown_name("dmc task", task, tasks(), "dreamer-run --list-envs dmc")
    domain, name = by_name[task]
    return domain, name, obs


class DMCEnv(gym.Env):
    """A dm_control suite task as a Gymnasium env with dict observations and [-1, 1] actions."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(
        self,
        domain: str,
        task: str,
        obs: str = "state",
        size: tuple[int, int] = (64, 64),
        repeat: int = 2,
        camera: int | None = None,
        fast_render: bool = False,
        physics_info: bool = False,
        time_limit: int | None = None,
        render_mode: str | None = None,
        distractor: str | None = None,
    ):
        self._distractor = make_distractor(distractor, size)
        self._distractor_rng = np.random.default_rng()
        # With our own `time_limit` dm_control's (1000 frames) is lifted, so episodes can be
        # longer as well as shorter; every suite task takes `time_limit` (seconds).
        task_kwargs: dict[str, Any] = {"random": None}
        if time_limit is not None:
            task_kwargs["time_limit"] = float("inf")
        self._env = suite.load(domain, task, task_kwargs=task_kwargs)
        self._size = size
        self._repeat = repeat
        self._camera_id = _DEFAULT_CAMERA.get(domain, 0) if camera is None else camera
        ncam = self._env.physics.model.ncam
        if not -1 <= self._camera_id < ncam:
            self._env.physics.free()
            raise EnvSpecError(
                f"option camera={camera!r} is invalid for {domain}; "
                f"allowed: -1 (free) to {ncam - 1}"
            )
        self._physics_info = physics_info
        self._time_limit = time_limit
        self.render_mode = render_mode
        self._camera: mujoco.Camera | None = None
        self._frames = 0
        self._closed = False
        if fast_render:
            model = self._env.physics.model
            model.light_castshadow[:] = 0
            model.mat_reflectance[:] = 0

        spec = self._env.action_spec()
        self._act_low = spec.minimum.astype(np.float64)
        self._act_high = spec.maximum.astype(np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        spaces: dict[str, gym.Space] = {}
        if obs in ("pixels", "both"):
            spaces[IMAGE_KEY] = image_space(size)
        if obs in ("state", "both"):
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            spaces[VECTOR_KEY] = vector_space(dim)
        self.observation_space = gym.spaces.Dict(spaces)
        self.metadata = {
            **self.metadata,
            "render_fps": round(1.0 / (self._env.control_timestep() * repeat)),
        }

    def _frame(self) -> np.ndarray:
        if self._camera is None:
            # One camera (and its scene) for the env's life: cheaper than physics.render().
            h, w = self._size
            self._camera = mujoco.Camera(self._env.physics, h, w, self._camera_id)
        # The camera reuses its pixel buffer between calls.
        frame = self._camera.render().copy()
        if self._distractor is not None:
            seg = self._camera.render(segmentation=True)
            mask = background_mask(seg, self._env.physics.model.geom_type)
            frame[mask] = self._distractor.frame(self._frames)[mask]
        return frame

    def _obs(self, time_step: Any) -> dict[str, np.ndarray]:
        out = {}
        if IMAGE_KEY in self.observation_space.spaces:
            out[IMAGE_KEY] = self._frame()
        if VECTOR_KEY in self.observation_space.spaces:
            parts = [np.asarray(v, np.float32).ravel() for v in time_step.observation.values()]
            out[VECTOR_KEY] = np.concatenate(parts)
        return out

    def _info(self) -> dict[str, Any]:
        if not self._physics_info:
            return {}
        data = self._env.physics.data
        return {"qpos": data.qpos.astype(np.float32), "qvel": data.qvel.astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # dm_control draws initial states from the task's RandomState.
            self._env.task._random = np.random.RandomState(seed)
            self._distractor_rng = np.random.default_rng(seed)
        if self._distractor is not None:
            self._distractor.reset(self._distractor_rng)
        self._frames = 0
        time_step = self._env.reset()
        return self._obs(time_step), self._info()

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        native = self._act_low + (action + 1.0) * 0.5 * (self._act_high - self._act_low)
        reward = 0.0
        terminated = truncated = False
        for _ in range(self._repeat):
            time_step = self._env.step(native)
            self._frames += 1
            reward += time_step.reward or 0.0
            if time_step.last():
                # dm_control marks true terminations with discount 0, time limits with 1.
                terminated = time_step.discount == 0.0
                truncated = not terminated
                break
            if self._time_limit is not None and self._frames >= self._time_limit:
                truncated = True
                break
        return self._obs(time_step), float(reward), bool(terminated), truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._frame()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._camera = None
        # Freeing the physics now avoids OSMesa's shutdown warning at interpreter exit.
        self._env.physics.free()


def make_env(task: str, *, suite: str = "dmc", **options: Any) -> gym.Env:
    """Build a DMC env; see the module docstring for options."""
    domain, name, suffix_obs = _parse_task(task)
    opts = check_options(suite, options, DEFAULTS)
    if suffix_obs is not None:
        # An `obs` option that says otherwise is an error, except `pixels` under `-both`:
        # the pixel preset's value (dmc_vision, which `-both` specs get), which `-both`
        # extends with the state vector.
        agrees = options.get("obs") in (suffix_obs, None) or (
            suffix_obs == "both" and options["obs"] == "pixels")
        if "obs" in options and not agrees:
            raise EnvSpecError(
                f"spec suffix '-{suffix_obs}' conflicts with option obs={options['obs']!r}"
            )
        opts["obs"] = suffix_obs
    check_choice("obs", opts["obs"], _OBS_SUFFIXES)
    check_choice("render_mode", opts["render_mode"], (None, "rgb_array"))
    opts["size"] = check_size(opts["size"])
    if opts["distractor"] is not None and opts["obs"] == "state":
        raise EnvSpecError(
            f"option distractor={opts['distractor']!r} needs pixels; use obs='pixels' or 'both'")
    opts["repeat"] = check_positive_int("repeat", opts["repeat"])
    if opts["time_limit"] is not None:
        opts["time_limit"] = check_positive_int("time_limit", opts["time_limit"])
    env = DMCEnv(domain, name, **opts)
    return with_metadata(env, opts["repeat"])
