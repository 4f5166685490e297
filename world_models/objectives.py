"""Representation objectives of the world model: the loss terms that shape its latent state
besides the shared KL, reward and continue terms. Each objective is a module of the world
model, registered by name (`@register_objective`); `model.objective` in the config picks one,
and the world model builds it from an `ObjectiveContext` and the objective's own config
section (`SECTION`; its `scales` join the loss scales). `reconstruction` (DreamerV3's
decoder) lives here, `latent` (JEPA) in `world_models.latent_objective`. A new objective is
one registered class plus its config section: nothing else is edited.

An objective declares its loss terms at construction (`terms`: term -> config scale name),
so the world model can check that every term has a scale and every scale a term.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from world_models.dists import symlog
from world_models.encoders import IMAGE_KEY, VECTOR_KEY, MultiDecoder
from world_models.rssm import RSSM, State


@dataclass(frozen=True)
class ObjectiveContext:
    """What the world model gives every objective it builds."""

    encoder: nn.Module  # the world model's (online) encoder
    feat_dim: int  # RSSM feature size
    obs_shapes: Mapping[str, Sequence[int]]
    act_dim: int
    discrete: bool  # the action space's kind
    decoder: Mapping  # the config's decoder settings (model.decoder)
    units: int  # the model's head width (model.reward_head.units), a default for MLPs


class Objective(nn.Module, ABC):
    """Base of the representation objectives: loss terms, open-loop report, after-step hook.

    Subclasses take `(context, **settings)`, the settings being their config section's keys
    (less `scales`)."""

    # The config scale names this objective reads (its term groups, whether active or not).
    SCALES: tuple[str, ...] = ()
    # The top-level config section holding its settings; None: it has none.
    SECTION: str | None = None
    # That section's default values (with `scales`), for objectives added outside the
    # built-in config (agents/run/configs/defaults.yaml holds the built-in ones' sections).
    DEFAULTS: Mapping[str, Any] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.terms: dict[str, str] = {}
        self.decoder: MultiDecoder | None = None

    @abstractmethod
    def loss(self, batch: Mapping[str, torch.Tensor], embed: torch.Tensor, post: State,
             feat: torch.Tensor, rssm: RSSM) -> tuple[dict[str, torch.Tensor], dict]:
        """Named [B, T] loss terms (exactly `self.terms`) and metrics."""

    @abstractmethod
    def report(self, data: Mapping[str, torch.Tensor], feat: torch.Tensor, context: int
               ) -> dict[str, Any]:
        """Open-loop metrics (`openl/...`) from the features of `WorldModel.open_loop`."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. an EMA target update)."""


OBJECTIVES: dict[str, type[Objective]] = {}


def register_objective(name: str):
    """Class decorator: make `model.objective=<name>` build this objective."""

    def add(cls: type[Objective]) -> type[Objective]:
        if not (isinstance(cls, type) and issubclass(cls, Objective)):
            raise TypeError(f"objective {name!r} must subclass world_models.objectives.Objective")
        OBJECTIVES[name] = cls
        return cls

    return add


def objective_class(name: str) -> type[Objective]:
    """The objective registered as `name`; ValueError (one line) naming those there are."""
    import world_models.latent_objective  # noqa: F401  (registers `latent`)

    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r} unknown; allowed: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


def decoder_terms(decoder: MultiDecoder, prefix: str = "") -> dict[str, str]:
    """The decoder's loss terms (`rec_image`, `rec_vector`, prefixed) -> their scale name."""
    return {f"{prefix}rec_{k}": f"{prefix}rec" for k in decoder.keys}


@torch.no_grad()
def decoder_report(decoder: MultiDecoder, data: Mapping[str, torch.Tensor],
                   feat: torch.Tensor, context: int) -> dict[str, Any]:
    """`openl/mse_<key>_observed|imagined` of the decoded open-loop features and, for images,
    `openl`: a (truth, prediction) pair of [N, T, H, W, C] float arrays in [0, 1]."""
    recon = decoder(feat)
    targets = {}
    if IMAGE_KEY in recon:
        targets[IMAGE_KEY] = data[IMAGE_KEY].float() / 255.0
    if VECTOR_KEY in recon:
        targets[VECTOR_KEY] = symlog(data[VECTOR_KEY].float())
    out: dict[str, Any] = {}
    for key, target in targets.items():
        err = (recon[key].float() - target).pow(2)
        out[f"openl/mse_{key}_observed"] = float(err[:, :context].mean())
        out[f"openl/mse_{key}_imagined"] = float(err[:, context:].mean())
    if IMAGE_KEY in recon:
        out["openl"] = (targets[IMAGE_KEY].cpu().numpy(), recon[IMAGE_KEY].float().cpu().numpy())
    return out


@register_objective("reconstruction")
class ReconstructionObjective(Objective):
    """DreamerV3's objective: decode the observations from the features (`rec_image`,
    `rec_vector`: summed squared error per step). Its scale `rec` is in model.loss_scales."""

    SCALES = ("rec",)

    def __init__(self, context: ObjectiveContext) -> None:
        super().__init__()
        self.decoder = MultiDecoder(context.feat_dim, context.obs_shapes, **context.decoder)
        self.terms = decoder_terms(self.decoder)

    def loss(self, batch, embed, post, feat, rssm):
        return self.decoder.losses(feat, batch), {}

    def report(self, data, feat, context):
        return decoder_report(self.decoder, data, feat, context)
