"""DreamerV3 building blocks: symlog, two-hot, unimix categorical, bounded normal, KL,
block-linear and conv layers, encoders/decoders and the world-model loss terms."""

from __future__ import annotations

import copy
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
from world_models.encoders import CONV_BF16_MIN_FRAMES, MultiDecoder, MultiEncoder
from world_models.nets import (
    BlockLinear,
    ChannelRMSNorm,
    Linear,
    UpsampleConv2d,
    ZeroInsertConvTranspose2d,
    conv_stack,
    mlp,
)
from world_models.world_model import WorldModel

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


# ------------------------------------------------------------------ layers


def test_block_linear_equals_block_diagonal_dense_matrix():
    layer = BlockLinear(12, 8, blocks=4)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 5, 12)
    dense = torch.block_diag(*layer.weight)  # [12, 8]
    assert dense.shape == (12, 8)
    torch.testing.assert_close(layer(x), x @ dense + layer.bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="blocks"):
        BlockLinear(10, 8, blocks=4)


def test_block_linear_init_fan_in_is_the_whole_input():
    # Official compute_fans on a (blocks, in/blocks, out/blocks) kernel: fan-in = in.
    torch.manual_seed(0)
    layer = BlockLinear(1024, 512, blocks=8)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(1 / 1024), rel=0.05)


def test_linear_init_and_zero_outscale():
    torch.manual_seed(0)
    layer = Linear(400, 300)
    assert torch.all(layer.bias == 0)
    assert layer.weight.std().item() == pytest.approx(math.sqrt(1 / 400), rel=0.05)
    # outscale multiplies the weights (official), so 0.01 gives 1/100 of the std.
    small = Linear(400, 300, outscale=0.01)
    assert small.weight.std().item() == pytest.approx(0.01 * math.sqrt(1 / 400), rel=0.05)
    assert torch.all(Linear(16, 4, outscale=0.0).weight == 0)
    net = mlp(5, 2, 16, out=3, outscale=0.0)
    assert torch.equal(net(torch.randn(4, 5)), torch.zeros(4, 3))
    assert [type(m).__name__ for m in mlp(5, 1, 16)] == ["Linear", "RMSNorm", "SiLU"]


def test_channel_rmsnorm_matches_rmsnorm_over_channels():
    x = torch.randn(2, 6, 5, 5)
    norm = ChannelRMSNorm(6)
    with torch.no_grad():
        norm.weight.normal_()
    ref = torch.nn.RMSNorm(6, eps=1e-4)
    ref.weight.data.copy_(norm.weight.data)
    expect = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strided", [False, True])
def test_conv_stacks_run_bf16_on_training_batches_only(strided):
    # `conv_bf16` (the agent sets it from `conv_precision`): the convs of a training-size
    # batch run in bf16, outputs and gradients stay fp32 and close to fp32's; an acting-size
    # batch (a frame per env) is computed exactly as in fp32.
    torch.manual_seed(0)
    shapes, n = {"image": (16, 16, 3)}, CONV_BF16_MIN_FRAMES
    enc = MultiEncoder(shapes, depth=4, mults=(2, 2), strided=strided)
    dec = MultiDecoder(8, shapes, depth=4, mults=(2, 2), strided=strided)
    frames = torch.randint(0, 256, (n, 16, 16, 3), dtype=torch.uint8)
    feat = torch.randn(n, 8)
    convs = [m for m in [*enc.modules(), *dec.modules()]
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    dtypes: list[torch.dtype] = []
    for conv in convs:
        conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))

    def run(count: int):
        enc.zero_grad(set_to_none=True)
        dec.zero_grad(set_to_none=True)
        emb, img = enc({"image": frames[:count]}), dec(feat[:count])["image"]
        (emb.square().mean() + img.square().mean()).backward()
        grads = torch.cat([p.grad.flatten() for p in [*enc.parameters(), *dec.parameters()]])
        return emb, img, grads

    ref = run(n)
    small = run(4)
    assert set(dtypes) == {torch.float32}
    enc.conv_bf16 = dec.conv_bf16 = True
    dtypes.clear()
    out = run(n)
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == len(convs)
    for a, b in zip(out, ref):
        assert a.dtype == torch.float32
        assert (a - b).norm() / b.norm() < 2e-2  # bf16: 8 mantissa bits per rounding
    assert torch.nn.functional.cosine_similarity(out[2], ref[2], dim=0) > 0.999
    dtypes.clear()
    for a, b in zip(run(4), small):
        if strided:  # the decoder's layers are in their sub-pixel form now: same function
            assert (a - b).norm() / b.norm() < 1e-5
        else:
            assert torch.equal(a, b)
    assert set(dtypes) == {torch.float32}


