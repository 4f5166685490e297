"""The Agent interface and the registry that picks agents by name.

The registry holds entry points (`"module:Class"`, as Gymnasium's) and imports an agent's
module only when that agent is made, so agent modules can import this one without a cycle.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

AGENTS: dict[str, str | type[Agent]] = {
    "dreamerv3": "agents.dreamerv3:DreamerV3Agent",
    "jepa": "agents.dreamerv3:JEPAAgent",
}


@dataclass
class ReplayWrite:
    """Values an update computed for the steps it trained on, to store back into replay:
    `values[key]` is [B, T', ...] for the batch's steps `start` .. `start + T' - 1` (a
    stored key; DreamerV3's replay context writes its fresher latents this way, and a
    prioritised sampler's priorities would go the same way)."""

    values: dict[str, torch.Tensor]
    start: int = 0


class UnknownAgentError(ValueError):
    """Raised for an agent name that is not registered."""


def register(name: str, entry_point: str | type[Agent] | None = None):
    """Add an agent: `register("mine", "my_pkg.agent:MyAgent")` or `register("mine", MyAgent)`;
    with no entry point, a class decorator (`@register("mine")`)."""
    if entry_point is None:
        def deco(cls):
            AGENTS[name] = cls
            return cls

        return deco
    AGENTS[name] = entry_point
    return entry_point


def load_entry_point(entry: str | type) -> type:
    """A registry entry as a class: `"module:Class"` is imported (on first use), a class is
    itself."""
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
    return entry


def _load_plugin_agents() -> None:
    """Agents that installed packages declare under the entry-point group `dreamjepa.agents`
    (`mine = "my_pkg.agent:MyAgent"`), so `dreamer-run --agent mine` finds them in a fresh
    process (a `register` call lasts only for the process that makes it)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="dreamjepa.agents"):
        AGENTS.setdefault(ep.name, ep.value)


def agent_class(name: str) -> type[Agent]:
    """The class registered as `name`, importing its module on first use."""
    if name not in AGENTS:
        _load_plugin_agents()
    if name not in AGENTS:
        raise UnknownAgentError(f"unknown agent '{name}'; available: {', '.join(sorted(AGENTS))}")
    return load_entry_point(AGENTS[name])


def make_agent(name: str, obs_space: gym.spaces.Dict, act_space: gym.Space, config,
               **kwargs) -> Agent:
    """Build the agent registered as `name` (the trainer passes `device`, `precision` and
    `compile`: a bool, whether to use a compiled fast path if the agent has one)."""
    return agent_class(name)(obs_space, act_space, config, **kwargs)


class Agent(ABC):
    """An agent acts with an explicit carry and trains on [B, T] replay batches."""

    obs_space: gym.spaces.Dict  # the observation space it was built for (eval envs match it)
    act_space: gym.Space
    # Replay context (DreamerV3's `replay_context`): an agent with `latent_spec` stores its
    # latent state beside every replayed step; a training batch is then `replay_context`
    # steps longer, its first steps only give the stored state to start from.
    replay_context: int = 0
    step: int = 0  # updates trained so far (`dreamer-eval` reports it); an agent counts them

    def set_behavior(self, name: str, **settings: Any) -> None:
        """Act with behaviour `name` from now on (`dreamer-eval --behavior`, the planning
        benchmark). An agent that acts only through its own `policy` takes `actor`."""
        if name != "actor" or settings:
            raise ValueError(f"agent {type(self).__name__} acts with its own policy only "
                             f"(behavior 'actor'), not {name!r}")

    @abstractmethod
    def policy(self, obs: Mapping[str, np.ndarray], carry: Any, mode: str = "train"
               ) -> tuple[np.ndarray, Any]:
        """Actions (model format: one-hot for discrete) for a batch of observations.

        `obs` holds observation keys and `is_first` [N]; `carry` is None at the start.
        `mode` is "train" (sample), "eval" (mode of the policy) or "random"."""

    @abstractmethod
    def features(self, obs: Mapping[str, np.ndarray], carry: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """For diagnostics: the encoder embeddings [N, D] of `obs` and the latent features
        [N, F] held in `carry`, the carry `policy` returned for these observations."""

    @abstractmethod
    def train(self, batch) -> dict[str, float]:
        """One gradient update on a [B, T] TensorDict; returns namespaced metrics."""

    @abstractmethod
    def report(self, batch) -> dict[str, Any]:
        """Metrics (`openl/...`) and, for image observations, `openl`: a (truth,
        prediction) pair of [N, T, H, W, C] float arrays in [0, 1]."""

    def latent_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Replay keys the agent stores with each step besides the observation: {key:
        (shape, dtype)}, zeros until filled (the replay context's latent state; a frozen
        encoder's embeddings); empty (the default) for an agent that stores none."""
        return {}

    def latent_entries(self, carry: Any) -> dict[str, np.ndarray]:
        """The `latent_spec` entries [N, ...] of the carry `policy` just returned, stored
        with the observations it saw; empty when the carry holds none (a random policy)."""
        return {}

    def trained_latents(self) -> dict[str, torch.Tensor]:
        """The `latent_spec` entries [B, T] the last `train` computed for its batch's steps
        after the context (fresher than the acting-time ones); handed out once."""
        return {}

    def replay_writes(self) -> list[ReplayWrite]:
        """What the last `train` wants stored back at the steps it replayed; the trainer
        writes each at its place in the sampled batch. By default the trained latents,
        which belong to the steps after the replay context."""
        latents = self.trained_latents() if self.replay_context else {}
        return [ReplayWrite(latents, start=self.replay_context)] if latents else []

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...
