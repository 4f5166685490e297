"""JEPA world model: the DreamerV3 RSSM trained to predict the EMA target encoder's
embedding of the next observations instead of their pixels.

Prediction loss (`jepa_post`, `jepa_open`): mean squared error between the layer-normed
predictor output and the layer-normed target embedding, averaged over dimensions. With both
sides normalised per sample this equals 2 * (1 - Pearson correlation), so it lies in [0, 4]
whatever the embedding scale, and a prediction cannot win by shrinking its norm.

- `jepa_post`: predictor on the posterior feature of step t -> target t (teacher forced).
- `jepa_open`: the prior rolled k = 1..K steps from the posterior of step t with the recorded
  actions -> target t + k; weights decay ** (k - 1), normalised to sum 1; rolls that cross an
  episode start are masked out.
- Safeguards: `vicreg` (variance + covariance of the online embeddings, official ratio
  25 : 1), `inverse` (a_t from the online embeddings of t - 1 and t), `stop_grad` (targets
  from the EMA encoder without gradient; off, the online encoder itself is the target, with
  gradient: the textbook collapsible set-up).
- An optional probe decoder reconstructs observations from DETACHED features (every
  `probe_stride`-th step, to stay cheap), giving the open-loop video without sending
  gradients into the model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from world_models.dreamer import DreamerWorldModel
from world_models.nets import mlp
from world_models.rssm import State

# Official VICReg coefficients (Bardes et al. 2022): invariance 25, variance 25, covariance 1.
VICREG_VAR, VICREG_COV = 25.0, 1.0


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm over the last axis (computed in fp32)."""
    return F.layer_norm(x.float(), x.shape[-1:])


def prediction_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE of layer-normed vectors (= 2 * (1 - correlation)); shape pred[..., 0]."""
    return (layer_norm(pred) - layer_norm(target)).pow(2).mean(-1)


def vicreg_terms(z: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg variance hinge (std below 1) and mean squared off-diagonal covariance of z [N, D]."""
    z = z.reshape(-1, z.shape[-1]).float()
    z = z - z.mean(0)
    std = torch.sqrt(z.var(0) + eps)
    var = F.relu(1.0 - std).mean()
    n, d = z.shape
    cov = z.T @ z / max(n - 1, 1)
    off = cov - torch.diag(torch.diagonal(cov))
    return var, off.pow(2).sum() / d


def open_loop_weights(horizon: int, decay: float) -> list[float]:
    """Weights of the k = 1..horizon open-loop terms: decay ** (k - 1), summing to 1."""
    raw = [decay ** (k - 1) for k in range(1, horizon + 1)]
    return [w / sum(raw) for w in raw]