def test_strided_decoder_switches_to_sub_pixel_form_with_bf16_convs():
    # bf16 transposed convs are a slow oneDNN path, the sub-pixel form in bf16 a fast one:
    # the strided layers follow the decoder's `conv_bf16`, in copies too.
    dec = MultiDecoder(8, {"image": (16, 16, 3)}, depth=4, mults=(2, 2), strided=True)
    layers = [m for m in dec.modules() if isinstance(m, ZeroInsertConvTranspose2d)]
    assert len(layers) == 2 and not any(m.sub_pixel for m in layers)
    dec.conv_bf16 = True
    assert all(m.sub_pixel for m in layers) and copy.deepcopy(dec).deconv[-1].sub_pixel
    dec.conv_bf16 = False
    assert not any(m.sub_pixel for m in layers)


@pytest.mark.parametrize("strided", [False, True])
def test_conv_stack_halves_and_doubles_resolution(strided):
    down = conv_stack([3, 4, 8, 8, 16], strided=strided)
    up = conv_stack([16, 8, 8, 4, 3], transpose=True, strided=strided)
    z = down(torch.randn(2, 3, 64, 64))
    assert z.shape == (2, 16, 4, 4)
    assert up(z).shape == (2, 3, 64, 64)
    # The decoder's last layer emits raw pixels: no norm or activation after it.
    assert isinstance(up[-1], torch.nn.Conv2d | torch.nn.ConvTranspose2d)


@pytest.mark.parametrize("sub_pixel", [True, False])
@pytest.mark.parametrize("kernel", [3, 5])
def test_strided_decoder_layer_is_a_conv_on_the_zero_inserted_grid(kernel, sub_pixel):
    # Official strided decoder: input pixel i placed at 2i + 1 of a zero grid, then a
    # 'same' conv of the given kernel; the transposed conv (the default) and the sub-pixel
    # form (kept for comparison) both.
    torch.manual_seed(0)
    layer = ZeroInsertConvTranspose2d(3, 4, kernel)
    layer.sub_pixel = sub_pixel
    x = torch.randn(2, 3, 4, 4)
    grid = torch.zeros(2, 3, 8, 8)
    grid[:, :, 1::2, 1::2] = x
    weight = layer.weight.flip(-1, -2).transpose(0, 1)  # transposed-conv kernel -> conv
    expect = torch.nn.functional.conv2d(grid, weight, layer.bias, padding=kernel // 2)
    torch.testing.assert_close(layer(x), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sub_pixel", [True, False])
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_sub_pixel_decoder_layer_is_nearest_upsample_then_conv(kernel, sub_pixel):
    # Official non-strided decoder layer: nearest 2x upsample, then a 'same' conv. The
    # sub-pixel form must give the same values and the same gradients for the same weight.
    torch.manual_seed(0)
    layer = UpsampleConv2d(3, 4, kernel).double()
    layer.sub_pixel = sub_pixel
    ref = torch.nn.Conv2d(3, 4, kernel, padding=kernel // 2).double()
    ref.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    expect = ref(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)
    cot = torch.randn_like(out)
    grads = torch.autograd.grad((out * cot).sum(), [x, layer.weight, layer.bias])
    grads_ref = torch.autograd.grad((expect * cot).sum(), [x, ref.weight, ref.bias])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="odd kernel"):
        UpsampleConv2d(3, 4, 4)


# ------------------------------------------------------------------ encoders / world model

SHAPES = {"image": (64, 64, 3), "vector": (5,)}
SMALL = {"depth": 2, "mults": [2, 2, 2, 2], "layers": 1, "units": 16}


def obs_batch(B: int = 2, T: int = 3) -> dict[str, torch.Tensor]:
    return {"image": torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8),
            "vector": torch.randn(B, T, 5) * 10}


def test_multi_encoder_encodes_both_image_and_vector():
    enc = MultiEncoder(SHAPES, **SMALL)
    obs = obs_batch()
    out = enc(obs)
    assert out.shape == (2, 3, enc.out_dim)
    assert enc.out_dim == 4 * 4 * 4 + 16
    # Each modality moves the embedding.
    other_img = dict(obs, image=torch.randint(0, 256, obs["image"].shape, dtype=torch.uint8))
    other_vec = dict(obs, vector=obs["vector"] + 1)
    assert not torch.allclose(enc(other_img), out)
    assert not torch.allclose(enc(other_vec), out)
    assert MultiEncoder({"vector": (5,)}, **SMALL)(obs).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="image shape"):
        MultiEncoder({"image": (60, 60, 3)}, **SMALL)
    with pytest.raises(ValueError, match="no encodable"):
        MultiEncoder({"state": (3,)}, **SMALL)


