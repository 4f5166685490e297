"""Load a trained agent from a run directory or checkpoint and ask it for actions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import envs
from agents.base import Agent, make_agent
from agents.compiled import resolve_compile
from agents.run.checkpoint import CheckpointError, load_checkpoint
from agents.run.config import Config, override_config
from agents.run.rundir import RunDir
from agents.runtime import select_device


def find_run(path: str | Path) -> tuple[Path, Path]:
    """(run directory, agent checkpoint file) for a logdir, its checkpoint dir or file."""
    try:
        run, file = RunDir.find(path)
    except FileNotFoundError as err:
        raise CheckpointError(str(err)) from None
    return run.path, file


def load_agent(path: str | Path, device: str = "auto", overrides: Sequence[str] = (),
               compile: str = "off") -> tuple[Agent, Config]:
    """Rebuild the agent of a run and load its weights; `overrides` (`key=value`) change
    settings that do not shape the weights (the behaviour's, e.g. `mppi.samples=256`);
    `compile` (auto | on | off) picks the fast acting path (off: eager, no warm-up).

    >>> agent, cfg = load_agent("runs/dmc-walker-walk-state/dreamerv3-1m-seed0")
    >>> env = envs.make(cfg.env.spec, **cfg.env.options.to_dict())
    """
    logdir, file = find_run(path)
    cfg = override_config(Config.from_yaml(RunDir(logdir).config), overrides)
    dev, precision = select_device(device, cfg.precision)
    probe = envs.make(cfg.env.spec, seed=cfg.seed, **cfg.env.options.to_dict())
    try:
        agent = make_agent(cfg.agent, probe.observation_space, probe.action_space, cfg,
                           device=dev, precision=precision, compile=resolve_compile(compile, dev))
    finally:
        probe.close()
    state = load_checkpoint(file)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError) as err:
        msg = str(err).splitlines()[0]
        raise CheckpointError(f"checkpoint {file} does not match its config: {msg}") from None
    return agent, cfg
