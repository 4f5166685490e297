"""Env specs (`suite:task`) -> Gymnasium envs and vector envs with dict observations.

Every env returns `gym.spaces.Dict` observations with `image` (uint8 HxWxC) and/or
`vector` (float32 1-D) and has Discrete or Box([-1, 1], float32) actions. Each env's
`metadata["action_repeat"]` is set; each vector env uses NEXT_STEP autoreset and says so in
`metadata["autoreset_mode"]`. Suites are imported lazily, so a missing optional dependency
only breaks its own suite.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from envs.core import (
    IMAGE_KEY,
    EnvSpecError,
    SeedOnFirstReset,
    VectorSeedOnFirstReset,
    closest,
    pick_gl_backend,
    vector_metadata,
)

# Importing anything that pulls in dm_control (ray.rllib does) before this would lock in GLFW.
pick_gl_backend()

__all__ = ["SHIPPED_PRESETS", "SUITES", "SUITE_PRESETS", "EnvSpecError", "canonical_spec",
           "domain_preset", "list_envs", "make", "make_vector", "parse_spec", "register_suite"]

# Suite name -> module that implements it (see `_suite_module` for the interface).
SUITES: dict[str, str] = {
    "dmc": "envs.dmc",
    "atari": "envs.atari",
    "atari100k": "envs.atari",
    "gym": "envs.gym_suite",
    "minigrid": "envs.minigrid",
}

# Suites whose rendered (image) envs are slow enough per step that worker processes pay off
# by default. Unrendered DMC physics is cheaper than the inter-process round trip (measured
# in benchmarks/env_throughput.py), so state-only DMC steps in-process.
_ASYNC_WHEN_RENDERING = frozenset({"dmc"})
# Suites that may render with OpenGL (MuJoCo). Forking a process that has an EGL context
# deadlocks the child's first render, so their rendering envs start workers with spawn.
_GL_SUITES = frozenset({"dmc", "gym"})




def _dmc_preset(task: str, options: Mapping[str, Any]) -> str:
    pixels = str(options.get("obs", "")).lower() in ("pixels", "both")
    return "dmc_vision" if pixels or task.endswith(("-pixels", "-both")) else "dmc_proprio"


# Suite name -> the domain preset (agents/run/configs/domains.yaml) its runs start from: a name,
# or a function of (task, options) where the observation kind picks it. Built-in suites are
# declared here, so reading a config imports no env library; a registered suite declares
# its own (`register_suite(..., preset=)` or its module's DOMAIN_PRESET).
SUITE_PRESETS: dict[str, str | Callable[[str, Mapping[str, Any]], str]] = {
    "dmc": _dmc_preset,
    "atari": "atari",
    "atari100k": "atari100k",
    "gym": "gym",
    "minigrid": "minigrid",
}
# Presets that suites ship themselves (name -> config values), beside domains.yaml's.
SHIPPED_PRESETS: dict[str, dict[str, Any]] = {}


def register_suite(name: str, module: str, preset: str | None = None,
                   presets: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Make `name:TASK` specs build envs with the module `module` (an import path); see
    `_suite_module` for what the module provides. `preset` names the domain preset its runs
    start from (default: the module's `DOMAIN_PRESET`); `presets` ships presets of its own
    (name -> config values, as in agents/run/configs/domains.yaml)."""
    if not name.isidentifier():
        raise EnvSpecError(f"suite name {name!r} must be an identifier (letters, digits, _)")
    SUITES[name] = module
    SUITE_PRESETS.pop(name, None)
    if preset is not None:
        SUITE_PRESETS[name] = preset
    SHIPPED_PRESETS.update({k: dict(v) for k, v in (presets or {}).items()})


