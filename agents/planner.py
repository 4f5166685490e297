"""MPPI in the latent space: TD-MPC2's planner over a DreamerV3-family world model.

At each step, candidate action sequences over a short horizon are rolled out from the
current latent state with the world model's prior, scored by the return the actor is
trained on (predicted rewards and continue probabilities, bootstrapped with the critic as a
TD(lambda) return), and the sampling distribution is refit to the best (the elites,
weighted by exp(temperature x return)) for a few iterations. A share of the candidates are
the actor's own rollouts; the distribution is warm-started from the previous step's plan
shifted by one. The action taken is the first of an elite drawn by its weight (TD-MPC2).

Continuous actions sample from per-step normals (mean, std) clipped to [-1, 1]; discrete
ones from per-step categoricals (one-hot), refit to the elites' weighted action frequencies.
Defaults are TD-MPC2's (horizon 3, elites 64, actor samples 24, temperature 0.5, std
0.05-2) except 256 samples x 4 iterations for its 512 x 6, which scored as well or better
at a third of the cost here; README "Planning" has what they cost and gain.
"""

from __future__ import annotations

import torch

from agents.actor_critic import lambda_return
from agents.compiled import compile_rollout


def gumbel(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Standard Gumbel noise: argmax(log p + gumbel) draws from p."""
    u = torch.rand(shape, device=device).clamp(1e-6, 1 - 1e-6)
    return -torch.log(-torch.log(u))


class MPPI:
    """Model-predictive path integral planning over the world model's latent interface."""

    SECTION = "mppi"
    FUSED = False  # its loop stays in Python; `returns` is what compiles (see `compile`)

    def __init__(self, wm, ac, act_dim: int, discrete: bool, samples: int = 256,
                 horizon: int = 3, iterations: int = 4, elites: int = 64,
                 actor_samples: int = 24, temperature: float = 0.5, min_std: float = 0.05,
                 max_std: float = 2.0, unimix: float = 0.01, sample_latents: bool = True):
        self.check(samples, horizon, iterations, elites, actor_samples, temperature, min_std,
                   max_std, unimix)
        self.wm, self.ac = wm, ac
        self.act_dim, self.discrete = act_dim, discrete
        self.samples, self.horizon, self.iterations = samples, horizon, iterations
        self.elites, self.actor_samples, self.temperature = elites, actor_samples, temperature
        self.min_std, self.max_std, self.unimix = min_std, max_std, unimix
        # Sampled prior latents, as in the imagination the heads and critic learn from. The
        # most likely ones (TD-MPC2's model is deterministic) avoid scoring each candidate
        # on one noisy path, but scored lower on walker-walk (README "Planning").
        self.sample_latents = bool(sample_latents)

    @staticmethod
    def check(samples: int = 256, horizon: int = 3, iterations: int = 4, elites: int = 64,
              actor_samples: int = 24, temperature: float = 0.5, min_std: float = 0.05,
              max_std: float = 2.0, unimix: float = 0.01, sample_latents: bool = True) -> None:
        """Raise ValueError naming the settings out of range."""
        checks = {"samples": samples >= 1, "horizon": horizon >= 1, "iterations": iterations >= 0,
                  "elites": 1 <= elites <= samples, "actor_samples": 0 <= actor_samples <= samples,
                  "temperature": temperature > 0, "min_std": 0 < min_std <= max_std,
                  "unimix": 0 <= unimix < 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"mppi settings {bad} out of range: need samples >= 1, horizon >= 1, "
                             "iterations >= 0, 1 <= elites <= samples, 0 <= actor_samples <= "
                             "samples, temperature > 0, 0 < min_std <= max_std, 0 <= unimix < 1")
        if iterations == 0 and actor_samples == 0:
            raise ValueError("mppi with iterations 0 acts with the actor's candidates: "
                             "set actor_samples >= 1")

    def compile(self, device: torch.device) -> None:
        """The fast path: compile the scoring rollout (one graph, seconds to build), not the
        whole plan (iterations x horizon unrolled: minutes; measured in docs/results.md)."""
        self.returns = compile_rollout(self.returns, device)

    # -- the plan carried between steps --------------------------------------------------
    def initial(self, batch: int, device: torch.device) -> torch.Tensor:
        """The plan before an episode: per-step means [N, H, A] (zeros), or per-step action
        probabilities (uniform) for discrete actions."""
        fill = 1.0 / self.act_dim if self.discrete else 0.0
        return torch.full((batch, self.horizon, self.act_dim), fill, device=device)

    def _warm_start(self, plan: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
        fresh = self.initial(plan.shape[0], plan.device)
        shifted = torch.cat([plan[:, 1:], fresh[:, :1]], 1)
        return torch.where(is_first.bool().view(-1, 1, 1), fresh, shifted)

    # -- planning ----------------------------------------------------------------------
    def __call__(self, state: dict, plan: torch.Tensor, is_first: torch.Tensor, sample: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The action [N, A] for each env's latent `state`, and the plan to carry on.
        `sample` (training) adds the final std's noise to continuous actions and makes all
        actor candidates samples; otherwise the first actor candidate is the actor's mode."""
        n, device = is_first.shape[0], is_first.device
        mean = self._warm_start(plan, is_first)
        actor = self._actor_plans(state, n, sample) if self.actor_samples else None
        if self.iterations == 0:
            return actor[:, 0, 0], mean
        S, H, A = self.samples, self.horizon, self.act_dim
        start = {k: state[k].repeat_interleave(S, 0) for k in ("deter", "stoch")}
        std = torch.full_like(mean, self.max_std)
        for _ in range(self.iterations):
            drawn = self._draw(mean, std, S - self.actor_samples)
            cands = drawn if actor is None else torch.cat([actor, drawn], 1)
            score = self.returns(start, cands.reshape(n * S, H, A)).reshape(n, S)
            top, index = score.topk(self.elites, 1)
            elite = cands.gather(1, index[:, :, None, None].expand(-1, -1, H, A))
            weight = torch.softmax(self.temperature * top, 1)
            mean, std = self._refit(elite, weight)
        pick = (weight.log() + gumbel(weight.shape, device)).argmax(1)
        action = elite[torch.arange(n, device=device), pick, 0]
        if sample and not self.discrete:
            action = action + std[:, 0] * torch.randn_like(action)
        return (action if self.discrete else action.clamp(-1, 1)), mean

    def _actor_plans(self, state: dict, n: int, sample: bool) -> torch.Tensor:
        """The actor's own rollouts [N, P, H, A] from each state under the prior."""
        P = self.actor_samples
        s = {k: state[k].repeat_interleave(P, 0) for k in ("deter", "stoch")}
        first = (torch.arange(n * P, device=s["deter"].device) % P == 0)[:, None]
        actions = []
        for t in range(self.horizon):
            dist = self.ac.policy(self.wm.feat(s))
            action = dist.sample()
            if not sample:  # candidate 0 of each env is the actor's most likely sequence
                action = torch.where(first, dist.mode(), action)
            if not self.discrete:  # the actor's normal reaches past the action bounds
                action = action.clamp(-1, 1)
            actions.append(action)
            if t + 1 < self.horizon:
                s = self.wm.img_step(s, action, self.sample_latents)
        return torch.stack(actions, 1).reshape(n, P, self.horizon, self.act_dim)

    def _draw(self, mean: torch.Tensor, std: torch.Tensor, count: int) -> torch.Tensor:
        """`count` candidate sequences [N, count, H, A] from the current distribution."""
        n, H, A = mean.shape
        if self.discrete:
            logp = mean.clamp(min=1e-8).log()[:, None]
            index = (logp + gumbel((n, count, H, A), mean.device)).argmax(-1)
            return torch.nn.functional.one_hot(index, A).to(mean.dtype)
        noise = torch.randn(n, count, H, A, device=mean.device, dtype=mean.dtype)
        return (mean[:, None] + std[:, None] * noise).clamp(-1, 1)

    def _refit(self, elite: torch.Tensor, weight: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        w = weight[:, :, None, None]
        mean = (w * elite).sum(1)
        if self.discrete:  # action frequencies, mixed with uniform so every action stays possible
            return mean * (1 - self.unimix) + self.unimix / self.act_dim, torch.zeros_like(mean)
        std = (w * (elite - mean[:, None]).pow(2)).sum(1).sqrt()
        return mean, std.clamp(self.min_std, self.max_std)

    def returns(self, start: dict, actions: torch.Tensor) -> torch.Tensor:
        """The TD(lambda) return [M] of each action sequence [M, H, A] from `start` [M]:
        predicted rewards and continue probabilities along the prior rollout, the critic's
        values bootstrapping (the return the actor is trained on, from a real state)."""
        s, feats = start, []
        for t in range(actions.shape[1]):
            s = self.wm.img_step(s, actions[:, t], self.sample_latents)
            feats.append(self.wm.feat(s))
        feat = torch.stack(feats, 1)
        rew = self.wm.predict_reward(feat)
        con = self.wm.predict_continue(feat)
        val = self.ac.value(feat).pred()
        # Column 0 stands for the start state: its reward is already received, it goes on.
        pad = lambda x, v: torch.cat([torch.full_like(x[:, :1], v), x], 1)
        rew, con, val = pad(rew, 0.0), pad(con, 1.0), pad(val, 0.0)
        ret = lambda_return(torch.zeros_like(con), 1 - con, rew, val, val, self.ac.disc,
                            self.ac.lam)
        # A non-finite score would win the top-k and poison the plan (TD-MPC2 zeroes them).
        return torch.nan_to_num(ret[:, 0], nan=0.0, posinf=0.0, neginf=0.0)
