"""LaProp + AGC against hand computations and a plain-Python reference."""

import copy
import math

import pytest
import torch

from agents.optim import LaProp


def reference(p, grads, lr, agc, eps, b1, b2, warmup, pmin=1e-3):
    """Plain-Python DreamerV3 optimizer chain over a list of floats (one tensor)."""
    p = list(p)
    v = [0.0] * len(p)
    m = [0.0] * len(p)
    out = []
    for t, g in enumerate(grads, start=1):
        gn = math.sqrt(sum(x * x for x in g))
        upper = agc * max(pmin, math.sqrt(sum(x * x for x in p)))
        if gn > upper:
            g = [x * upper / gn for x in g]
        v = [b2 * vi + (1 - b2) * x * x for vi, x in zip(v, g)]
        u = [x / (math.sqrt(vi / (1 - b2**t)) + eps) for x, vi in zip(g, v)]
        m = [b1 * mi + (1 - b1) * ui for mi, ui in zip(m, u)]
        lr_t = lr * min(1.0, t / warmup)
        p = [pi - lr_t * mi / (1 - b1**t) for pi, mi in zip(p, m)]
        out.append(p)
    return out


def run(p0, grads, foreach=True, **kw):
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = LaProp([p], foreach=foreach, **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().tolist())
    return out, opt


def test_agc_hand_example():
    # |p| = 5, |g| = 10 > 0.3 * 5: g is scaled to norm 1.5 -> [0.9, 1.2].
    p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = LaProp([p], lr=0.1, warmup=0, beta1=0.0, beta2=0.0, eps=0.0)
    p.grad = torch.tensor([6.0, 8.0], dtype=torch.float64)
    opt.step()
    # beta2=0: v = g_clipped^2, so u = sign; lr 0.1 moves each coordinate by 0.1.
    assert p.tolist() == pytest.approx([2.9, 3.9])
    assert opt.metrics["grad_norm"].item() == pytest.approx(10.0)
    assert opt.metrics["grad_clip_frac"].item() == 1.0
    assert opt.state[p]["v"].tolist() == pytest.approx([0.81, 1.44])
    # Tiny params: the bound uses pmin, so |g| is capped at 0.3 * 1e-3.
    q = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = LaProp([q], lr=0.1, warmup=0, beta2=0.0)
    q.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    assert opt.state[q]["v"].sum().sqrt().item() == pytest.approx(0.3e-3)


@pytest.mark.parametrize("foreach", [True, False])
def test_matches_reference_three_steps(foreach):
    p0 = [0.5, -1.0, 2.0]
    # Step 1 clipped (|g| >> 0.3|p|), step 2 not, step 3 clipped again.
    grads = [[4.0, -2.0, 1.0], [0.1, 0.2, -0.3], [-3.0, 5.0, 0.5]]
    kw = dict(lr=0.01, agc=0.3, eps=1e-8, beta1=0.9, beta2=0.999, warmup=2)
    got, _ = run(p0, grads, foreach=foreach, **kw)
    want = reference(p0, grads, kw["lr"], kw["agc"], kw["eps"], kw["beta1"], kw["beta2"],
                     kw["warmup"])
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-12, abs=1e-12)
    # Clipping changed the result: without it the trajectory differs.
    unclipped = reference(p0, grads, 0.01, 1e9, 1e-8, 0.9, 0.999, 2)
    assert got[-1] != pytest.approx(unclipped[-1], rel=1e-6)


def test_warmup_schedule_and_param_groups():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    opt = LaProp([{"params": [a]}, {"params": [b], "lr": 0.1}], lr=1.0, agc=0.0, warmup=4)
    deltas_a, deltas_b, lrs = [], [], []
    for _ in range(6):
        lrs.append(opt.current_lr(0))
        before_a, before_b = a.detach().clone(), b.detach().clone()
        a.grad, b.grad = torch.ones(3), -torch.ones(2)  # constant grad: each step moves lr_t
        opt.step()
        deltas_a.append((before_a - a.detach())[0].item())
        deltas_b.append((b.detach() - before_b)[0].item())
    expect = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert deltas_a == pytest.approx(expect, rel=1e-5)
    assert lrs == pytest.approx(expect)
    assert deltas_b == pytest.approx([0.1 * x for x in expect], rel=1e-5)


def test_converges_on_quadratic():
    torch.manual_seed(0)
    target = torch.randn(8, 5)
    scale = torch.rand(8, 5) * 10 + 0.1
    x = torch.nn.Parameter(torch.randn(8, 5))
    opt = LaProp([x], lr=0.03, warmup=20)
    for _ in range(600):
        opt.zero_grad()
        loss = (scale * (x - target) ** 2).sum()
        loss.backward()
        opt.step()
    assert (x - target).abs().max().item() < 0.02


def test_state_dict_round_trip():
    torch.manual_seed(1)
    net = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    data = torch.randn(16, 4)
    opt = LaProp(net.parameters(), lr=1e-2, warmup=5)

    def step(model, o):
        o.zero_grad()
        model(data).pow(2).mean().backward()
        o.step()

    for _ in range(3):
        step(net, opt)
    twin.load_state_dict(net.state_dict())
    opt2 = LaProp(twin.parameters(), lr=1e-2, warmup=5)
    # deepcopy: like a torch.save/load trip, so the two optimizers share no state tensors.
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(2):
        step(net, opt)
        step(twin, opt2)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    assert opt2.state_dict()["state"][0]["step"] == 5


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="beta2"):
        LaProp([torch.zeros(1, requires_grad=True)], beta2=1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_skips_the_step(bad):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = LaProp(params, lr=1e-2, warmup=0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    params[1].grad = torch.tensor([1.0, bad, 1.0, 1.0])
    opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    after = opt.state_dict()
    assert after["state"][0]["step"] == state["state"][0]["step"] == 1
    assert torch.equal(after["state"][1]["v"], state["state"][1]["v"])
    assert opt.skipped_in_a_row == 1 and opt.skipped_total == 1
    # The counters are checkpointed: a resumed run keeps its streak and total.
    twin = LaProp(params, lr=1e-2, warmup=0)
    twin.load_state_dict(copy.deepcopy(after))
    assert (twin.skipped_in_a_row, twin.skipped_total) == (1, 1)
    old = {k: v for k, v in state.items() if k != "skipped"}  # saved before the counters were
    twin.load_state_dict(old)
    assert (twin.skipped_in_a_row, twin.skipped_total) == (0, 0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert opt.skipped_in_a_row == 0 and opt.skipped_total == 1
    assert not torch.equal(before[0], params[0])
