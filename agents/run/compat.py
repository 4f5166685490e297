"""Reading runs that older versions of this project wrote: every such rule in one place.

Each function takes what an old run directory holds and returns what the current code
expects, so `dreamer-run` resumes and `dreamer-eval` loads runs written before a change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def upgrade_run_config(data: Any, agent_presets: Mapping[str, Mapping[str, Any]]
                       ) -> tuple[Any, dict[str, Any]]:
    """An old `config.yaml`'s data, upgraded, and the extra defaults it implies.

    - Runs written before the encoder moved into the model section have a top-level
      `encoder: {name, mode, lr_scale}`: it becomes `model.encoder.{kind, mode, lr_scale}`
      (name `default` -> kind `cnn`).
    - Runs written before agent presets existed name an agent whose preset values they
      implied (`jepa`: `model.objective=latent`): those become defaults under the data.
    """
    extra: dict[str, Any] = {}
    if isinstance(data, Mapping) and data.get("agent") in agent_presets:
        extra = dict(agent_presets[data["agent"]])
    old = data.get("encoder") if isinstance(data, Mapping) else None
    if not isinstance(old, Mapping):
        return data, extra
    data = {k: v for k, v in data.items() if k != "encoder"}
    model = dict(data.get("model") or {})
    new = dict(model.get("encoder") or {})
    name = old.get("name", "default")
    new.setdefault("kind", "cnn" if name == "default" else name)
    new.update({k: old[k] for k in ("mode", "lr_scale") if k in old and k not in new})
    model["encoder"] = new
    data["model"] = model
    return data, extra


def saved_rng_state(checkpoint: Mapping[str, Any]) -> Any | None:
    """The RNG streams a checkpoint saved; None for checkpoints written before they were
    saved (such runs resume with fresh streams)."""
    return checkpoint.get("rng")
