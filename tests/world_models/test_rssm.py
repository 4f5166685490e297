"""RSSM: resets at `is_first`, observe/imagine shapes, KL balancing with free bits."""

from __future__ import annotations

import pytest
import torch

from world_models.dists import OneHotCategorical, categorical_kl
from world_models.rssm import RSSM

EMBED, ACT = 10, 3


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture
def rssm() -> RSSM:
    torch.manual_seed(0)
    return RSSM(EMBED, ACT, deter=32, hidden=16, stoch=4, classes=5, blocks=4, free_nats=1.0)


@pytest.fixture
def deterministic(monkeypatch):
    """Latent samples become modes, so rollouts are a function of their inputs only."""
    monkeypatch.setattr(OneHotCategorical, "sample", lambda self, uniform=None: self.mode())


def sequence(B: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, EMBED, generator=g), torch.randn(B, T, ACT, generator=g))


def test_observe_shapes_and_normalised_logits(rssm):
    embed, action = sequence(2, 6, 0)
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[:, 0] = True
    post, prior = rssm.observe(embed, action, is_first)
    assert post["deter"].shape == (2, 6, 32)
    assert post["stoch"].shape == (2, 6, 4, 5) and post["logits"].shape == (2, 6, 4, 5)
    assert prior["logits"].shape == (2, 6, 4, 5)
    torch.testing.assert_close(post["logits"].exp().sum(-1), torch.ones(2, 6, 4))
    torch.testing.assert_close(post["stoch"].detach().sum(-1), torch.ones(2, 6, 4))
    assert rssm.feat(post).shape == (2, 6, rssm.feat_dim) == (2, 6, 32 + 4 * 5)


def test_observe_resets_at_is_first_regardless_of_history(rssm, deterministic):
    # Row 0: 4 steps of history, then an episode starts at t=4. Row 1: the same episode
    # from a fresh start. From the reset on, both rows must agree exactly.
    hist_embed, hist_action = sequence(1, 4, 1)
    ep_embed, ep_action = sequence(1, 5, 2)
    embed = torch.cat([torch.cat([hist_embed, ep_embed], 1),
                       torch.cat([ep_embed, hist_embed], 1)], 0)
    action = torch.cat([torch.cat([hist_action, ep_action], 1),
                        torch.cat([ep_action, hist_action], 1)], 0)
    is_first = torch.zeros(2, 9, dtype=torch.bool)
    is_first[0, [0, 4]] = True
    is_first[1, 0] = True
    post, prior = rssm.observe(embed, action, is_first)
    for key in ("deter", "stoch", "logits"):
        torch.testing.assert_close(post[key][0, 4:], post[key][1, :5])
    torch.testing.assert_close(prior["logits"][0, 4:], prior["logits"][1, :5])
    # Sanity: the history did shape the state before the reset.
    assert not torch.allclose(post["deter"][0, 3], torch.zeros(32))


def test_obs_step_reset_ignores_state_and_action(rssm):
    embed = torch.randn(2, EMBED)
    first = torch.ones(2, dtype=torch.bool)
    fresh = rssm.initial(2, "cpu")
    old = {"deter": torch.randn(2, 32), "stoch": torch.eye(5)[torch.randint(0, 5, (2, 4))],
           "logits": torch.randn(2, 4, 5)}
    old_action = torch.randn(2, ACT) * 5
    torch.manual_seed(3)
    a, a_prior = rssm.obs_step(fresh, torch.zeros(2, ACT), embed, first)
    torch.manual_seed(3)
    b, b_prior = rssm.obs_step(old, old_action, embed, first)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(a_prior["logits"], b_prior["logits"])
    # Without the reset the old state matters.
    c, _ = rssm.obs_step(old, torch.randn(2, ACT), embed, torch.zeros(2, dtype=torch.bool))
    assert not torch.allclose(a["deter"], c["deter"])


def test_observe_continues_from_a_given_state(rssm, deterministic):
    embed, action = sequence(2, 6, 4)
    is_first = torch.zeros(2, 6, dtype=torch.bool)
    is_first[:, 0] = True
    full, _ = rssm.observe(embed, action, is_first)
    head, _ = rssm.observe(embed[:, :3], action[:, :3], is_first[:, :3])
    state = {k: v[:, -1] for k, v in head.items()}
    tail, _ = rssm.observe(embed[:, 3:], action[:, 3:], is_first[:, 3:], state)
    torch.testing.assert_close(tail["deter"], full["deter"][:, 3:])


