"""The numeric config keys and the values they allow: checked once a config is resolved,
before anything is built, so `--set run.train_ratio=0` is a one-line error, not a run that
"finishes" with 0 updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Numeric keys and the values they allow: (lowest, highest, whether lowest itself is allowed).
RANGES: dict[str, tuple[float, float, bool]] = {
    "seed": (0, float("inf"), True),
    "threads": (0, 4096, True),
    "env.num_envs": (1, 4096, True),
    "env.eval_envs": (1, 4096, True),
    "run.steps": (1, float("inf"), True),
    "run.train_ratio": (0, float("inf"), False),
    "run.prefill": (0, float("inf"), True),
    "run.log_every": (0, float("inf"), True),
    "run.save_every": (0, float("inf"), False),
    "run.eval_every": (1, float("inf"), True),
    "run.eval_episodes": (0, float("inf"), True),
    "run.report_every": (1, float("inf"), True),
    "run.max_bad_updates": (1, float("inf"), True),
    "replay.size": (1, float("inf"), True),
    "replay.batch_size": (1, 65536, True),
    "replay.batch_length": (2, 65536, True),
    "replay.recency": (0, 1, True),
    "replay.context": (0, 65536, True),
    "opt.lr": (0, 1, False),
    "opt.agc": (0, float("inf"), False),
    "opt.eps": (0, 1, False),
    "opt.beta1": (0, 1, True),
    "opt.beta2": (0, 1, True),
    "opt.warmup": (0, float("inf"), True),
    "actor_critic.imag_length": (1, 1000, True),
    "actor_critic.horizon": (1, float("inf"), False),
    "actor_critic.lam": (0, 1, True),
    "actor_critic.slow_rate": (0, 1, True),
    "model.rssm.deter": (1, float("inf"), True),
    "model.rssm.hidden": (1, float("inf"), True),
    "model.rssm.stoch": (1, float("inf"), True),
    "model.rssm.classes": (1, float("inf"), True),
    "model.rssm.blocks": (1, float("inf"), True),
    "model.diag_every": (0, float("inf"), True),
}


def range_error(cfg: Mapping[str, Any]) -> str | None:
    """One line naming the first numeric key outside its range, or None."""
    for key, (lo, hi, lo_ok) in RANGES.items():
        value = _get(cfg, key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if (value > lo or (lo_ok and value == lo)) and value <= hi:
            continue
        low = f">= {lo:g}" if lo_ok else f"> {lo:g}"
        allowed = low if hi == float("inf") else f"{low} and <= {hi:g}"
        return f"config key '{key}' = {value!r} is out of range; allowed: {allowed}"
    return None


def _get(data: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data
