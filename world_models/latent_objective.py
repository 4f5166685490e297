"""The latent (JEPA) objective: the world model predicts the EMA target encoder's embedding
of the next observations instead of their pixels.

Prediction loss (`jepa_post`, `jepa_open`): mean squared error between the layer-normed
predictor output and the layer-normed target embedding, averaged over dimensions. With both
sides normalised per sample this equals 2 * (1 - Pearson correlation), so it lies in [0, 4]
whatever the embedding scale, and a prediction cannot win by shrinking its norm.

- `jepa_post`: predictor on the posterior feature of step t -> target t (teacher forced).
- `jepa_open`: the prior rolled k = 1..K steps from the posterior of step t with the recorded
  actions -> target t + k; weights decay ** (k - 1), normalised to sum 1; rolls that cross an
  episode start are masked out.
- Safeguards: `vicreg` (variance + covariance of the online embeddings, official ratio
  25 : 1), `sigreg` (the sketched isotropic-Gaussian regulariser of LeJEPA / LeWorldModel on
  the online embeddings: an alternative to VICReg), `inverse` (a_t from the online
  embeddings of t - 1 and t), `stop_grad` (targets from the EMA encoder without gradient;
  off, the online encoder itself is the target, with gradient: the textbook collapsible
  set-up). `ema: 0` makes the target the online encoder of the previous update under
  stop-gradient (SimSiam-like: no slow target).
- `predict: false` drops both prediction terms and nothing else; with `vicreg` and
  `inverse` off too it is a decoder-free world model trained by reward, continue, KL and
  the critic's repval gradient alone, the ablation that separates "no decoder" from
  "predicts latents".
- Diagnostics per open-loop step k (`jepa/pred_k{k}`, `jepa/copy_k{k}`): the prior's k-step
  prediction error against the copy-last baseline, which predicts target t + k with the
  last observed target t (same normalised error, same masks). A predictor that predicts
  beats it at every k; `jepa/pred_1step` and `jepa/copy_last` are the k = 1 pair.
- An optional probe decoder reconstructs observations from DETACHED features (every
  `probe_stride`-th step, to stay cheap), giving the open-loop video without sending
  gradients into the model (`probe_rec_image`, `probe_rec_vector`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from world_models.encoders import MultiDecoder
from world_models.nets import mlp
from world_models.objectives import (
    Objective,
    ObjectiveContext,
    decoder_report,
    decoder_terms,
    register_objective,
)
from world_models.regularizers import VICREG_COV, VICREG_VAR, sigreg, vicreg_terms
from world_models.rssm import RSSM, State


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm over the last axis (computed in fp32)."""
    return F.layer_norm(x.float(), x.shape[-1:])