class JEPAWorldModel(DreamerWorldModel):
    """DreamerV3 world model with latent (JEPA) prediction in place of pixel reconstruction."""

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
        jepa: Mapping,
        discrete: bool,
        custom_encoder: nn.Module | None = None,
        diag_every: int = 0,
    ):
        super().__init__(obs_shapes, act_dim, rssm, encoder, decoder, reward_head, cont_head,
                         loss_scales, custom_encoder=custom_encoder, diag_every=diag_every)
        cfg = dict(jepa)
        self.ema = float(cfg["ema"])
        if not 0.0 <= self.ema <= 1.0:
            raise ValueError(f"jepa.ema={self.ema} is invalid; expected a rate in [0, 1]")
        self.horizon = int(cfg["horizon"])
        if self.horizon < 0:
            raise ValueError(f"jepa.horizon={self.horizon} is invalid; expected >= 0")
        self.weights = open_loop_weights(self.horizon, float(cfg["decay"]))
        self.stop_grad = bool(cfg["stop_grad"])
        self.use_vicreg, self.use_inverse = bool(cfg["vicreg"]), bool(cfg["inverse"])
        self.probe_stride = int(cfg["probe_stride"])
        if self.probe_stride < 1:
            raise ValueError(f"jepa.probe_stride={self.probe_stride} is invalid; expected >= 1")
        self.discrete = discrete
        feat, emb = self.rssm.feat_dim, self.encoder.out_dim
        pcfg = cfg["predictor"]
        units = int(pcfg["units"]) or int(reward_head["units"])
        self.predictor = mlp(feat, int(pcfg["layers"]), units, emb)
        self.inverse = mlp(2 * emb, int(pcfg["layers"]), units, act_dim) if self.use_inverse \
            else None
        if not cfg["probe_decoder"]:
            self.decoder = None  # no pixel decoder at all: the point of this model
        # The target encoder: an EMA copy, never trained by gradient.
        self.target_encoder = copy.deepcopy(self.encoder)
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.scales.update(cfg["scales"])

    # -- target encoder ------------------------------------------------------------
    @torch.no_grad()
    def update_target(self) -> None:
        """target <- ema * target + (1 - ema) * online (parameters; buffers are copied)."""
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(o.detach(), 1.0 - self.ema)
        for t, o in zip(self.target_encoder.buffers(), self.encoder.buffers()):
            t.copy_(o)

    def targets(self, obs: Mapping[str, torch.Tensor], online: torch.Tensor) -> torch.Tensor:
        """Prediction targets: the EMA encoder without gradient, or (stop_grad off) the
        online embedding itself, gradient included."""
        if not self.stop_grad:
            return online
        with torch.no_grad():
            return self.target_encoder(obs).float()

    def predict(self, feat: torch.Tensor) -> torch.Tensor:
        """Predicted target embedding from an RSSM feature."""
        return self.predictor(feat)

    # -- losses --------------------------------------------------------------------
    def _open_loop(self, post: State, batch: Mapping, target: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted k-step prior rollouts from every posterior state that has K steps ahead;
        also returns the mean unweighted 1-step error (a diagnostic)."""
        B, T = target.shape[:2]
        K = min(self.horizon, T - 1)
        if K <= 0:
            return target.new_zeros(B, 1), None
        n = T - K
        state = {k: post[k][:, :n].reshape(B * n, *post[k].shape[2:]) for k in ("deter", "stoch")}
        valid = torch.ones(B, n, device=target.device)
        total = target.new_zeros(B, n)
        for k in range(1, K + 1):
            action = batch["action"][:, k:k + n].reshape(B * n, -1)
            state = self.rssm.img_step(state, action)
            # A roll that passes an episode start predicts across a reset: drop it.
            valid = valid * (~batch["is_first"][:, k:k + n].bool()).float()
            err = prediction_error(self.predict(self.rssm.feat(state)).reshape(B, n, -1),
                                   target[:, k:k + n])
            total = total + self.weights[k - 1] * valid * err
            if k == 1:
                first = ((valid * err).sum() / valid.sum().clamp(min=1)).detach()
        return total, first

    def _inverse(self, embed: torch.Tensor, batch: Mapping) -> torch.Tensor:
        x = torch.cat([embed[:, :-1], embed[:, 1:]], -1)
        out = self.inverse(x).float()
        action = batch["action"][:, 1:].float()
        if self.discrete:
            loss = -(action * F.log_softmax(out, -1)).sum(-1)
        else:
            loss = (out - action).pow(2).sum(-1)
        return loss * (~batch["is_first"][:, 1:].bool()).float()

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[dict, State, dict]:
        """Named loss terms (see the module docstring), the posterior states, and metrics."""
        embed = self.encode(batch)
        target = self.targets(batch, embed)
        post, prior = self.observe(embed, batch["action"], batch["is_first"])
        feat = self.rssm.feat(post)
        losses = {}
        losses["dyn"], losses["rep"] = self.rssm.kl_losses(post, prior)
        losses["rew"] = self.reward(feat).loss(batch["reward"])
        losses["con"] = self.cont(feat).loss(1.0 - batch["is_terminal"].float())
        losses["jepa_post"] = prediction_error(self.predict(feat), target)
        losses["jepa_open"], one_step = self._open_loop(post, batch, target)
        if self.use_vicreg:
            var, cov = vicreg_terms(embed)
            losses["vicreg"] = VICREG_VAR * var + VICREG_COV * cov
        if self.use_inverse:
            losses["inverse"] = self._inverse(embed, batch)
        if self.decoder is not None:
            # Every probe_stride-th step only: the probe is a viewer, not worth a full decoder.
            s = self.probe_stride
            recon = self.decoder(feat[:, ::s].detach())
            sub = {k: batch[k][:, ::s] for k in self.decoder.keys}
            losses.update({f"probe_{k}": v for k, v in self.decoder.loss(recon, sub).items()})
        metrics = self._metrics(post, prior, embed, feat, target, batch)
        if one_step is not None:
            metrics["jepa/pred_1step"] = one_step
        return losses, post, metrics

    @torch.no_grad()
    def _metrics(self, post, prior, embed, feat, target, obs) -> dict:
        is_first = obs["is_first"]
        ent = -(post["logits"].exp() * post["logits"]).sum((-2, -1)).mean()
        prior_ent = -(prior["logits"].exp() * prior["logits"]).sum((-2, -1)).mean()
        metrics = {"train/post_ent": ent, "train/prior_ent": prior_ent}
        if target.shape[1] > 1:
            # The baseline for jepa/pred_1step: predict target t with target t - 1.
            keep = (~is_first[:, 1:].bool()).float()
            err = prediction_error(target[:, :-1], target[:, 1:])
            metrics["jepa/copy_last"] = (keep * err).sum() / keep.sum().clamp(min=1)
        metrics.update(self.periodic_diagnostics(embed, feat, obs))
        return metrics

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scaled sum of mean loss terms; `probe_rec_*` share the `probe_rec` scale."""
        total = 0.0
        for name, value in losses.items():
            key = "probe_rec" if name.startswith("probe_rec_") else name
            total = total + self.scales[key] * value.mean()
        return total
