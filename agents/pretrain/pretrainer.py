"""One training loop for every encoder-pretraining objective, and what to do on collapse.

Objectives (`PRETRAIN_OBJECTIVES`): `jepa` (I-JEPA, world_models/vit_jepa/model.py), `mae` (masked
autoencoder) and `autoencoder` (whole-frame reconstruction), all on the same ViT, so a
comparison at equal steps and batch is a comparison at equal budget.

The schedules follow I-JEPA: AdamW, lr warmed up linearly from 0.2 x peak over the first
10% of steps then cosine to 0.001 x peak, weight decay cosine 0.04 -> 0.4 (weights only,
not norms and biases), gradient norm clipped at 10.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from world_models.diagnostics import check_collapse
from world_models.vit_jepa import JEPA, JEPAConfig, ViTConfig
from world_models.vit_jepa.model import REGULARIZERS
from world_models.vit_jepa.reconstruction import FrameAutoencoder, MaskedAutoencoder

PRETRAIN_OBJECTIVES = ("jepa", "mae", "autoencoder")
# Default weight per regulariser: SIGReg's lambda from LeJEPA; VICReg's variance weight
# (covariance gets 1/25 of it, the paper's ratio); docs/results.md, "Pretraining recipe",
# has the RankMe it keeps beside SIGReg's.
DEFAULT_REG_WEIGHT = {"sigreg": 0.05, "vicreg": 1.0, "none": 0.0}


class PretrainConfigError(ValueError):
    """An objective or regulariser name that does not exist."""


def build_objective(name: str, vit_cfg: ViTConfig, reg: str = "sigreg",
                    reg_weight: float | None = None, **jepa: object) -> nn.Module:
    """The model for one objective; `reg` and `jepa` (JEPAConfig fields: horizon, context,
    action_dim, target_norm, token_weight, target_layers, ema_start, pred_depth, ...) apply
    to JEPA only."""
    if name not in PRETRAIN_OBJECTIVES:
        raise PretrainConfigError(f"objective {name!r}; allowed: {', '.join(PRETRAIN_OBJECTIVES)}")
    if reg not in REGULARIZERS:
        raise PretrainConfigError(f"regulariser {reg!r}; allowed: {', '.join(REGULARIZERS)}")
    changed = {k: v for k, v in jepa.items() if getattr(JEPAConfig, k, None) != v}
    if name != "jepa" and changed:
        raise PretrainConfigError(f"{', '.join(sorted(changed))} apply to the jepa objective "
                                  f"only, not {name}")
    if name == "mae":
        return MaskedAutoencoder(vit_cfg)
    if name == "autoencoder":
        return FrameAutoencoder(vit_cfg)
    weight = DEFAULT_REG_WEIGHT[reg] if reg_weight is None else reg_weight
    try:
        return JEPA(vit_cfg, JEPAConfig(reg=reg, reg_weight=weight, **jepa))
    except (TypeError, ValueError) as err:
        raise PretrainConfigError(str(err)) from None


class Pretrainer:
    """An objective plus AdamW and the I-JEPA lr / weight-decay schedules; one call per step.
    `reg_weight` is the regulariser weight in use (the collapse guard may raise it)."""

    def __init__(self, model: nn.Module, steps: int, lr: float = 1e-3, warmup_frac: float = 0.1,
                 wd: tuple[float, float] = (0.04, 0.4)) -> None:
        self.model, self.steps, self.lr, self.wd = model, steps, lr, wd
        self.warmup = max(1, int(warmup_frac * steps))
        cfg = getattr(model, "cfg", None)
        self.reg_weight = float(getattr(cfg, "reg_weight", 0.0))
        params = [p for n, p in model.named_parameters() if not n.startswith("target.")]
        self.decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": self.decay, "weight_decay": wd[0]},
             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (0.2 + 0.8 * step / self.warmup)
        frac = min((step - self.warmup) / max(1, self.steps - self.warmup), 1.0)
        return self.lr * (0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * frac)))

    def wd_at(self, step: int) -> float:
        frac = min(step / max(1, self.steps), 1.0)
        return self.wd[1] + (self.wd[0] - self.wd[1]) * 0.5 * (1 + math.cos(math.pi * frac))

    def step(self, step: int, clip: torch.Tensor, gen: torch.Generator,
             actions: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on a batch of clips (and, for an action-conditioned JEPA, the
        actions between their frames)."""
        self.model.train()
        lr, wd = self.lr_at(step), self.wd_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.param_groups[0]["weight_decay"] = wd
        extra = {"actions": actions} if self.model.needs_actions else {}
        losses = self.model.loss(clip, gen, reg_weight=self.reg_weight, **extra)
        self.opt.zero_grad(set_to_none=True)
        losses["loss/total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in self.opt.param_groups for p in g["params"]], 10.0)
        self.opt.step()
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(self.model.after_step(step, self.steps))
        out.update({"train/lr": lr, "train/wd": wd, "train/grad_norm": float(grad_norm),
                    "train/reg_weight": self.reg_weight})
        return out


ACTIONS = ("adapt", "stop", "warn")


@dataclass
class CollapseGuard:
    """Keeps the best state by the collapse diagnostics and acts when they fire.

    The best state is the one with the highest RankMe among healthy diagnostics after step 0
    (the initial state stands in until there is one). When a diagnostic finds collapse
    (`check_collapse`, or RankMe below `min_rank_frac` of the embedding width):
    - `adapt` (default): roll the model and optimiser back to the best state and multiply
      the JEPA regulariser weight by `boost` (a JEPA without one gets SIGReg at its default
      weight; the reconstruction baselines only roll back), then train on with fresh
      batches; after `max_adapts` rollbacks it stops instead;
    - `stop`: roll back to the best state and stop;
    - `warn`: only warn, as before.
    """

    action: str = "adapt"
    min_rank_frac: float = 0.1
    max_adapts: int = 3
    boost: float = 4.0
    adapts: int = 0
    best: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise PretrainConfigError(f"on-collapse {self.action!r}; allowed: {', '.join(ACTIONS)}")

    def findings(self, metrics: dict[str, float], d: int, n: int) -> list[str]:
        out = check_collapse(metrics, d=d, n=n, warn=False)
        rank = metrics["collapse/rankme"]
        if rank < self.min_rank_frac * min(d, n):
            out.append(f"RankMe {rank:.1f} < {self.min_rank_frac:.0%} of {min(d, n)}")
        return out

    def observe(self, step: int, metrics: dict[str, float], d: int, n: int,
                trainer: Pretrainer) -> tuple[str, list[str]]:
        """Record one diagnostic; returns (what happened, findings): "ok", "adapted",
        "stopped" or "warned"."""
        found = self.findings(metrics, d, n)
        rank = metrics["collapse/rankme"]
        if not found:
            if not self.best or self.best["step"] == 0 or rank > self.best["rankme"]:
                self.best = {"step": step, "rankme": rank, **_state(trainer)}
            return "ok", found
        if self.action == "warn" or not self.best:
            check_collapse(metrics, d=d, n=n)  # the usual CollapseWarning
            return "warned", found
        _restore(trainer, self.best)
        if self.action == "adapt" and self.adapts < self.max_adapts:
            self.adapts += 1
            model = trainer.model
            if isinstance(model, JEPA):
                if model.cfg.reg == "none":
                    model.cfg = replace(model.cfg, reg="sigreg")
                    trainer.reg_weight = DEFAULT_REG_WEIGHT["sigreg"]
                else:
                    trainer.reg_weight *= self.boost
            return "adapted", found
        return "stopped", found

    def state_dict(self, trainer: Pretrainer) -> dict:
        """What a resume needs: rollbacks so far, the best state and the regulariser in use."""
        reg = trainer.model.cfg.reg if isinstance(trainer.model, JEPA) else "none"
        return {"adapts": self.adapts, "best": self.best, "reg": reg,
                "reg_weight": trainer.reg_weight}

    def load_state_dict(self, state: dict, trainer: Pretrainer) -> None:
        self.adapts, self.best = state["adapts"], state["best"]
        trainer.reg_weight = state["reg_weight"]
        if isinstance(trainer.model, JEPA):
            trainer.model.cfg = replace(trainer.model.cfg, reg=state["reg"])


def _state(trainer: Pretrainer) -> dict:
    return {"model": copy.deepcopy(trainer.model.state_dict()),
            "opt": copy.deepcopy(trainer.opt.state_dict())}


def _restore(trainer: Pretrainer, best: dict) -> None:
    trainer.model.load_state_dict(best["model"])
    trainer.opt.load_state_dict(best["opt"])
