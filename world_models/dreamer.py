"""The DreamerV3 world model: encoder -> RSSM -> decoder, reward and continue heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from world_models.diagnostics import distinct_rows, latent_diagnostics
from world_models.dists import Bernoulli, TwoHot
from world_models.encoders import MultiDecoder, MultiEncoder
from world_models.nets import mlp
from world_models.rssm import RSSM, State


class RewardHead(nn.Module):
    """Two-hot symexp head (255 bins); zero-initialised output so it predicts 0 first."""

    def __init__(self, feat_dim: int, layers: int = 1, units: int = 1024, bins: int = 255,
                 outscale: float = 0.0):
        super().__init__()
        self.net = mlp(feat_dim, layers, units, bins, outscale=outscale)

    def forward(self, feat: torch.Tensor) -> TwoHot:
        return TwoHot(self.net(feat))


class ContinueHead(nn.Module):
    """Bernoulli head on the probability that the episode continues."""

    def __init__(self, feat_dim: int, layers: int = 1, units: int = 1024, outscale: float = 1.0):
        super().__init__()
        self.net = mlp(feat_dim, layers, units, 1, outscale=outscale)

    def forward(self, feat: torch.Tensor) -> Bernoulli:
        return Bernoulli(self.net(feat).squeeze(-1))


class DreamerWorldModel(nn.Module):
    """World model with paper-named methods: `encode`, `observe`, `imagine`, `loss`."""

    def __init__(
        self,
        obs_shapes: Mapping[str, Sequence[int]],
        act_dim: int,
        rssm: Mapping,
        encoder: Mapping,
        decoder: Mapping,
        reward_head: Mapping,
        cont_head: Mapping,
        loss_scales: Mapping[str, float],
        custom_encoder: nn.Module | None = None,
        diag_every: int = 0,
    ):
        super().__init__()
        self.encoder = custom_encoder if custom_encoder is not None else MultiEncoder(
            obs_shapes, **encoder)
        self.rssm = RSSM(self.encoder.out_dim, act_dim, **rssm)
        feat = self.rssm.feat_dim
        self.decoder = MultiDecoder(feat, obs_shapes, **decoder)
        self.reward = RewardHead(feat, **reward_head)
        self.cont = ContinueHead(feat, **cont_head)
        self.scales = dict(loss_scales)
        self.diag_every = int(diag_every)
        self._loss_calls = 0

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(obs)

    def observe(self, embed, action, is_first, state: State | None = None):
        return self.rssm.observe(embed, action, is_first, state)

    def imagine(self, start: State, policy, horizon: int):
        return self.rssm.imagine(start, policy, horizon)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict, State, dict]:
        """Named [B, T] loss terms, the posterior states, and metrics.

        Terms: `dyn`, `rep` (KL with free bits), `rec_image`/`rec_vector`, `rew`, `con`.
        """
        embed = self.encode(batch)
        post, prior = self.observe(embed, batch["action"], batch["is_first"])
        feat = self.rssm.feat(post)
        losses = {}
        losses["dyn"], losses["rep"] = self.rssm.kl_losses(post, prior)
        losses.update(self.decoder.loss(self.decoder(feat), batch))
        losses["rew"] = self.reward(feat).loss(batch["reward"])
        losses["con"] = self.cont(feat).loss(1.0 - batch["is_terminal"].float())
        with torch.no_grad():
            ent = -(post["logits"].exp() * post["logits"]).sum((-2, -1)).mean()
            prior_ent = -(prior["logits"].exp() * prior["logits"]).sum((-2, -1)).mean()
        metrics = {"train/post_ent": ent, "train/prior_ent": prior_ent}
        metrics.update(self.periodic_diagnostics(embed, feat, batch))
        return losses, post, metrics

    def periodic_diagnostics(self, embed, feat, obs) -> dict[str, float]:
        """Collapse diagnostics on every `diag_every`-th loss call (none when 0)."""
        self._loss_calls += 1
        if self.diag_every <= 0 or (self._loss_calls - 1) % self.diag_every:
            return {}
        return self.diagnostics(embed, feat, distinct=distinct_rows(obs))

    @torch.no_grad()
    def diagnostics(self, embed: torch.Tensor, feat: torch.Tensor, warn: bool = True,
                    distinct: int | None = None, **thresholds: float) -> dict[str, float]:
        """RankMe, std score and spectrum of the encoder embeddings and RSSM features
        (`collapse/embed_*`, `collapse/feat_*`), warning on collapse; see `latent_diagnostics`."""
        return latent_diagnostics({"embed": embed, "feat": feat}, warn, distinct, **thresholds)

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scaled sum of mean loss terms; `rec_*` terms share the `rec` scale."""
        total = 0.0
        for name, value in losses.items():
            key = "rec" if name.startswith("rec_") else name
            total = total + self.scales[key] * value.mean()
        return total