def test_multi_decoder_shapes_and_loss():
    dec = MultiDecoder(10, SHAPES, **SMALL)
    pred = dec(torch.randn(2, 3, 10))
    assert pred["image"].shape == (2, 3, 64, 64, 3)
    assert pred["vector"].shape == (2, 3, 5)
    assert pred["image"].min() >= 0 and pred["image"].max() <= 1
    obs = obs_batch()
    losses = dec.loss(pred, obs)
    expect = (pred["image"] - obs["image"].float() / 255).pow(2).sum((-3, -2, -1))
    torch.testing.assert_close(losses["rec_image"], expect)
    expect = (pred["vector"] - symlog(obs["vector"])).pow(2).sum(-1)
    torch.testing.assert_close(losses["rec_vector"], expect)


def test_decoder_spatial_projection_is_normalised_before_the_convs():
    # Official: RMSNorm + SiLU after the projection to the 4x4 map, so the convs see the
    # same input however the projection's scale drifts.
    torch.manual_seed(0)
    dec = MultiDecoder(10, {"image": (64, 64, 3)}, **SMALL)
    feat = torch.randn(3, 10)
    with torch.no_grad():  # scaled well above the norm's epsilon, then 10x more
        dec.space.weight.mul_(10.0)
        before = dec(feat)["image"]
        dec.space.weight.mul_(10.0)
    torch.testing.assert_close(dec(feat)["image"], before, rtol=1e-4, atol=1e-4)


def world_model(free_nats: float = 1.0, diag_every: int = 0) -> WorldModel:
    rssm = {"deter": 32, "hidden": 16, "stoch": 4, "classes": 3, "blocks": 4,
            "free_nats": free_nats}
    head = {"layers": 1, "units": 16}
    return WorldModel(
        SHAPES, act_dim=2, rssm=rssm, encoder=SMALL, decoder=SMALL, reward_head=head,
        cont_head=head, loss_scales={"rec": 1.0, "rew": 1.0, "con": 1.0, "dyn": 1.0, "rep": 0.1},
        diag_every=diag_every)


def wm_batch(B: int = 2, T: int = 4) -> dict[str, torch.Tensor]:
    return {**obs_batch(B, T), "action": torch.randn(B, T, 2), "reward": torch.randn(B, T),
            "is_first": torch.tensor([[1, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.bool),
            "is_terminal": torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)}


def test_world_model_loss_terms():
    torch.manual_seed(0)
    wm = world_model()
    B, T = 2, 4
    batch = wm_batch(B, T)
    losses, post, metrics = wm.loss(batch)
    assert set(losses) == {"dyn", "rep", "rec_image", "rec_vector", "rew", "con"}
    for name, value in losses.items():
        assert value.shape == (B, T), name
        assert torch.isfinite(value).all(), name
    assert (losses["dyn"] >= 1.0).all() and (losses["rep"] >= 1.0).all()
    assert post["deter"].shape == (B, T, 32) and post["stoch"].shape == (B, T, 4, 3)
    assert set(metrics) == {"train/post_ent", "train/prior_ent"}
    total = wm.total(losses)
    expect = sum(v.mean() for k, v in losses.items() if k != "rep") + 0.1 * losses["rep"].mean()
    torch.testing.assert_close(total, expect)
    total.backward()
    # Both encoder branches and every head receive gradient (the reward head's output
    # layer is zero-initialised, so only that layer has gradient at the first step).
    for name in ("encoder.cnn.0.weight", "encoder.mlp.0.weight", "objective.decoder.space.weight",
                 "reward.net.3.weight", "cont.net.0.weight", "rssm.post_net.0.weight"):
        grad = dict(wm.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_world_model_collapse_diagnostics_every_n_loss_calls():
    # diag_every=2: calls 1 and 3 carry RankMe / std score of embeddings and features.
    torch.manual_seed(0)
    wm = world_model(diag_every=2)
    batch = wm_batch()
    logged = [wm.loss(batch)[2] for _ in range(3)]
    assert ["collapse/embed_rankme" in m for m in logged] == [True, False, True]
    m = logged[0]
    # 8 distinct observations, embedding of 4*4*4 + 16 dims, feature 32 + 4*3.
    assert m["collapse/distinct_obs"] == 8 and m["collapse/embed_dim"] == 80
    assert m["collapse/feat_dim"] == 44
    assert 1.0 <= m["collapse/embed_rankme"] <= 8.0 and 0 < m["collapse/feat_std_score"]
