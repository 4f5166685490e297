"""DreamerV3 building blocks: block-linear and conv layers, encoders/decoders and the
world-model loss terms (the distributions: test_dists.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from world_models.dists import (
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