def domain_preset(spec: str, options: Mapping[str, Any] | None = None) -> str:
    """The domain preset a spec's runs start from, as its suite declares it. A suite with
    no declaration is an error, not the `gym` preset by default."""
    suite, task = parse_spec(spec)
    declared = SUITE_PRESETS.get(suite)
    if declared is None:
        module = _suite_module(suite)
        declared = getattr(module, "domain_preset", None) or getattr(module, "DOMAIN_PRESET",
                                                                     None)
        shipped = getattr(module, "DOMAIN_PRESETS", {}) or {}
        SHIPPED_PRESETS.update({k: dict(v) for k, v in shipped.items()})
        if not declared:
            raise EnvSpecError(
                f"suite '{suite}' ({SUITES[suite]}) declares no domain preset; set "
                f"DOMAIN_PRESET = 'gym' (or another preset) in that module, or pass preset= "
                "to envs.register_suite")
        SUITE_PRESETS[suite] = declared
    return declared(task, dict(options or {})) if callable(declared) else str(declared)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split `suite:task` into its two parts, checking the suite name. DreamerV3's spelling
    `suite_task` (`dmc_walker_walk`, `atari100k_pong`) is accepted too."""
    if not isinstance(spec, str):
        raise EnvSpecError(f"env spec {spec!r} must be a string like 'dmc:walker-walk'")
    if ":" not in spec:
        suite = next((s for s in sorted(SUITES, key=len, reverse=True)
                      if spec.startswith(f"{s}_")), None)
        if suite is None:
            raise EnvSpecError(f"env spec {spec!r} is not of the form 'suite:task'; "
                               f"{_guess_specs(spec)}suites: {', '.join(sorted(SUITES))}")
        spec = f"{suite}:{spec[len(suite) + 1:]}"
    suite, task = spec.split(":", 1)
    _check_suite(suite, f" in {spec!r}")
    if not task:
        raise EnvSpecError(f"env spec {spec!r} has no task after '{suite}:'")
    return suite, task


def _load_plugin_suites() -> None:
    """Suites that installed packages declare under the entry-point group `dreamjepa.suites`
    (`mysuite = "my_pkg.suite"`), so `dreamer-run --env mysuite:TASK` finds them."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="dreamjepa.suites"):
        SUITES.setdefault(ep.name, ep.value)


def _check_suite(suite: str, where: str = "") -> None:
    """EnvSpecError (one line, with the closest names) unless `suite` is registered."""
    if suite not in SUITES:
        _load_plugin_suites()
    if suite not in SUITES:
        close = closest(suite, sorted(SUITES))
        guess = f"did you mean {', '.join(close)}? " if close else ""
        raise EnvSpecError(f"unknown env suite '{suite}'{where}; {guess}"
                           f"suites: {', '.join(sorted(SUITES))}")


def list_envs(suite: str | None = None) -> list[str]:
    """Every spec one suite, or every suite, offers (`dmc:walker-walk`, ...), sorted by
    suite. With no suite, suites whose optional dependency is missing are left out."""
    if suite is not None:
        _check_suite(suite)
        names = [suite]
    else:
        _load_plugin_suites()
        names = sorted(SUITES)
    specs = []
    for name in names:
        try:
            module = _suite_module(name)
        except EnvSpecError:
            if suite is not None:
                raise
            continue
        lister = getattr(module, "task_names", None)
        specs += [f"{name}:{task}" for task in (lister() if lister else [])]
    return specs


def canonical_spec(spec: str) -> str:
    """The spec in this package's spelling: `dmc_walker_walk` and `dmc:walker_walk` ->
    `dmc:walker-walk`, `atari100k_pong` -> `atari100k:pong`. Imports the suite's module."""
    suite, task = parse_spec(spec)
    fix = getattr(_suite_module(suite), "canonical_task", None)
    return f"{suite}:{fix(task) if fix else task}"


def _guess_specs(name: str) -> str:
    """'did you mean gym:CartPole-v1? ' for a bare task name, from every suite's list."""
    specs = []
    for suite in sorted(SUITES):
        try:
            specs += list_envs(suite)
        except EnvSpecError:
            continue  # a suite whose dependency is missing
    by_task = {spec.split(":", 1)[1]: spec for spec in specs}
    close = [by_task[t] for t in closest(name, list(by_task))]
    return f"did you mean {', '.join(close)}? " if close else ""


def _suite_module(suite: str) -> ModuleType:
    # Each module provides make_env(task, *, suite, **options) -> env (with
    # metadata["action_repeat"] set) and may provide
    # make_vector_env(task, *, suite, num_envs, **options) for a native vector env,
    # task_names() -> list[str] for `list_envs` and the suggestions of unknown names, and
    # canonical_task(task) -> str for `canonical_spec` (other spellings of a task name).
    try:
        return importlib.import_module(SUITES[suite])
    except ImportError as exc:
        raise EnvSpecError(
            f"suite '{suite}' is unavailable because a dependency failed to import: {exc}"
        ) from exc


