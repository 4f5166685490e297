"""Imagination actor-critic of DreamerV3: REINFORCE policy with percentile return
normalisation, two-hot critic regularised towards a slow EMA copy, and a
replay-value loss on real trajectories."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from world_models.dists import BoundedNormal, OneHotCategorical, TwoHot
from world_models.nets import TwoHotHead, mlp


def lambda_return(
    last: torch.Tensor,
    term: torch.Tensor,
    rew: torch.Tensor,
    val: torch.Tensor,
    boot: torch.Tensor,
    disc: float,
    lam: float,
) -> torch.Tensor:
    """TD(lambda) returns for steps 0..T-2 of [B, T] inputs.

    `rew[:, t]` is the reward on arriving at step t; `term`/`last` mark terminal
    and episode-final steps; `boot` is the value bootstrapped from at each step
    (the final step bootstraps fully)."""
    live = (1 - term.float())[:, 1:] * disc
    cont = (1 - last.float())[:, 1:] * lam
    interm = rew[:, 1:] + (1 - cont) * live * boot[:, 1:]
    rets = [boot[:, -1]]
    for t in reversed(range(live.shape[1])):
        rets.append(interm[:, t] + live[:, t] * cont[:, t] * rets[-1])
    return torch.stack(rets[1:][::-1], 1)


class ReturnNorm(nn.Module):
    """EMA of the 5th and 95th return percentiles; scale = max(limit, hi - lo) (official
    `Normalize(impl='perc')` without debiasing, as the official retnorm runs it)."""

    def __init__(self, rate: float = 0.01, limit: float = 1.0, perclo: float = 5.0,
                 perchi: float = 95.0):
        super().__init__()
        self.rate, self.limit = rate, limit
        self.q = (perclo / 100, perchi / 100)
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    def update(self, ret: torch.Tensor) -> None:
        flat = ret.detach().float().flatten()
        lo, hi = torch.quantile(flat, torch.tensor(self.q, device=flat.device))
        self.lo.lerp_(lo, self.rate)
        self.hi.lerp_(hi, self.rate)

    def scale(self) -> torch.Tensor:
        return torch.clamp(self.hi - self.lo, min=self.limit)


class Policy(nn.Module):
    """Actor: categorical (1% unimix) for discrete actions, bounded normal otherwise."""

    def __init__(self, feat_dim: int, act_dim: int, discrete: bool, layers: int = 3,
                 units: int = 1024, minstd: float = 0.1, maxstd: float = 1.0,
                 unimix: float = 0.01, outscale: float = 0.01):
        super().__init__()
        self.discrete, self.unimix, self.minstd, self.maxstd = discrete, unimix, minstd, maxstd
        self.net = mlp(feat_dim, layers, units, act_dim if discrete else 2 * act_dim,
                       outscale=outscale)

    def forward(self, feat: torch.Tensor):
        out = self.net(feat)
        if self.discrete:
            return OneHotCategorical(out, self.unimix)
        return BoundedNormal(out, self.minstd, self.maxstd)


class Value(TwoHotHead):
    """Critic: two-hot symexp distribution over returns (three hidden layers by default)."""

    def __init__(self, feat_dim: int, layers: int = 3, units: int = 1024, bins: int = 255,
                 outscale: float = 0.0):
        super().__init__(feat_dim, layers, units, bins, outscale)


class ActorCritic(nn.Module):
    """Policy and value trained on imagined rollouts of a world model."""

    def __init__(
        self,
        feat_dim: int,
        act_dim: int,
        discrete: bool,
        policy: Mapping,
        value: Mapping,
        imag_length: int = 15,
        horizon: int = 333,
        lam: float = 0.95,
        actent: float = 3e-4,
        slowreg: float = 1.0,
        slow_rate: float = 0.02,
        retnorm: Mapping | None = None,
        loss_scales: Mapping[str, float] | None = None,
        repval_loss: bool = True,
    ):
        super().__init__()
        self.policy = Policy(feat_dim, act_dim, discrete, **policy)
        self.value = Value(feat_dim, **value)
        self.slow_value = copy.deepcopy(self.value).requires_grad_(False)
        self.retnorm = ReturnNorm(**(retnorm or {}))
        self.imag_length, self.lam, self.actent = imag_length, lam, actent
        self.disc = 1 - 1 / horizon
        self.slowreg, self.slow_rate, self.repval_loss = slowreg, slow_rate, repval_loss
        self.scales = dict(loss_scales or {"policy": 1.0, "value": 1.0, "repval": 0.3})

    def loss(self, wm, post: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]):
        """Policy, value and replay-value losses, starting imagination from every
        posterior state of the batch. World-model gradients are blocked (REINFORCE)."""
        B, T = batch["reward"].shape
        start = {k: v.detach().reshape(B * T, *v.shape[2:]) for k, v in post.items()
                 if k in ("deter", "stoch")}
        with torch.no_grad():
            states, actions = wm.imagine(start, self.act, self.imag_length)
        losses, ret, metrics = self.imagined_losses(wm, states, actions, batch["is_terminal"])
        if self.repval_loss:
            losses["repval"] = self.repval_terms(wm, post, batch, ret[:, 0].reshape(B, T))
        return losses, metrics

    def act(self, feat: torch.Tensor) -> torch.Tensor:
        """A sampled action at `feat` (the imagination policy)."""
        return self.policy(feat).sample()

    def imagined_losses(self, wm, states: Mapping[str, torch.Tensor], actions: torch.Tensor,
                        is_terminal: torch.Tensor) -> tuple[dict, torch.Tensor, dict]:
        """Policy and value losses on imagined trajectories [N, H+1]: a pure function of
        tensors (plus the return-scale EMA), so the fast path compiles it as one graph.
        Returns (losses, lambda returns, metrics)."""
        with torch.no_grad():
            feat = wm.feat(states)
            rew = wm.predict_reward(feat)
            con = wm.predict_continue(feat)
            # The start state is real: use its true continue flag.
            con = torch.cat([1.0 - is_terminal.reshape(-1, 1).to(con.dtype), con[:, 1:]], 1)
            slowval = self.slow_value(feat).pred()
        value_dist = self.value(feat)
        val = value_dist.pred()
        weight = torch.cumprod(self.disc * con, 1) / self.disc
        ret = lambda_return(torch.zeros_like(con), 1 - con, rew, val.detach(), val.detach(),
                            self.disc, self.lam)
        self.retnorm.update(ret)
        adv = (ret - val[:, :-1].detach()) / self.retnorm.scale()
        dist = self.policy(feat[:, :-1])
        logpi = dist.log_prob(actions[:, :-1].detach())
        ent = dist.entropy()
        w = weight[:, :-1].detach()
        losses = {"policy": w * -(logpi * adv.detach() + self.actent * ent)}
        head = TwoHot(value_dist.logits[:, :-1], bins=value_dist.bins)
        vloss = head.loss(ret.detach()) + self.slowreg * head.loss(slowval[:, :-1])
        losses["value"] = w * vloss
        metrics = {
            "train/imag_return": ret.mean().detach(),
            "train/adv_std": adv.std().detach(),
            "train/policy_entropy": ent.mean().detach(),
            "train/retnorm_scale": self.retnorm.scale().detach(),
            "train/imag_reward": rew.mean().detach(),
            "train/imag_cont": con.mean().detach(),
        }
        return losses, ret, metrics

    def repval_terms(self, wm, post, batch, boot: torch.Tensor) -> torch.Tensor:
        """Value loss on the replayed trajectory, bootstrapping from imagined returns. Its
        gradient reaches the encoder and RSSM through the posterior features (official
        `repval_grad: True`); the slow value and the bootstrap targets carry none."""
        feat = wm.feat(post)
        value_dist = self.value(feat)
        with torch.no_grad():
            slowval = self.slow_value(feat).pred()
        last, term = batch["is_last"], batch["is_terminal"]
        ret = lambda_return(last, term, batch["reward"], value_dist.pred().detach(), boot,
                            self.disc, self.lam)
        weight = (1 - last.float())[:, :-1]
        logits = value_dist.logits[:, :-1]
        head = TwoHot(logits, bins=value_dist.bins)
        loss = head.loss(ret) + self.slowreg * head.loss(slowval[:, :-1])
        return weight * loss

    def total(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.scales[k] * v.mean() for k, v in losses.items())

    @torch.no_grad()
    def update_slow(self) -> None:
        for slow, fast in zip(self.slow_value.parameters(), self.value.parameters()):
            slow.lerp_(fast, self.slow_rate)
