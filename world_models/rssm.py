"""Recurrent state-space model of DreamerV3 (2024 code): a block GRU carries the
deterministic state, categorical latents (stoch x classes, 1% unimix) carry the
stochastic one.

State is a dict of tensors: `deter` [..., D], `stoch` [..., S, K] (one-hot
samples) and `logits` [..., S, K]. The feature the heads read is
concat(deter, flat stoch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from world_models.dists import OneHotCategorical, categorical_kl
from world_models.nets import BlockLinear, Linear, RMSNorm, mlp, norm_act

State = dict[str, torch.Tensor]


class RSSM(nn.Module):
    """Recurrent state-space model with `observe` (posterior) and `imagine` (prior)."""

    def __init__(
        self,
        embed_dim: int,
        act_dim: int,
        deter: int = 8192,
        hidden: int = 1024,
        stoch: int = 32,
        classes: int = 64,
        unimix: float = 0.01,
        blocks: int = 8,
        imglayers: int = 2,
        obslayers: int = 1,
        dynlayers: int = 1,
        free_nats: float = 1.0,
    ):
        super().__init__()
        self.deter, self.stoch, self.classes = deter, stoch, classes
        self.blocks, self.unimix, self.free_nats = blocks, unimix, free_nats
        self.feat_dim = deter + stoch * classes
        self.dyn_deter = nn.Sequential(Linear(deter, hidden), *norm_act(hidden))
        self.dyn_stoch = nn.Sequential(
            Linear(stoch * classes, hidden), *norm_act(hidden)
        )
        self.dyn_action = nn.Sequential(Linear(act_dim, hidden), *norm_act(hidden))
        group_in = deter // blocks + 3 * hidden
        self.dyn_hidden = nn.ModuleList(
            BlockLinear(blocks * group_in if i == 0 else deter, deter, blocks)
            for i in range(dynlayers)
        )
        self.dyn_norms = nn.ModuleList(RMSNorm(deter) for _ in range(dynlayers))
        gru_in = deter if dynlayers else blocks * group_in
        self.dyn_gru = BlockLinear(gru_in, 3 * deter, blocks)
        self.prior_net = mlp(deter, imglayers, hidden, stoch * classes)
        self.post_net = mlp(deter + embed_dim, obslayers, hidden, stoch * classes)

    # -- state helpers -------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str) -> State:
        # Separate tensors: a compiled step guards on aliasing, and would compile twice.
        zeros = lambda *shape: torch.zeros(batch, *shape, device=device)
        return {"deter": zeros(self.deter), "stoch": zeros(self.stoch, self.classes),
                "logits": zeros(self.stoch, self.classes)}

    def feat(self, state: State) -> torch.Tensor:
        stoch = state["stoch"].reshape(*state["stoch"].shape[:-2], -1)
        return torch.cat([state["deter"], stoch.to(state["deter"].dtype)], -1)

    def _dist(self, logits: torch.Tensor) -> OneHotCategorical:
        logits = logits.reshape(*logits.shape[:-1], self.stoch, self.classes)
        return OneHotCategorical(logits, self.unimix)

    # -- transitions -----------------------------------------------------------
    def _core(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor):
        # Scale large continuous actions down (never up) so inputs stay bounded.
        action = action / action.abs().clamp(min=1.0).detach()
        stoch = stoch.reshape(stoch.shape[0], -1)
        shared = torch.cat([self.dyn_deter(deter), self.dyn_stoch(stoch),
                            self.dyn_action(action)], -1)
        # Block g of the first block layer reads concat(deter block g, shared input). Large
        # batches (imagination) skip building that input, which repeats `shared` per block;
        # at small ones (the posterior loop) one batched matmul on it is cheaper.
        layers = [*self.dyn_hidden, self.dyn_gru]
        g = self.blocks
        if deter.shape[0] >= 256:
            x = layers[0].own_and_shared(deter, shared)
        else:
            x = torch.cat([deter.reshape(-1, g, self.deter // g),
                           shared[:, None].expand(-1, g, -1)], -1)
            x = layers[0](x.reshape(deter.shape[0], -1))
        for i, norm in enumerate(self.dyn_norms):
            x = layers[i + 1](torch.nn.functional.silu(norm(x)))
        gates = x.reshape(-1, g, 3, self.deter // g)
        reset, cand, update = (gates[:, :, i].reshape(deter.shape[0], -1) for i in range(3))
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1)
        return update * cand + (1 - update) * deter

    def img_step(self, state: State, action: torch.Tensor, sample: bool = True) -> State:
        """One prior step: (h, z, a) -> h' -> z' ~ p(z' | h')."""
        deter = self._core(state["deter"], state["stoch"], action)
        logits = self.prior_net(deter)
        dist = self._dist(logits)
        stoch = dist.sample() if sample else dist.mode()
        return {"deter": deter, "stoch": stoch, "logits": dist.logits}

    def imagine_step(self, state: State, policy: Callable[[torch.Tensor], torch.Tensor]
                     ) -> tuple[torch.Tensor, State]:
        """One step of `imagine`: the policy's action at `state`, then the prior step.
        A method of its own so the fast path can compile it as one graph."""
        action = policy(self.feat(state))
        return action, self.img_step(state, action)

    def obs_step(
        self, state: State, action: torch.Tensor, embed: torch.Tensor, is_first: torch.Tensor,
        uniform: torch.Tensor | None = None,
    ) -> tuple[State, State]:
        """One posterior step; resets state and action where `is_first`. Returns (post, prior).
        `uniform` [B, stoch] fixes the latent sample (see `OneHotCategorical.sample`)."""
        keep = (~is_first.bool()).to(embed.dtype)
        state = {k: v * keep.view(-1, *([1] * (v.dim() - 1))) for k, v in state.items()}
        action = action * keep[:, None]
        deter = self._core(state["deter"], state["stoch"], action)
        prior_logits = self._dist(self.prior_net(deter)).logits
        post = self._dist(self.post_net(torch.cat([deter, embed], -1)))
        post_state = {"deter": deter, "stoch": post.sample(uniform), "logits": post.logits}
        return post_state, {"deter": deter, "logits": prior_logits}

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: State | None = None,
    ) -> tuple[State, State]:
        """Posterior over a [B, T] sequence. `action[:, t]` is the action that led to
        observation t (zero where `is_first`). Returns stacked post and prior states."""
        B, T = embed.shape[:2]
        state = self.initial(B, embed.device) if state is None else state
        posts, priors = [], []
        for t in range(T):
            state, prior = self.obs_step(state, action[:, t], embed[:, t], is_first[:, t])
            posts.append(state)
            priors.append(prior)
        stack = lambda xs: {k: torch.stack([x[k] for x in xs], 1) for k in xs[0]}
        return stack(posts), stack(priors)

    def imagine(
        self, start: State, policy: Callable[[torch.Tensor], torch.Tensor], horizon: int
    ) -> tuple[State, torch.Tensor]:
        """Roll the prior forward `horizon` steps under `policy(feat) -> action`.

        Returns states with time dim horizon + 1 (the start first) and the actions
        taken at each of those states (the last one unused by the dynamics)."""
        states, actions = [start], []
        state = start
        for _ in range(horizon):
            action, state = self.imagine_step(state, policy)
            actions.append(action)
            states.append(state)
        actions.append(policy(self.feat(state)))
        stacked = {k: torch.stack([s[k] for s in states], 1) for k in ("deter", "stoch")}
        return stacked, torch.stack(actions, 1)

    def kl_losses(self, post: State, prior: State) -> tuple[torch.Tensor, torch.Tensor]:
        """DreamerV3 KL balancing: dyn trains the prior, rep the posterior, each
        clipped from below at `free_nats` (free bits)."""
        # Both logits are already normalised log-probabilities (unimix applied).
        post_logits, prior_logits = post["logits"], prior["logits"]
        dyn = categorical_kl(post_logits.detach(), prior_logits)
        rep = categorical_kl(post_logits, prior_logits.detach())
        return dyn.clamp(min=self.free_nats), rep.clamp(min=self.free_nats)