def test_imagine_shapes_and_policy_inputs(rssm):
    start = {"deter": torch.randn(6, 32), "stoch": torch.eye(5)[torch.randint(0, 5, (6, 4))]}
    seen = []

    def policy(feat):
        seen.append(feat.shape)
        return torch.tanh(feat[:, :ACT])

    states, actions = rssm.imagine(start, policy, horizon=5)
    assert states["deter"].shape == (6, 6, 32)
    assert states["stoch"].shape == (6, 6, 4, 5)
    assert actions.shape == (6, 6, ACT)
    assert seen == [(6, rssm.feat_dim)] * 6
    torch.testing.assert_close(states["deter"][:, 0], start["deter"])
    # Each imagined state follows from the previous one and the action taken there.
    torch.manual_seed(0)
    step = rssm.img_step({k: v[:, 2] for k, v in states.items()}, actions[:, 2])
    torch.testing.assert_close(step["deter"], states["deter"][:, 3])


def test_large_actions_are_scaled_down_not_up(rssm):
    state = rssm.initial(1, "cpu")
    state["deter"] = torch.randn(1, 32)
    # Not up: a small action is not pushed to the unit bound (it acts unlike 1.0).
    small = rssm.img_step(state, torch.tensor([[0.5, -0.2, 0.9]]), sample=False)["deter"]
    unit = rssm.img_step(state, torch.tensor([[1.0, -0.2, 0.9]]), sample=False)["deter"]
    assert (small - unit).abs().max() > 1e-4
    big = rssm.img_step(state, torch.tensor([[50.0, -0.2, 0.9]]), sample=False)["deter"]
    clipped = rssm.img_step(state, torch.tensor([[1.0, -0.2, 0.9]]), sample=False)["deter"]
    torch.testing.assert_close(big, clipped)


def logits(*shape, scale=1.0, requires_grad=True):
    out = torch.log_softmax(torch.randn(*shape) * scale, -1).detach()
    return out.requires_grad_(requires_grad)


def test_kl_losses_free_bits_and_stop_gradients(rssm):
    torch.manual_seed(0)
    post = {"logits": logits(3, 4, 5, scale=4.0)}
    prior = {"logits": logits(3, 4, 5, scale=4.0)}
    kl = categorical_kl(post["logits"], prior["logits"]).detach()
    assert (kl > 1.0).all()  # big logits: every row above the free bits
    dyn, rep = rssm.kl_losses(post, prior)
    torch.testing.assert_close(dyn.detach(), kl)
    torch.testing.assert_close(rep.detach(), kl)
    # dyn trains only the prior, rep only the posterior.
    (g_post,) = torch.autograd.grad(dyn.sum(), post["logits"], allow_unused=True,
                                    materialize_grads=True)
    (g_prior,) = torch.autograd.grad(dyn.sum(), prior["logits"])
    assert torch.all(g_post == 0) and g_prior.abs().sum() > 0
    (g_prior,) = torch.autograd.grad(rep.sum(), prior["logits"], allow_unused=True,
                                     materialize_grads=True)
    (g_post,) = torch.autograd.grad(rep.sum(), post["logits"])
    assert torch.all(g_prior == 0) and g_post.abs().sum() > 0


def test_kl_losses_are_clamped_at_free_nats(rssm):
    torch.manual_seed(1)
    base = logits(3, 4, 5, scale=0.1, requires_grad=False)
    post = {"logits": base.clone().requires_grad_()}
    prior = {"logits": torch.log_softmax(base + 0.01 * torch.randn(3, 4, 5), -1)
             .requires_grad_()}
    dyn, rep = rssm.kl_losses(post, prior)
    assert torch.all(dyn == 1.0) and torch.all(rep == 1.0)
    # Below the free bits there is nothing to optimise.
    (dyn + rep).sum().backward()
    assert torch.all(post["logits"].grad == 0) and torch.all(prior["logits"].grad == 0)
    loose = RSSM(EMBED, ACT, deter=32, hidden=16, stoch=4, classes=5, blocks=4, free_nats=0.0)
    dyn, _ = loose.kl_losses(post, prior)
    assert (dyn < 1.0).all() and (dyn > 0).all()


@pytest.mark.parametrize("dynlayers", [0, 1, 2])
def test_core_is_the_same_map_at_large_and_small_batches(dynlayers):
    # Batches >= 256 take the split matmul (own block + shared input), smaller ones build
    # the concatenated input: both must compute the same function, gradients included.
    torch.manual_seed(0)
    rssm = RSSM(embed_dim=8, act_dim=3, deter=32, hidden=8, stoch=4, classes=4, blocks=4,
                dynlayers=dynlayers)
    deter = torch.randn(300, 32, requires_grad=True)
    stoch = torch.rand(300, 4, 4)
    action = torch.randn(300, 3)
    big = rssm._core(deter, stoch, action)
    small = torch.cat([rssm._core(deter[i:i + 100], stoch[i:i + 100], action[i:i + 100])
                       for i in range(0, 300, 100)])
    assert torch.allclose(big, small, atol=1e-5)
    (g_big,) = torch.autograd.grad(big.square().sum(), deter)
    (g_small,) = torch.autograd.grad(small.square().sum(), deter)
    assert torch.allclose(g_big, g_small, atol=1e-4)
