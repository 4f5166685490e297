"""The DreamerV3 optimizer: adaptive gradient clipping -> RMS scaling -> momentum -> warmup lr."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LaProp(torch.optim.Optimizer):
    """LaProp with per-tensor adaptive gradient clipping and linear lr warmup (DreamerV3).

    Per parameter tensor and step ``t`` (1-based; ``agc=0`` disables clipping):
    ``g <- g * min(1, agc * max(pmin, |p|) / |g|)``;
    ``v <- b2 v + (1 - b2) g^2``; ``u = g / (sqrt(v / (1 - b2^t)) + eps)``;
    ``m <- b1 m + (1 - b1) u``; ``p <- p - lr * min(1, t / warmup) * m / (1 - b1^t)``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 4e-5,
        agc: float = 0.3,
        eps: float = 1e-20,
        beta1: float = 0.9,
        beta2: float = 0.999,
        warmup: int = 1000,
        pmin: float = 1e-3,
        foreach: bool | None = None,
    ) -> None:
        checks = {
            "lr": lr >= 0,
            "agc": agc >= 0,
            "eps": eps >= 0,
            "beta1": 0 <= beta1 < 1,
            "beta2": 0 <= beta2 < 1,
            "warmup": warmup >= 0,
            "pmin": pmin >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"LaProp: invalid {name}={locals()[name]!r}")
        defaults = dict(
            lr=lr, agc=agc, eps=eps, beta1=beta1, beta2=beta2, warmup=warmup, pmin=pmin,
            foreach=foreach,
        )
        super().__init__(params, defaults)
        # Last step's diagnostics as 0-dim tensors (no host sync until read).
        self.metrics: dict[str, Tensor] = {}
        # Steps refused because a gradient was not finite: in a row, and in all.
        self.skipped_in_a_row = 0
        self.skipped_total = 0

    def state_dict(self) -> dict[str, Any]:
        # The skip counters too: a resumed run keeps its streak and its total.
        return {**super().state_dict(), "skipped": [self.skipped_in_a_row, self.skipped_total]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.skipped_in_a_row, self.skipped_total = state_dict.pop("skipped", (0, 0))
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update; a step whose gradients hold a NaN or inf changes nothing (parameters,
        moments, step counts) and is counted in `skipped_in_a_row` / `skipped_total`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Per-tensor gradient norms first: AGC needs them, and one finiteness check on them
        # (a single host sync) decides whether this step happens at all.
        plan: list[tuple[list[Tensor], dict[str, Any], Tensor]] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p.grad.is_sparse:
                    raise ValueError("LaProp does not support sparse gradients")
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in params:
                buckets[(p.device, p.dtype)].append(p)
            for bucket in buckets.values():
                plan.append((bucket, group, self._grad_norms(bucket, group)))
        if plan:
            dev = plan[0][2].device
            if not bool(torch.isfinite(torch.stack([g.sum().to(dev) for *_, g in plan]).sum())):
                self.skipped_in_a_row += 1
                self.skipped_total += 1
                return loss
        self.skipped_in_a_row = 0
        sq_norms: list[Tensor] = []
        clipped: list[Tensor] = []
        for bucket, group, gnorm in plan:
            gn, clip = self._update(bucket, group, gnorm)
            sq_norms.append(gn)
            clipped.append(clip)
        if sq_norms:
            dev = sq_norms[0].device  # stays on device: reading metrics is the only sync
            self.metrics = {
                "grad_norm": torch.stack([s.float().sum().to(dev) for s in sq_norms]).sum().sqrt(),
                "grad_clip_frac": torch.cat([c.float().to(dev) for c in clipped]).mean(),
            }
        return loss

    @staticmethod
    def _foreach(params: list[Tensor], group: dict[str, Any]) -> bool:
        # Fused multi-tensor ops pay off on GPUs (fewer launches); on CPU their all-at-once
        # temporaries miss the cache and a plain loop measured ~4x faster.
        foreach = group["foreach"]
        return params[0].device.type != "cpu" if foreach is None else bool(foreach)

    def _grad_norms(self, params: list[Tensor], group: dict[str, Any]) -> Tensor:
        grads = [p.grad for p in params]
        if self._foreach(params, group):
            return torch.stack(torch._foreach_norm(grads))
        return torch.stack([g.norm() for g in grads])

    def _update(self, params: list[Tensor], group: dict[str, Any], gnorm: Tensor
                ) -> tuple[Tensor, Tensor]:
        """Update one same-device, same-dtype bucket given its per-tensor gradient norms;
        returns (squared grad norms, clipped)."""
        beta1, beta2, eps = group["beta1"], group["beta2"], group["eps"]
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if not st:
                st["step"] = 0
                st["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["step"] += 1
        vs = [st["v"] for st in states]
        ms = [st["m"] for st in states]
        steps = [st["step"] for st in states]

        foreach = self._foreach(params, group)
        # (1) Adaptive gradient clipping, per tensor: |g| <= agc * max(pmin, |p|).
        if foreach:
            pnorm = torch.stack(torch._foreach_norm(params))
        else:
            pnorm = torch.stack([p.norm() for p in params])
        if group["agc"] > 0:
            upper = group["agc"] * pnorm.clamp(min=group["pmin"])
            scale = 1.0 / torch.maximum(gnorm / upper, torch.ones_like(gnorm))
            clipped = gnorm > upper
        else:  # agc=0 disables clipping, as in the official chain
            scale = torch.ones_like(gnorm)
            clipped = torch.zeros_like(gnorm, dtype=torch.bool)
        scales = list(scale.unbind())

        bc2 = [1.0 - beta2**t for t in steps]
        step_size = [
            -group["lr"] * self._warmup(t, group["warmup"]) / (1.0 - beta1**t) for t in steps
        ]
        if foreach:
            g = torch._foreach_mul(grads, scales)
            # (2) RMS scaling with bias-corrected second moment.
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, g, g, value=1.0 - beta2)
            denom = torch._foreach_div(vs, bc2)
            torch._foreach_sqrt_(denom)
            torch._foreach_add_(denom, eps)
            torch._foreach_div_(g, denom)  # g now holds the normalised update u
            del denom
            # (3) Momentum on the normalised update, then (4) warmup lr.
            torch._foreach_lerp_(ms, g, 1.0 - beta1)
            torch._foreach_copy_(g, ms)
            torch._foreach_mul_(g, step_size)
            torch._foreach_add_(params, g)
        else:
            for p, grad, s, v, m, b2c, sz in zip(params, grads, scales, vs, ms, bc2, step_size):
                g1 = grad * s
                v.mul_(beta2).addcmul_(g1, g1, value=1.0 - beta2)
                u = g1 / ((v / b2c).sqrt_() + eps)
                m.lerp_(u, 1.0 - beta1)
                p.add_(m, alpha=sz)
        return gnorm.square(), clipped

    @staticmethod
    def _warmup(step: int, warmup: int) -> float:
        return 1.0 if warmup <= 0 else min(1.0, step / warmup)

    def current_lr(self, group: int = 0) -> float:
        """The warmed-up learning rate the next step of ``param_groups[group]`` would use."""
        g = self.param_groups[group]
        steps = [self.state[p]["step"] for p in g["params"] if p in self.state]
        return g["lr"] * self._warmup((max(steps) if steps else 0) + 1, g["warmup"])
