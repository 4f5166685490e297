"""The Agent interface and the registry that picks agents by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

AGENTS: dict[str, Callable[..., Agent]] = {}


class UnknownAgentError(ValueError):
    """Raised for an agent name that is not registered."""


def register(name: str):
    """Class decorator adding an agent to the registry under `name`."""

    def deco(cls):
        AGENTS[name] = cls
        return cls

    return deco


def make_agent(name: str, obs_space: gym.spaces.Dict, act_space: gym.Space, config,
               **kwargs) -> Agent:
    import agents.dreamerv3  # noqa: F401  (registers dreamerv3)
    import agents.jepa_agent  # noqa: F401  (registers jepa)

    if name not in AGENTS:
        raise UnknownAgentError(f"unknown agent '{name}'; available: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](obs_space, act_space, config, **kwargs)


class Agent(ABC):
    """An agent acts with an explicit carry and trains on [B, T] replay batches."""

    @abstractmethod
    def policy(self, obs: Mapping[str, np.ndarray], carry: Any, mode: str = "train"
               ) -> tuple[np.ndarray, Any]:
        """Actions (model format: one-hot for discrete) for a batch of observations.

        `obs` holds observation keys and `is_first` [N]; `carry` is None at the start.
        `mode` is "train" (sample), "eval" (mode of the policy) or "random"."""

    @abstractmethod
    def train(self, batch) -> dict[str, float]:
        """One gradient update on a [B, T] TensorDict; returns namespaced metrics."""

    @abstractmethod
    def report(self, batch) -> dict[str, Any]:
        """Metrics (`openl/...`) and, for image observations, `openl`: a (truth,
        prediction) pair of [N, T, H, W, C] float arrays in [0, 1]."""

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...