def prediction_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE of layer-normed vectors (= 2 * (1 - correlation)); shape pred[..., 0]."""
    return (layer_norm(pred) - layer_norm(target)).pow(2).mean(-1)


def open_loop_weights(horizon: int, decay: float) -> list[float]:
    """Weights of the k = 1..horizon open-loop terms: decay ** (k - 1), summing to 1."""
    raw = [decay ** (k - 1) for k in range(1, horizon + 1)]
    return [w / sum(raw) for w in raw]


@register_objective("latent")
class LatentObjective(Objective):
    """JEPA: predictor from RSSM features to the EMA target encoder's embedding (see module).
    Settings: the config's `jepa` section."""

    SCALES = ("jepa_post", "jepa_open", "vicreg", "sigreg", "inverse", "probe_rec")
    SECTION = "jepa"

    def __init__(self, context: ObjectiveContext, *, ema: float, stop_grad: bool, horizon: int,
                 decay: float, predictor: Mapping, vicreg: bool, inverse: bool,
                 probe_decoder: bool, probe_stride: int, predict: bool = True,
                 sigreg: bool = False) -> None:
        super().__init__()
        encoder, feat_dim, act_dim = context.encoder, context.feat_dim, context.act_dim
        obs_shapes, discrete, decoder = context.obs_shapes, context.discrete, context.decoder
        default_units = context.units
        self.ema = float(ema)
        if not 0.0 <= self.ema <= 1.0:
            raise ValueError(f"jepa.ema={self.ema} is invalid; expected a rate in [0, 1]")
        self.horizon = int(horizon)
        if self.horizon < 0:
            raise ValueError(f"jepa.horizon={self.horizon} is invalid; expected >= 0")
        self.probe_stride = int(probe_stride)
        if self.probe_stride < 1:
            raise ValueError(f"jepa.probe_stride={self.probe_stride} is invalid; expected >= 1")
        self.decay = float(decay)
        if self.decay <= 0:
            raise ValueError(f"jepa.decay={self.decay} is invalid; expected > 0 (weight "
                             "decay ** (k - 1) on the k-step prediction)")
        self.stop_grad, self.discrete = bool(stop_grad), discrete
        emb = encoder.out_dim
        units = int(predictor["units"]) or int(default_units)
        self.predictor = mlp(feat_dim, int(predictor["layers"]), units, emb)
        self.inverse = mlp(2 * emb, int(predictor["layers"]), units, act_dim) if inverse \
            else None
        self.use_vicreg, self.use_sigreg, self.predict = bool(vicreg), bool(sigreg), \
            bool(predict)
        if probe_decoder:
            self.decoder = MultiDecoder(feat_dim, obs_shapes, **decoder)
        # The target encoder: an EMA copy of the online one, never trained by gradient.
        self.online = [encoder]  # a list, not a submodule: the world model owns the encoder
        self.target_encoder = copy.deepcopy(encoder)
        self.target_encoder.requires_grad_(False)
        self.terms = {"jepa_post": "jepa_post", "jepa_open": "jepa_open"} if self.predict \
            else {}
        for name in ("vicreg", "sigreg"):
            if getattr(self, f"use_{name}"):
                self.terms[name] = name
        if self.inverse is not None:
            self.terms["inverse"] = "inverse"
        if self.decoder is not None:
            self.terms.update(decoder_terms(self.decoder, prefix="probe_"))

    # -- target encoder ------------------------------------------------------------
    @torch.no_grad()
    def update_target(self) -> None:
        """target <- ema * target + (1 - ema) * online (parameters; buffers are copied)."""
        online = self.online[0]
        for t, o in zip(self.target_encoder.parameters(), online.parameters()):
            t.lerp_(o.detach(), 1.0 - self.ema)
        for t, o in zip(self.target_encoder.buffers(), online.buffers()):
            t.copy_(o)

    def after_step(self) -> None:
        self.update_target()  # after the optimizer step, as in BYOL / I-JEPA

    def targets(self, obs: Mapping[str, torch.Tensor], online: torch.Tensor) -> torch.Tensor:
        """Prediction targets: the EMA encoder without gradient, or (stop_grad off) the
        online embedding itself, gradient included."""
        if not self.stop_grad:
            return online
        with torch.no_grad():
            return self.target_encoder(obs).float()

    # -- losses --------------------------------------------------------------------
    def loss(self, batch, embed, post, feat, rssm):
        target = self.targets(batch, embed)
        losses, metrics = {}, {}
        if self.predict:
            losses["jepa_post"] = prediction_error(self.predictor(feat), target)
            losses["jepa_open"], metrics = self._open_loop(post, batch, target, rssm)
        if self.use_vicreg:
            var, cov = vicreg_terms(embed)
            losses["vicreg"] = VICREG_VAR * var + VICREG_COV * cov
        if self.use_sigreg:
            # A [B, T] term like the others: the batch statistic, broadcast.
            losses["sigreg"] = sigreg(embed).expand(embed.shape[:2])
        if self.inverse is not None:
            losses["inverse"] = self._inverse(embed, batch)
        if self.decoder is not None:
            # Every probe_stride-th step only: the probe is a viewer, not worth a full decoder.
            s = self.probe_stride
            sub = {k: batch[k][:, ::s] for k in self.decoder.keys}
            probe = self.decoder.losses(feat[:, ::s].detach(), sub)
            losses.update({f"probe_{k}": v for k, v in probe.items()})
        if "jepa/copy_k1" in metrics:  # the same steps and masks as pred_1step (= pred_k1)
            metrics["jepa/copy_last"] = metrics["jepa/copy_k1"]
        else:
            metrics.update(self._copy_last(target, batch["is_first"]))
        return losses, metrics

    def _open_loop(self, post: State, batch: Mapping, target: torch.Tensor, rssm: RSSM
                   ) -> tuple[torch.Tensor, dict]:
        """Weighted k-step prior rollouts from every posterior state that has K steps ahead;
        also the mean unweighted error per k and its copy-last baseline (diagnostics)."""
        B, T = target.shape[:2]
        K = min(self.horizon, T - 1)
        metrics: dict = {}
        if K <= 0:
            return target.new_zeros(B, 1), metrics
        n = T - K
        # Normalised over the K terms this batch has: a batch shorter than the horizon keeps
        # the open-loop term's full weight.
        weights = open_loop_weights(K, self.decay)
        state = {k: post[k][:, :n].reshape(B * n, *post[k].shape[2:]) for k in ("deter", "stoch")}
        valid = torch.ones(B, n, device=target.device)
        total = target.new_zeros(B, n)
        for k in range(1, K + 1):
            action = batch["action"][:, k:k + n].reshape(B * n, -1)
            state = rssm.img_step(state, action)
            # A roll that passes an episode start predicts across a reset: drop it.
            valid = valid * (~batch["is_first"][:, k:k + n].bool()).float()
            err = prediction_error(self.predictor(rssm.feat(state)).reshape(B, n, -1),
                                   target[:, k:k + n])
            total = total + weights[k - 1] * valid * err
            with torch.no_grad():
                count = valid.sum().clamp(min=1)
                metrics[f"jepa/pred_k{k}"] = (valid * err).sum() / count
                copy = prediction_error(target[:, :n], target[:, k:k + n])
                metrics[f"jepa/copy_k{k}"] = (valid * copy).sum() / count
        metrics["jepa/pred_1step"] = metrics["jepa/pred_k1"]
        return total, metrics

    def _inverse(self, embed: torch.Tensor, batch: Mapping) -> torch.Tensor:
        out = self.inverse(torch.cat([embed[:, :-1], embed[:, 1:]], -1)).float()
        action = batch["action"][:, 1:].float()
        if self.discrete:
            loss = -(action * F.log_softmax(out, -1)).sum(-1)
        else:
            loss = (out - action).pow(2).sum(-1)
        return loss * (~batch["is_first"][:, 1:].bool()).float()

    @torch.no_grad()
    def _copy_last(self, target: torch.Tensor, is_first: torch.Tensor) -> dict:
        """Copy-last at k = 1 (predict target t with target t - 1) over every step, for a
        batch too short for the open-loop term, which otherwise gives it on its own steps."""
        if target.shape[1] < 2:
            return {}
        keep = (~is_first[:, 1:].bool()).float()
        err = prediction_error(target[:, :-1], target[:, 1:])
        return {"jepa/copy_last": (keep * err).sum() / keep.sum().clamp(min=1)}

    # -- report --------------------------------------------------------------------
    @torch.no_grad()
    def report(self, data, feat, context):
        """`openl/jepa_observed|imagined` and, with the probe decoder, the decoder's
        `openl/mse_*` metrics and `openl` video."""
        out = (decoder_report(self.decoder, data, feat, context)
               if self.decoder is not None else {})
        if not self.predict:  # the predictor is never trained then: nothing to report
            return out
        # The target training uses (the online embedding itself when stop_grad is off).
        target = (self.target_encoder if self.stop_grad else self.online[0])(data).float()
        err = prediction_error(self.predictor(feat), target)
        # The imagined prior is never reset: steps after an episode start are left out.
        after = (~data["is_first"][:, context:].bool()).float().cumprod(1)
        out["openl/jepa_observed"] = float(err[:, :context].mean())
        out["openl/jepa_imagined"] = float((err[:, context:] * after).sum()
                                           / after.sum().clamp(min=1))
        return out
