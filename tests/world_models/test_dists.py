"""DreamerV3's distributions: symlog, two-hot, unimix categorical, bounded normal, KL."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from world_models.dists import (
    Bernoulli,
    BoundedNormal,
    OneHotCategorical,
    TwoHot,
    categorical_kl,
    symexp,
    symlog,
)

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


# ------------------------------------------------------------------ symlog / two-hot


def test_symlog_symexp_round_trip_and_values():
    x = torch.tensor([-1e6, -300.0, -1.0, -1e-3, 0.0, 1e-3, 0.5, 1.5, 1e4], dtype=torch.float64)
    torch.testing.assert_close(symexp(symlog(x)), x, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(symlog(x), torch.sign(x) * torch.log(1 + x.abs()))
    assert symlog(torch.tensor(0.0)) == 0.0
    # Odd function, compressing large magnitudes.
    torch.testing.assert_close(symlog(-x), -symlog(x))
    assert symlog(torch.tensor(1e4)) < 10


def twohot_weights(target: torch.Tensor, bins: int = 255) -> torch.Tensor:
    """Recover the two-hot target vector from TwoHot.loss, which is linear in it.

    loss(x) = -sum_j w_j log_softmax(x)_j. With x = 0 it is S * log(n), S = sum w;
    with x = c * e_k it is S * lse(c e_k) - c * w_k.
    """
    c = 3.0
    # TwoHot computes in float32, so the recovered weights are float32-accurate.
    zeros = torch.zeros(1, bins)
    total = TwoHot(zeros).loss(target[None]) / math.log(bins)
    logits = c * torch.eye(bins)
    loss = TwoHot(logits).loss(target.expand(bins))
    lse = torch.logsumexp(logits, -1)
    return (total * lse - loss) / c, total


@pytest.mark.parametrize("value", [0.0, 0.3, 1.5, -7.25, -300.0, 1e4])
def test_twohot_weights_sum_to_one_and_interpolate_in_raw_space(value):
    # Official symexp_twohot: bins at symexp(linspace(-20, 20, 255)), the two-hot weights
    # interpolate the raw target between its neighbouring bins.
    target = torch.tensor(value)
    weights, total = twohot_weights(target)
    assert total.item() == pytest.approx(1.0, abs=1e-5)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-4)
    bins = symexp(torch.linspace(-20.0, 20.0, 255, dtype=torch.float64))
    y = target.double()
    hi = int(torch.searchsorted(bins, y, right=True))
    lo = hi - 1
    nonzero = (weights.abs() > 1e-4).nonzero().flatten().tolist()
    assert set(nonzero) <= {lo, hi}
    expect_hi = float((y - bins[lo]) / (bins[hi] - bins[lo]))
    assert weights[hi].item() == pytest.approx(expect_hi, abs=1e-4)
    assert weights[lo].item() == pytest.approx(1 - expect_hi, abs=1e-4)
    # The weighted mean of the bins is the raw target.
    assert float((weights.double() * bins).sum()) == pytest.approx(value, rel=1e-4, abs=1e-5)


def test_twohot_bins_are_symexp_of_an_even_symlog_grid():
    bins = TwoHot(torch.zeros(255)).bins
    torch.testing.assert_close(bins, symexp(torch.linspace(-20.0, 20.0, 255)))
    assert torch.equal(bins, -bins.flip(0)) and bins[127] == 0


def test_twohot_predicts_the_mean_of_mixed_targets():
    # Trained on 1 and 20 half the time each, the head predicts their mean, 10.5 (two-hot
    # in symlog space would predict symexp of the mean symlog: 5.48).
    logits = torch.zeros(255, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    targets = torch.tensor([1.0, 20.0])
    for _ in range(500):
        opt.zero_grad()
        TwoHot(logits.expand(2, -1)).loss(targets).mean().backward()
        opt.step()
    assert TwoHot(logits.detach()).pred().item() == pytest.approx(10.5, rel=1e-2)


def test_twohot_targets_outside_range_go_to_the_edge_bin():
    weights, _ = twohot_weights(torch.tensor(1e12))  # symlog = 27.6 > 20
    assert weights[-1].item() == pytest.approx(1.0, abs=1e-5)
    weights, _ = twohot_weights(torch.tensor(-1e12))
    assert weights[0].item() == pytest.approx(1.0, abs=1e-5)


def test_twohot_pred_of_zero_logits_is_exactly_zero():
    assert torch.equal(TwoHot(torch.zeros(3, 255)).pred(), torch.zeros(3))
    assert torch.equal(TwoHot(torch.zeros(2, 5, 255)).pred(), torch.zeros(2, 5))


def test_twohot_heads_pass_their_bins_as_a_buffer_outside_checkpoints():
    # Bins built inside a compiled graph are recomputed per element that reads them; the
    # heads hold them once (not saved: checkpoints stay as they were).
    from agents.actor_critic import Value
    from world_models.world_model import RewardHead

    feat = torch.randn(3, 8)
    for head in (RewardHead(8, units=16), Value(8, layers=1, units=16)):
        assert "bins" not in head.state_dict()
        dist = head(feat)
        assert dist.bins is head.bins
        torch.testing.assert_close(head.bins, TwoHot(torch.zeros(255)).bins, rtol=0, atol=0)
        fresh = TwoHot(dist.logits)
        assert torch.equal(dist.pred(), fresh.pred())
        target = torch.tensor([0.5, -3.0, 40.0])
        assert torch.equal(dist.loss(target), fresh.loss(target))


def test_twohot_loss_is_minimised_by_the_target():
    targets = torch.tensor([0.0, 1.5, -300.0, 1e4])
    logits = torch.zeros(4, 255, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.5)
    first = TwoHot(logits).loss(targets).sum().item()
    for _ in range(300):
        opt.zero_grad()
        TwoHot(logits).loss(targets).sum().backward()
        opt.step()
    assert TwoHot(logits).loss(targets).sum().item() < first / 5
    pred = TwoHot(logits.detach()).pred()
    torch.testing.assert_close(pred, targets, rtol=2e-2, atol=2e-2)


def test_twohot_loss_gradient_is_bounded_for_huge_targets():
    logits = torch.zeros(2, 255, requires_grad=True)
    TwoHot(logits).loss(torch.tensor([1e9, -1e9])).sum().backward()
    assert logits.grad.abs().max() <= 1.0


def test_bernoulli_head_matches_torch():
    logits = torch.randn(6)
    target = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    expect = -D.Bernoulli(logits=logits).log_prob(target)
    torch.testing.assert_close(Bernoulli(logits).loss(target), expect)
    torch.testing.assert_close(Bernoulli(logits).pred(), torch.sigmoid(logits))


# ------------------------------------------------------------------ categoricals


def test_unimix_probabilities():
    logits = torch.tensor([[50.0, -50.0, -50.0, -50.0], [0.0, 0.0, 0.0, 0.0]])
    dist = OneHotCategorical(logits, unimix=0.01)
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(2))
    assert dist.probs.min() >= 0.01 / 4 - 1e-7
    assert dist.probs[0, 0].item() == pytest.approx(0.99 + 0.01 / 4, abs=1e-6)
    torch.testing.assert_close(dist.logits, dist.probs.log())
    # Without unimix a near-deterministic categorical keeps (almost) zero mass elsewhere.
    assert OneHotCategorical(logits, unimix=0.0).probs.min() < 1e-20


def test_onehot_samples_are_one_hot_and_follow_the_probabilities():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7]))
    dist = OneHotCategorical(logits.expand(20000, 3), unimix=0.0)
    sample = dist.sample().detach()
    assert sample.shape == (20000, 3)
    torch.testing.assert_close(sample.sum(-1), torch.ones(20000))
    assert torch.all((sample - sample.round()).abs() < 1e-6)
    torch.testing.assert_close(sample.mean(0), torch.tensor([0.1, 0.2, 0.7]), atol=0.015, rtol=0)
    mode = OneHotCategorical(logits[None], unimix=0.0).mode().detach()
    torch.testing.assert_close(mode, torch.tensor([[0.0, 0.0, 1.0]]))


def test_onehot_straight_through_gradient_equals_probs_gradient():
    torch.manual_seed(1)
    logits = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(5, 4)
    (OneHotCategorical(logits, unimix=0.01).sample() * weight).sum().backward()
    grad_st = logits.grad.clone()
    logits.grad = None
    (OneHotCategorical(logits, unimix=0.01).probs * weight).sum().backward()
    assert grad_st.abs().sum() > 0
    torch.testing.assert_close(grad_st, logits.grad)


def test_onehot_log_prob_and_entropy_match_torch():
    logits = torch.randn(7, 5)
    dist = OneHotCategorical(logits, unimix=0.01)
    ref = D.OneHotCategorical(probs=dist.probs)
    x = torch.eye(5)[torch.randint(0, 5, (7,))]
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(dist.entropy(), ref.entropy())


def test_categorical_kl_matches_torch_distributions():
    p = torch.log_softmax(torch.randn(3, 6, 4, 5), -1)
    q = torch.log_softmax(torch.randn(3, 6, 4, 5), -1)
    ref = D.kl_divergence(D.Independent(D.Categorical(logits=p), 1),
                          D.Independent(D.Categorical(logits=q), 1))
    kl = categorical_kl(p, q)
    assert kl.shape == (3, 6)
    torch.testing.assert_close(kl, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(categorical_kl(p, p), torch.zeros(3, 6), rtol=0, atol=1e-6)


# ------------------------------------------------------------------ bounded normal


def test_bounded_normal_matches_torch_normal():
    out = torch.randn(8, 6) * 3
    dist = BoundedNormal(out, minstd=0.1, maxstd=1.0)
    ref = D.Independent(D.Normal(dist.mean, dist.std), 1)
    x = torch.randn(8, 3)
    torch.testing.assert_close(dist.log_prob(x), ref.log_prob(x))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    torch.testing.assert_close(dist.mode(), dist.mean)
    assert dist.sample().shape == (8, 3)


def test_bounded_normal_ranges():
    out = torch.tensor([[-1e3, 0.0, 1e3, -1e3, 0.0, 1e3]])
    dist = BoundedNormal(out, minstd=0.1, maxstd=1.0)
    assert dist.mean.abs().max() <= 1.0
    assert dist.mean[0, 2] == pytest.approx(1.0)
    assert dist.std.min() >= 0.1 and dist.std.max() <= 1.0
    assert dist.std[0, 0] == pytest.approx(0.1) and dist.std[0, 2] == pytest.approx(1.0)
    # A zero output starts at a high std (sigmoid(2) of the range above minstd).
    assert dist.std[0, 1].item() == pytest.approx(0.1 + 0.9 * torch.sigmoid(torch.tensor(2.0)))