def make(spec: str, seed: int | None = None, **options: Any) -> gym.Env:
    """Build one env from a spec such as `dmc:walker-walk` or `atari100k:pong`.

    `seed` seeds the first `reset()` that is called without a seed, and the action space.
    `render_mode="rgb_array"` makes `env.render()` return an RGB frame; other keyword
    options are suite specific and unknown ones raise EnvSpecError listing the valid names.
    """
    suite, task = parse_spec(spec)
    env = _suite_module(suite).make_env(task, suite=suite, **options)
    rebuild = EnvSpec(id=canonical_spec(spec), entry_point=functools.partial(make, spec, seed),
                      kwargs=options)
    return SeedOnFirstReset(env, seed, rebuild)


# What a terminal or a job scheduler sends to a whole process group.
GROUP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, n))


class ParentOwnsSignals:
    """An env factory for a vector env's worker process that first makes the worker ignore
    GROUP_SIGNALS (Ctrl-C, SIGTERM, SIGHUP): the parent owns the shutdown (a run finishes
    its step, saves and then closes its workers), where a worker killed by them would break
    its next step or its close. Called in the process that built it (Gymnasium's
    AsyncVectorEnv makes one env there for its spaces) it changes nothing."""

    def __init__(self, fn: Callable[[], gym.Env]) -> None:
        self.fn = fn
        self.parent = os.getpid()

    def __call__(self) -> gym.Env:
        if os.getpid() != self.parent:  # a worker process
            for signum in GROUP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            if hasattr(signal, "pthread_sigmask"):  # blocked while it started: see below
                signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)
        return self.fn()


def async_vector_env(fns: list[Callable[[], gym.Env]], context: str,
                     mode: gym.vector.AutoresetMode) -> gym.vector.AsyncVectorEnv:
    """Gymnasium's AsyncVectorEnv whose workers leave GROUP_SIGNALS to this process. They
    start with those signals blocked (a spawned worker imports for seconds before its
    factory runs; the mask is inherited), and one sent meanwhile reaches this process when
    it unblocks them. Closing kills a worker that hangs (it ignores SIGTERM)."""
    fns = [ParentOwnsSignals(fn) for fn in fns]
    block = hasattr(signal, "pthread_sigmask")
    before = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS) if block else None
    try:
        vec = gym.vector.AsyncVectorEnv(fns, context=context, autoreset_mode=mode)
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
    for process in vec.processes:
        process.terminate = process.kill
    return vec


def make_vector(
    spec: str,
    num_envs: int,
    seed: int | None = None,
    asynchronous: bool | None = None,
    **options: Any,
) -> gym.vector.VectorEnv:
    """Build `num_envs` copies of `spec` as a vector env with NEXT_STEP autoreset.

    After a step where an env terminated or truncated, the next `step()` ignores that env's
    action and returns its reset observation with reward 0. Sub-env `i` is seeded with
    `seed + i` on the first reset. `asynchronous=None` picks worker processes for dmc with
    image observations and in-process stepping otherwise; Atari uses ale-py's threaded
    `AtariVectorEnv` regardless. Worker processes are forked, except for envs that render
    with OpenGL (dmc pixels, gym with images or render_mode): those are spawned, so the
    calling script needs an `if __name__ == "__main__":` guard.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise EnvSpecError(f"num_envs={num_envs!r} is invalid; expected an integer >= 1")
    suite, task = parse_spec(spec)
    module = _suite_module(suite)
    native = getattr(module, "make_vector_env", None)
    vec = native(task, suite=suite, num_envs=num_envs, **options) if native else None
    if vec is None:
        # Build one env up front so bad specs and options fail here, in the caller's process.
        probe = make(spec, **options)
        repeat = probe.metadata["action_repeat"]
        renders = IMAGE_KEY in probe.observation_space.spaces or options.get("render_mode")
        probe.close()
        if asynchronous is None:
            asynchronous = bool(renders) and suite in _ASYNC_WHEN_RENDERING and num_envs > 1
        fns = [functools.partial(make, spec, None, **options) for _ in range(num_envs)]
        mode = gym.vector.AutoresetMode.NEXT_STEP
        if asynchronous:
            # fork starts fast and needs no `if __name__ == "__main__"` guard; spawn does.
            context = "spawn" if renders and suite in _GL_SUITES else "fork"
            vec = async_vector_env(fns, context, mode)
        else:
            vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
        vector_metadata(vec, repeat)
    return VectorSeedOnFirstReset(vec, seed)
