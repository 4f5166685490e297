"""The world model: encoder -> RSSM -> reward and continue heads, plus one representation
objective (`reconstruction`: DreamerV3's decoder; `latent`: JEPA prediction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from world_models.diagnostics import distinct_rows, latent_diagnostics
from world_models.dists import Bernoulli
from world_models.encoders import MultiDecoder, make_encoder
from world_models.nets import TwoHotHead, mlp
from world_models.objectives import OBJECTIVES, ObjectiveContext, objective_class
from world_models.rssm import RSSM, State

# The terms every world model has, whatever its objective (term -> scale name).
SHARED_TERMS = {"dyn": "dyn", "rep": "rep", "rew": "rew", "con": "con"}


class RewardHead(TwoHotHead):
    """Two-hot symexp reward head (255 bins, one hidden layer by default); zero-initialised
    output so it predicts 0 first."""


class ContinueHead(nn.Module):
    """Bernoulli head on the probability that the episode continues."""

    def __init__(self, feat_dim: int, layers: int = 1, units: int = 1024, outscale: float = 1.0):
        super().__init__()
        self.net = mlp(feat_dim, layers, units, 1, outscale=outscale)

    def forward(self, feat: torch.Tensor) -> Bernoulli:
        return Bernoulli(self.net(feat).squeeze(-1))


def expand_scales(terms: Mapping[str, str], scales: Mapping[str, float]) -> dict[str, float]:
    """One scale per loss term, from the config's scale names (`rec` -> `rec_image`, ...).

    A name no objective knows is an error; names of terms this model does not have (another
    objective's, a switched-off safeguard's) are ignored: the config holds them all."""
    objective_class("reconstruction")  # the built-in objectives are registered
    known = set(SHARED_TERMS).union(*(cls.SCALES for cls in OBJECTIVES.values()))
    unknown = sorted(set(scales) - known)
    if unknown:
        raise ValueError(f"loss scales {unknown} name no loss term; known: {sorted(known)}")
    missing = sorted({name for name in terms.values() if name not in scales})
    if missing:
        raise ValueError(f"loss terms {sorted(t for t, n in terms.items() if n in missing)} "
                         f"have no scale; add {missing} to the loss scales")
    return {term: float(scales[name]) for term, name in terms.items()}


def check_terms(losses: Mapping[str, torch.Tensor], scales: Mapping[str, float]) -> None:
    """Every loss term has a scale and every scale a term (the official DreamerV3 assert)."""
    if set(losses) != set(scales):
        raise ValueError(f"loss terms and scales differ: terms without a scale "
                         f"{sorted(set(losses) - set(scales))}, scales without a term "
                         f"{sorted(set(scales) - set(losses))}")


class WorldModel(nn.Module):
    """World model with paper-named methods: `encode`, `observe`, `imagine`, `loss`,
    `open_loop`; the representation loss is `objective`'s."""

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
        objective: str = "reconstruction",
        settings: Mapping | None = None,  # the objective's config section (less `scales`)
        discrete: bool = True,  # the action space's kind
        diag_every: int = 0,
    ):
        super().__init__()
        cls = objective_class(objective)
        self.encoder = make_encoder(obs_shapes, **encoder)
        self.rssm = RSSM(self.encoder.out_dim, act_dim, **rssm)
        feat = self.rssm.feat_dim
        context = ObjectiveContext(self.encoder, feat, obs_shapes, act_dim, discrete, decoder,
                                   int(reward_head.get("units", 1024)))
        if cls.SECTION is not None and settings is None:
            raise ValueError(f"objective {objective!r} needs its settings (the config's "
                             f"{cls.SECTION} section)")
        self.objective = cls(context, **dict(settings or {}))
        self.reward = RewardHead(feat, **reward_head)
        self.cont = ContinueHead(feat, **cont_head)
        self.scales = expand_scales({**SHARED_TERMS, **self.objective.terms}, loss_scales)
        self.diag_every = int(diag_every)
        self._loss_calls = 0

    @property
    def decoder(self) -> MultiDecoder | None:
        """The objective's decoder (the probe for `latent`), None when it has none."""
        return self.objective.decoder

    def encode(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(obs)

    # -- the latent interface: what acting, imagination, planning and export use ----------
    # (TD-MPC2's world model is the example: encode, next, reward, pi, Q.) A caller holds a
    # State (a dict of tensors, opaque to it) and reads the model only through these.
    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of a State's carried tensors per batch row (an exported graph's carry)."""
        return {"deter": (self.rssm.deter,), "stoch": (self.rssm.stoch, self.rssm.classes)}

    @property
    def feat_dim(self) -> int:
        return self.rssm.feat_dim

    def initial(self, batch: int, device: torch.device | str) -> State:
        """The state before the first observation (zeros)."""
        return self.rssm.initial(batch, device)

    def obs_step(self, state: State, prev_action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor, uniform: torch.Tensor | None = None) -> State:
        """Observe one step: the posterior state after `prev_action` led to the observation
        embedded as `embed` (state and action reset where `is_first`)."""
        return self.rssm.obs_step(state, prev_action, embed, is_first, uniform)[0]

    def img_step(self, state: State, action: torch.Tensor, sample: bool = True) -> State:
        """Imagine one step: the prior state after taking `action` in `state`."""
        return self.rssm.img_step(state, action, sample)

    def feat(self, state: State) -> torch.Tensor:
        """The feature [..., feat_dim] the heads, the actor and the critic read."""
        return self.rssm.feat(state)

    def predict_reward(self, feat: torch.Tensor) -> torch.Tensor:
        """Expected reward on arriving at the state of `feat`."""
        return self.reward(feat).pred()

    def predict_continue(self, feat: torch.Tensor) -> torch.Tensor:
        """Probability that the episode goes on after the state of `feat`."""
        return self.cont(feat).pred()

    def observe(self, embed, action, is_first, state: State | None = None):
        return self.rssm.observe(embed, action, is_first, state)

    def imagine(self, start: State, policy, horizon: int):
        return self.rssm.imagine(start, policy, horizon)

    def loss(self, batch: Mapping[str, torch.Tensor], state: State | None = None
             ) -> tuple[dict, State, dict]:
        """Named [B, T] loss terms, the posterior states, and metrics; the posterior starts
        from `state` (a stored replay-context latent) or zeros.

        Terms: `dyn`, `rep` (KL with free bits), the objective's, `rew`, `con`."""
        embed = self.encode(batch)
        post, prior = self.observe(embed, batch["action"], batch["is_first"], state)
        losses, feat, metrics = self.terms(batch, embed, post, prior)
        metrics.update(self.periodic_diagnostics(embed, feat, batch))
        return losses, post, metrics

    def terms(self, batch: Mapping[str, torch.Tensor], embed: torch.Tensor, post: State,
              prior: State) -> tuple[dict, torch.Tensor, dict]:
        """The loss terms given the posterior and prior: a pure function of tensors, so the
        fast path compiles it as one graph. Returns (terms, features, metrics)."""
        feat = self.rssm.feat(post)
        losses = {}
        losses["dyn"], losses["rep"] = self.rssm.kl_losses(post, prior)
        terms, metrics = self.objective.loss(batch, embed, post, feat, self.rssm)
        losses.update(terms)
        losses["rew"] = self.reward(feat).loss(batch["reward"])
        losses["con"] = self.cont(feat).loss(1.0 - batch["is_terminal"].float())
        check_terms(losses, self.scales)
        with torch.no_grad():
            ent = -(post["logits"].exp() * post["logits"]).sum((-2, -1)).mean()
            prior_ent = -(prior["logits"].exp() * prior["logits"]).sum((-2, -1)).mean()
        metrics.update({"train/post_ent": ent, "train/prior_ent": prior_ent})
        return losses, feat, metrics

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Scaled sum of the mean loss terms."""
        total = 0.0
        for name, value in losses.items():
            total = total + self.scales[name] * value.mean()
        return total

    def after_step(self) -> None:
        """Hook for after each optimizer step (the latent objective's EMA target update)."""
        self.objective.after_step()

    @torch.no_grad()
    def open_loop(self, data: Mapping[str, torch.Tensor], context: int,
                  state: State | None = None) -> torch.Tensor:
        """Features [B, T, F]: the posterior over the first `context` steps (from `state` or
        zeros), then the prior rolled forward with the recorded actions."""
        T = data["action"].shape[1]
        embed = self.encode({k: v[:, :context] for k, v in data.items()})
        post, _ = self.observe(embed, data["action"][:, :context], data["is_first"][:, :context],
                               state)
        state = {k: post[k][:, -1] for k in ("deter", "stoch")}
        feats = [self.rssm.feat(post)]
        for t in range(context, T):
            state = self.rssm.img_step(state, data["action"][:, t])
            feats.append(self.rssm.feat(state)[:, None])
        return torch.cat(feats, 1)

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
