"""How an agent acts given its latent state: a behaviour. `actor` samples the trained actor;
`mppi` (agents/planner.py) plans over the world model's latent interface. Both read the
world model only through that interface (`img_step`, `feat`, `predict_reward`,
`predict_continue`) and the actor-critic's policy and value.

`FUSED` behaviours run inside the agent's acting step (one compiled graph with the
posterior update); others (planners) run after it, and a `compile(device)` method, when
they have one, compiles their pieces on the fast path.

A behaviour is one class plus a config block (its `SECTION`): `register_behavior("mine",
"my_pkg.module:Mine")` and `run.behavior=mine` make the agent act with it, no other edit.
"""

from __future__ import annotations

from typing import Any

import torch

from agents.base import load_entry_point

BEHAVIORS: dict[str, str | type] = {
    "actor": "agents.behaviors:ActorBehavior",
    "mppi": "agents.planner:MPPI",
}


def register_behavior(name: str, entry_point: str | type) -> None:
    """Add a behaviour: a class or `"module:Class"` (imported when first used)."""
    BEHAVIORS[name] = entry_point


def behavior_class(name: str) -> type:
    if name not in BEHAVIORS:
        raise ValueError(f"unknown behavior '{name}'; available: {', '.join(sorted(BEHAVIORS))}")
    return load_entry_point(BEHAVIORS[name])


def _settings(cls: type, config) -> dict:
    section = getattr(cls, "SECTION", None)
    return dict(config[section]) if section else {}


def check_behavior(name: str, config) -> None:
    """Raise ValueError (one line) for an unknown behaviour or settings out of range, before
    anything is built."""
    cls = behavior_class(name)
    if hasattr(cls, "check"):
        cls.check(**_settings(cls, config))


def make_behavior(name: str, wm, ac, act_dim: int, discrete: bool, config, **settings) -> Any:
    """The behaviour `name`, with its config section's settings (none for `actor`), any of
    them replaced by `settings`."""
    cls = behavior_class(name)
    return cls(wm, ac, act_dim, discrete, **{**_settings(cls, config), **settings})


class ActorBehavior:
    """Act with the trained actor: a sample of its distribution (training), or its mode."""

    SECTION = None
    FUSED = True  # one small graph with the observation step (the compiled acting step)

    def __init__(self, wm, ac, act_dim: int, discrete: bool):
        self.wm, self.ac = wm, ac

    def initial(self, batch: int, device: torch.device) -> None:
        """The behaviour's own carry across steps (none for the actor)."""
        return None

    def __call__(self, state: dict, carry: Any, is_first: torch.Tensor, sample: bool
                 ) -> tuple[torch.Tensor, Any]:
        dist = self.ac.policy(self.wm.feat(state))
        return (dist.sample() if sample else dist.mode()), carry
