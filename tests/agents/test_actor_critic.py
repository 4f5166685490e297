"""Imagination actor-critic: lambda returns, percentile return normalisation, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.actor_critic import ActorCritic, ReturnNorm, lambda_return
from world_models.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_lambda_return_hand_computed():
    # R_t = r_{t+1} + g_{t+1} ((1 - l_{t+1}) v_{t+1} + l_{t+1} R_{t+1}), R_{T-1} = v_{T-1},
    # g = disc (1 - term), l = lam (1 - last). disc 0.9, lam 0.5, v = 10, 20, 30, 40.
    rew = t([0, 1, 2, 3], [0, 1, 2, 3])
    boot = t([10, 20, 30, 40], [10, 20, 30, 40])
    term = t([0, 0, 1, 0], [0, 0, 0, 0])
    last = t([0, 0, 0, 0], [0, 1, 0, 0])
    ret = lambda_return(last, term, rew, boot, boot, 0.9, 0.5)
    # Row 0: R2 = 3 + .9 (.5*40 + .5*40) = 39; step 2 is terminal so R1 = r2 = 2;
    #        R0 = 1 + .9 (.5*20 + .5*2) = 10.9.
    # Row 1: R2 = 39; R1 = 2 + .9 (.5*30 + .5*39) = 33.05; step 1 is the episode's last,
    #        so R0 bootstraps fully there: 1 + .9*20 = 19.
    torch.testing.assert_close(ret, t([10.9, 2.0, 39.0], [19.0, 33.05, 39.0]))


def test_lambda_return_lam_zero_is_one_step_td():
    torch.manual_seed(0)
    rew, boot = torch.randn(3, 7), torch.randn(3, 7)
    term = (torch.rand(3, 7) < 0.3).float()
    last = torch.zeros(3, 7)
    ret = lambda_return(last, term, rew, boot, boot, 0.97, 0.0)
    expect = rew[:, 1:] + 0.97 * (1 - term[:, 1:]) * boot[:, 1:]
    torch.testing.assert_close(ret, expect)


def test_lambda_return_lam_one_is_discounted_monte_carlo():
    torch.manual_seed(1)
    B, T, disc = 3, 6, 0.95
    rew, boot = torch.randn(B, T), torch.randn(B, T)
    term = torch.zeros(B, T)
    term[1, 3] = 1.0
    ret = lambda_return(torch.zeros(B, T), term, rew, boot, boot, disc, 1.0)
    expect = torch.zeros(B, T - 1)
    for b in range(B):
        for s in range(T - 1):
            total, scale = 0.0, 1.0
            for k in range(s + 1, T):
                total += scale * rew[b, k]
                scale *= disc * (1 - term[b, k])
            expect[b, s] = total + scale * boot[b, T - 1]
    torch.testing.assert_close(ret, expect)


def test_return_norm_tracks_percentiles_with_an_ema():
    norm = ReturnNorm(rate=0.1, limit=1.0)
    ret = torch.arange(101, dtype=torch.float32) / 10.0  # 0.0 .. 10.0
    lo, hi = np.percentile(ret.numpy(), [5, 95])
    norm.update(ret)
    assert norm.lo.item() == pytest.approx(0.1 * lo, rel=1e-5)
    assert norm.hi.item() == pytest.approx(0.1 * hi, rel=1e-5)
    for _ in range(200):
        norm.update(ret)
    assert norm.lo.item() == pytest.approx(lo, rel=1e-4)
    assert norm.hi.item() == pytest.approx(hi, rel=1e-4)
    assert norm.scale().item() == pytest.approx(hi - lo, rel=1e-4)
    # The EMA state is part of the module's state dict (checkpointed with the agent).
    assert set(norm.state_dict()) == {"lo", "hi"}


def test_return_norm_scale_floor():
    norm = ReturnNorm(rate=1.0, limit=1.0)
    norm.update(torch.full((50,), 3.0))
    assert norm.scale().item() == 1.0  # small spread: advantages are not scaled up
    # Official: scale = max(limit, hi - lo), so the limit itself is the floor.
    norm = ReturnNorm(rate=1.0, limit=4.0)
    norm.update(torch.linspace(0, 0.1, 50))
    assert norm.scale().item() == pytest.approx(4.0)
    norm.update(torch.linspace(0, 100.0, 101))
    assert norm.scale().item() == pytest.approx(90.0)


SHAPES = {"vector": (4,)}
SMALL = {"layers": 1, "units": 16}


def models(discrete: bool, act_dim: int = 2):
    torch.manual_seed(0)
    rssm = {"deter": 32, "hidden": 16, "stoch": 4, "classes": 3, "blocks": 4}
    wm = WorldModel(
        SHAPES, act_dim, rssm=rssm, encoder=SMALL, decoder=SMALL, reward_head=SMALL,
        cont_head=SMALL, loss_scales={"rec": 1.0, "rew": 1.0, "con": 1.0, "dyn": 1.0, "rep": 0.1})
    ac = ActorCritic(wm.rssm.feat_dim, act_dim, discrete, policy=SMALL, value=SMALL,
                     imag_length=4)
    return wm, ac


def batch(B: int, T: int, act: torch.Tensor) -> dict[str, torch.Tensor]:
    is_last = torch.zeros(B, T, dtype=torch.bool)
    is_last[0, 3] = True
    return {"vector": torch.randn(B, T, 4), "action": act, "reward": torch.randn(B, T),
            "is_first": torch.zeros(B, T, dtype=torch.bool), "is_last": is_last,
            "is_terminal": is_last.clone()}


@pytest.mark.parametrize("discrete", [True, False])
def test_imagined_losses_block_world_model_gradients_and_repval_trains_it(discrete):
    wm, ac = models(discrete)
    B, T = 2, 5
    act = torch.eye(2)[torch.randint(0, 2, (B, T))] if discrete else torch.rand(B, T, 2) * 2 - 1
    data = batch(B, T, act)
    with torch.no_grad():  # zero-initialised output: no gradient would reach the features
        ac.value.net[-1].weight.normal_(0.0, 0.1)
    _, post, _ = wm.loss(data)
    losses, metrics = ac.loss(wm, post, data)
    assert losses["policy"].shape == (B * T, 4)
    assert losses["value"].shape == (B * T, 4)
    assert losses["repval"].shape == (B, T - 1)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    imagined = {k: v for k, v in losses.items() if k != "repval"}
    ac.total(imagined).backward(retain_graph=True)
    assert all(p.grad is None for p in wm.parameters())
    assert ac.policy.net[-1].weight.grad.abs().sum() > 0
    assert ac.value.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ac.slow_value.parameters())
    # Replay-value loss is masked after the episode's last step.
    assert torch.all(losses["repval"][0, 3] == 0)
    # The replay-value loss trains the encoder and the RSSM too (official repval_grad).
    losses["repval"].mean().backward()
    assert wm.encoder.mlp[0].weight.grad.abs().sum() > 0
    assert wm.rssm.dyn_gru.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in wm.reward.parameters())


def test_slow_value_tracks_value_at_slow_rate():
    _, ac = models(discrete=True)
    fast = ac.value.net[-1].weight
    slow = ac.slow_value.net[-1].weight
    assert torch.equal(fast, slow)
    with torch.no_grad():
        fast.add_(1.0)
    before = slow.clone()
    ac.update_slow()
    torch.testing.assert_close(slow, before + ac.slow_rate * (fast - before))
    assert ac.disc == pytest.approx(1 - 1 / 333)
