import pytest
import torch

from world_models.regularizers import batch_standardise, sigreg
from world_models.vit_jepa import JEPA, JEPAConfig, Predictor, make_config, vicreg_terms
from world_models.vit_jepa.reconstruction import FrameAutoencoder, MaskedAutoencoder, patchify
from world_models.vit_jepa.vit import ConfigError


def _tiny(fpc: int = 1) -> JEPA:
    cfg = make_config("tiny", frames_per_clip=fpc, width=32, depth=1, heads=2)
    return JEPA(cfg, JEPAConfig(pred_depth=1, pred_heads=2))


def test_ema_update_math():
    m = _tiny()
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.target.parameters()]
    online = [p.clone() for p in m.encoder.parameters()]
    m.update_target(0.9)
    for b, o, t in zip(before, online, m.target.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert m.momentum(0, 100) == pytest.approx(0.996)
    assert m.momentum(50, 100) == pytest.approx(0.998)
    assert m.momentum(100, 100) == pytest.approx(1.0)
    # I-JEPA's schedule: the ramp spans 1.25x the run, so the target still learns at the end.
    stretched = JEPA(m.vit_cfg, JEPAConfig(pred_depth=1, pred_heads=2, ema_stretch=1.25))
    assert stretched.momentum(50, 100) == pytest.approx(0.996 + 0.004 * 0.4)
    assert stretched.momentum(100, 100) == pytest.approx(0.9992)
    with pytest.raises(ValueError, match="ema_stretch"):
        JEPAConfig(ema_stretch=0.5)


def test_predictor_shapes():
    p = Predictor(enc_width=32, grid=(1, 8, 8), width=16, depth=1, heads=2)
    ctx = torch.randn(3, 20, 32)
    ctx_idx = torch.arange(20).expand(3, -1)
    tgt_idx = torch.randint(20, 64, (3, 4, 9))
    assert p(ctx, ctx_idx, tgt_idx).shape == (3, 4, 9, 32)


@pytest.mark.parametrize("fpc,reg,terms", [(1, "vicreg", {"loss/vicreg_var", "loss/vicreg_cov"}),
                                           (2, "sigreg", {"loss/sigreg"}), (1, "none", set())])
def test_loss_backward_only_reaches_online_branch(fpc, reg, terms):
    m = _tiny(fpc)
    m.cfg = JEPAConfig(pred_depth=1, pred_heads=2, reg=reg, reg_weight=1.0)
    x = torch.randint(0, 255, (4, fpc, 64, 64, 3), dtype=torch.uint8)
    out = m.loss(x, torch.Generator().manual_seed(0))
    assert {"loss/pred", "loss/total"} | terms == set(out)
    torch.testing.assert_close(out["loss/total"], sum(v for k, v in out.items()
                                                      if k != "loss/total")
                               if reg != "vicreg" else out["loss/pred"] + out["loss/vicreg_var"]
                               + out["loss/vicreg_cov"] / 25)
    out["loss/total"].backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert m.encoder.patch_embed.weight.grad.abs().sum() > 0


def test_sigreg_is_small_for_a_standard_gaussian_and_large_for_collapse():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(512, 32, generator=g)
    ok = float(sigreg(gauss, gen=torch.Generator().manual_seed(1)))
    point = float(sigreg(torch.zeros(512, 32), gen=torch.Generator().manual_seed(1)))
    line = float(sigreg(gauss[:, :1].expand(-1, 32), gen=torch.Generator().manual_seed(1)))
    wide = float(sigreg(3 * gauss, gen=torch.Generator().manual_seed(1)))
    # Under the null N * |ecf - cf|^2 has mean 1 - cf(t)^2 at each t, so the statistic is
    # about the integral of (1 - exp(-t^2)) exp(-t^2 / 2): sqrt(2 pi) - sqrt(2 pi / 3) = 1.06.
    assert 0.5 < ok < 2.0
    assert min(point, line, wide) > 50 * ok
    # N * a squared distance: a fixed error costs the same per sample at any batch size.
    assert float(sigreg(torch.zeros(64, 32))) == pytest.approx(point / 8, rel=1e-5)
    z = gauss[:64].clone().mul_(0.2).requires_grad_()
    sigreg(z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_standardised_sigreg_ignores_offset_and_scale_but_not_rank():
    """The JEPA default: SIGReg after per-dimension standardisation over the batch. A shared
    offset and a small spread (frames of one scene) cost nothing; correlated dimensions (a
    rank-1 embedding) still cost as much as before."""
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(512, 32, generator=g)

    def stat(z):
        return float(sigreg(batch_standardise(z), gen=torch.Generator().manual_seed(1)))

    ok, shifted = stat(gauss), stat(5.0 + 0.1 * gauss)
    assert shifted == pytest.approx(ok, rel=1e-2) and ok < 2.0
    assert float(sigreg(5.0 + 0.1 * gauss, gen=torch.Generator().manual_seed(1))) > 50 * ok
    assert stat(gauss[:, :1].expand(-1, 32) + 1e-3 * gauss) > 50 * ok
    z = batch_standardise(torch.randn(7, 3, 4, generator=g))
    assert z.shape == (21, 4)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4), atol=1e-3, rtol=0)


def test_jepa_uses_standardised_sigreg_by_default():
    m = _tiny(1)
    assert m.cfg.reg == "sigreg" and m.cfg.reg_standardise
    x = torch.randint(0, 255, (6, 1, 64, 64, 3), dtype=torch.uint8)
    ctx_seen = {}
    real = batch_standardise

    def spy(z):
        ctx_seen["shape"] = tuple(z.shape)
        return real(z)

    import world_models.vit_jepa.model as model_module

    model_module.batch_standardise, saved = spy, model_module.batch_standardise
    try:
        m.loss(x, torch.Generator().manual_seed(0))
    finally:
        model_module.batch_standardise = saved
    assert ctx_seen["shape"] == (6, m.vit_cfg.width)  # one pooled embedding per frame


def test_patchify_orders_tokens_like_the_patch_embedding():
    cfg = make_config("tiny", (16, 24, 3), 2, width=16, depth=1, heads=2, patch=8)
    clip = torch.zeros(1, 2, 16, 24, 3, dtype=torch.uint8)
    for i in range(2):  # rows
        for j in range(3):  # columns
            clip[0, :, 8 * i : 8 * i + 8, 8 * j : 8 * j + 8] = 10 * (3 * i + j)
    patches = patchify(clip, cfg)
    assert patches.shape == (1, 6, 2 * 8 * 8 * 3)
    expect = torch.arange(6) * 10 / 255.0 - 0.5
    torch.testing.assert_close(patches[0].mean(1), expect)
    assert float(patches[0].std(1).max()) == 0.0


@pytest.mark.parametrize("fpc", [1, 2])
def test_reconstruction_baselines_train_their_encoder(fpc):
    cfg = make_config("tiny", frames_per_clip=fpc, width=32, depth=1, heads=2)
    x = torch.randint(0, 255, (3, fpc, 64, 64, 3), dtype=torch.uint8)
    for model in (MaskedAutoencoder(cfg), FrameAutoencoder(cfg)):
        out = model.loss(x, torch.Generator().manual_seed(0))
        assert set(out) == {"loss/rec", "loss/total"} and out["loss/total"] > 0
        out["loss/total"].backward()
        assert model.export_encoder().patch_embed.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedAutoencoder(cfg, mask_ratio=1.0)


def test_vicreg_terms():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 8, generator=g) * 3
    var, cov = vicreg_terms(z)
    assert var.item() == pytest.approx(0.0, abs=1e-3)
    _, cov_corr = vicreg_terms(z[:, :1].expand(-1, 8))
    assert cov_corr.item() > 10 * cov.item()
    var, _ = vicreg_terms(torch.zeros(16, 8))
    assert var.item() == pytest.approx(0.99, abs=0.01)


def test_bad_config_is_clear():
    with pytest.raises(ValueError, match="allowed: sigreg, vicreg, none"):
        JEPAConfig(reg="barlow")
    with pytest.raises(ConfigError, match="preset"):
        make_config("huge")
    with pytest.raises(ConfigError, match="frames_per_clip"):
        make_config("tiny", frames_per_clip=3)


def _temporal(**kw) -> JEPA:
    cfg = make_config("tiny", image_shape=(16, 16, 3), patch=4, width=32, depth=1, heads=2)
    return JEPA(cfg, JEPAConfig(pred_depth=1, pred_heads=2, **kw))


def test_horizon_encodes_the_earlier_frame_and_targets_the_later_one():
    m = _temporal(horizon=2)
    assert m.clip_frames == 3 and not m.needs_actions
    seen = {}
    m.encoder.register_forward_hook(lambda mod, args, out: seen.__setitem__("ctx", args[0]))
    m.target.register_forward_hook(lambda mod, args, out: seen.__setitem__("tgt", args[0]))
    clip = torch.randint(0, 255, (4, 3, 16, 16, 3), dtype=torch.uint8)
    m.loss(clip, torch.Generator().manual_seed(0))["loss/total"].backward()
    assert torch.equal(seen["ctx"], clip[:, :1]) and torch.equal(seen["tgt"], clip[:, 2:])
    with pytest.raises(ValueError, match="clip of 1 frames; this model takes 3"):
        m.loss(clip[:, :1])


def test_full_context_sees_every_token_of_the_earlier_frame():
    m = _temporal(horizon=1, context="full")
    seen = {}
    m.predictor.register_forward_hook(lambda mod, args, out: seen.__setitem__("idx", args[1]))
    m.loss(torch.randint(0, 255, (2, 2, 16, 16, 3), dtype=torch.uint8))
    assert torch.equal(seen["idx"], torch.arange(16).expand(2, -1))


def test_action_conditioned_predictor_uses_the_actions_between_the_clips():
    m = _temporal(horizon=2, action_dim=3)
    assert m.needs_actions
    clip = torch.randint(0, 255, (4, 3, 16, 16, 3), dtype=torch.uint8)
    acts = torch.randn(4, 2, 3)
    out = m.loss(clip, torch.Generator().manual_seed(0), actions=acts)
    out["loss/total"].backward()
    assert m.action_embed.weight.grad.abs().sum() > 0 and m.action_pos.grad.abs().sum() > 0
    other = m.loss(clip, torch.Generator().manual_seed(0), actions=-acts)["loss/pred"].detach()
    assert float(other) != pytest.approx(float(out["loss/pred"].detach()), abs=1e-7)
    with pytest.raises(ValueError, match=r"needs actions of shape \(4, 2, 3\), got none"):
        m.loss(clip)


def test_change_weights_favour_what_moves():
    from world_models.vit_jepa.model import change_weights

    cfg = make_config("tiny", image_shape=(8, 8, 3), patch=4, width=32, depth=1, heads=2)
    past = torch.zeros(1, 1, 8, 8, 3, dtype=torch.uint8)
    future = past.clone()
    future[0, 0, :4, :4] = 200  # only the top-left patch (token 0) changes
    idx = torch.arange(4).reshape(1, 1, 4)
    w = change_weights(past, future, cfg, idx)
    assert w.shape == (1, 1, 4) and float(w.mean()) == pytest.approx(1.0)
    assert w[0, 0, 1:].tolist() == pytest.approx([0.1] * 3) and float(w[0, 0, 0]) > 3
    assert torch.equal(change_weights(past, past, cfg, idx), torch.ones(1, 1, 4))


def test_change_weighted_loss_is_uniform_on_a_static_batch():
    clip = torch.randint(0, 255, (2, 1, 16, 16, 3), dtype=torch.uint8).expand(-1, 2, -1, -1, -1)
    losses = {}
    for weight in ("uniform", "change"):
        torch.manual_seed(0)
        m = _temporal(horizon=1, token_weight=weight)
        losses[weight] = float(m.loss(clip, torch.Generator().manual_seed(0))["loss/pred"])
    assert losses["change"] == pytest.approx(losses["uniform"])  # nothing moved: uniform


@pytest.mark.parametrize("norm,calls", [("layer", 1), ("none", 0)])
def test_target_norm_none_takes_the_targets_before_any_norm(norm, calls):
    m = _temporal(horizon=1, target_norm=norm)
    seen = []
    m.target.norm.register_forward_hook(lambda mod, args, out: seen.append(1))
    m.loss(torch.randint(0, 255, (2, 2, 16, 16, 3), dtype=torch.uint8))
    assert len(seen) == calls


def test_centred_targets_keep_what_differs_between_frames_at_each_position():
    from world_models.vit_jepa.model import normalise_targets

    m = _temporal(horizon=1)
    clip = torch.randint(0, 255, (6, 1, 16, 16, 3), dtype=torch.uint8)
    layer = normalise_targets(m.target, clip, "layer")
    centred = normalise_targets(m.target, clip, "center")
    torch.testing.assert_close(centred.mean(0), torch.zeros_like(centred[0]), atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(centred[1] - centred[0], layer[1] - layer[0])


def test_targets_over_the_last_blocks_average_their_layer_normed_outputs():
    import torch.nn.functional as F

    from world_models.vit_jepa.model import normalise_targets

    cfg = make_config("tiny", image_shape=(16, 16, 3), patch=4, width=32, depth=3, heads=2)
    m = JEPA(cfg, JEPAConfig(pred_depth=1, pred_heads=2, target_layers=2))
    clip = torch.randint(0, 255, (2, 1, 16, 16, 3), dtype=torch.uint8)
    outs = m.target.block_outputs(clip)
    assert len(outs) == 3
    torch.testing.assert_close(m.target.norm(outs[-1]), m.target(clip))  # same blocks
    ln = [F.layer_norm(o, o.shape[-1:]) for o in outs[1:]]
    want = F.layer_norm((ln[0] + ln[1]) / 2, (32,))
    torch.testing.assert_close(normalise_targets(m.target, clip, "layer", 2), want)
    assert torch.isfinite(m.loss(clip)["loss/total"])
    with pytest.raises(ValueError, match="target layers 4; the encoder has 3 blocks"):
        JEPA(cfg, JEPAConfig(target_layers=4))
    with pytest.raises(ValueError, match="target layers 0; must be >= 1"):
        JEPAConfig(target_layers=0)


def test_horizon_with_two_frame_clips_overlaps_them_and_takes_the_last_action():
    cfg = make_config("tiny", image_shape=(16, 16, 3), frames_per_clip=2, patch=4, width=32,
                      depth=1, heads=2)
    m = JEPA(cfg, JEPAConfig(pred_depth=1, pred_heads=2, horizon=1, action_dim=2))
    seen = {}
    m.encoder.register_forward_hook(lambda mod, args, out: seen.__setitem__("ctx", args[0]))
    m.target.register_forward_hook(lambda mod, args, out: seen.__setitem__("tgt", args[0]))
    m.action_embed.register_forward_hook(lambda mod, args, out: seen.__setitem__("a", args[0]))
    clip = torch.randint(0, 255, (3, 3, 16, 16, 3), dtype=torch.uint8)
    acts = torch.randn(3, 2, 2)
    m.loss(clip, actions=acts)
    assert torch.equal(seen["ctx"], clip[:, :2]) and torch.equal(seen["tgt"], clip[:, 1:])
    assert torch.equal(seen["a"], acts[:, 1:])


def test_temporal_options_without_a_horizon_are_clear_errors():
    for kw in ({"action_dim": 2}, {"token_weight": "change"}, {"context": "full"}):
        with pytest.raises(ValueError, match="need a horizon > 0"):
            JEPAConfig(**kw)
    with pytest.raises(ValueError, match="target norm 'batch'; allowed: layer, none"):
        JEPAConfig(target_norm="batch")
    with pytest.raises(ValueError, match="must be >= 0"):
        JEPAConfig(horizon=-1)


def test_action_conditioned_jepa_learns_to_read_the_actions():
    """A square jumps one patch in the direction of the action taken; after a short training
    the predictor's error on the later frame is lower with the true actions than with
    shuffled ones (frozen target: ema 1)."""
    from agents.pretrain.pretrainer import Pretrainer

    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.randint(4, 9, (n, 2), generator=g)
        move = 4 * torch.randint(-1, 2, (n, 2), generator=g)
        clip = torch.zeros(n, 2, 16, 16, 3, dtype=torch.uint8)
        for i in range(n):
            for t, (r, c) in enumerate((pos[i], pos[i] + move[i])):
                clip[i, t, r : r + 4, c : c + 4] = 255
        return clip, move.float().unsqueeze(1) / 4

    torch.manual_seed(0)
    cfg = make_config("tiny", image_shape=(16, 16, 3), patch=4, width=32, depth=1, heads=2)
    m = JEPA(cfg, JEPAConfig(pred_width=32, pred_depth=2, pred_heads=2, horizon=1,
                             action_dim=2, context="full", reg="none", ema_start=1.0,
                             loss="mse"))
    trainer = Pretrainer(m, 200, lr=3e-3)
    for step in range(200):
        clip, acts = batch(32)
        trainer.step(step, clip, torch.Generator().manual_seed(step), acts)
    clip, acts = batch(256)
    with torch.no_grad():
        true = float(m.loss(clip, torch.Generator().manual_seed(7), actions=acts)["loss/pred"])
        wrong = float(m.loss(clip, torch.Generator().manual_seed(7),
                             actions=acts[torch.randperm(256, generator=g)])["loss/pred"])
    assert true < 0.8 * wrong, (true, wrong)


def test_short_sequences_attend_by_plain_matmuls_on_cpu():
    # A CPU block over <= 64 tokens attends by plain matmuls and a softmax (faster there;
    # see MATH_ATTENTION_MAX_TOKENS), longer ones and masked ones through torch's layer
    # (MultiheadAttention); both compute the same outputs and gradients.
    from world_models.vit_jepa.vit import MATH_ATTENTION_MAX_TOKENS, transformer

    torch.manual_seed(0)
    blocks = transformer(16, 2, 2, 2.0).train()
    calls: list[int] = []
    for layer in blocks.layers:
        layer.self_attn.register_forward_pre_hook(lambda m, args: calls.append(1))
    limit = MATH_ATTENTION_MAX_TOKENS
    for tokens, through_torch in [(limit, False), (limit + 1, True)]:
        x = torch.randn(3, tokens, 16, requires_grad=True)
        out = blocks(x)
        assert bool(calls) == through_torch
        calls.clear()
        ref_x = x.detach().clone().requires_grad_()
        ref = ref_x
        for layer in blocks.layers:  # torch's own forward of the same layers
            ref = torch.nn.TransformerEncoderLayer.forward(layer, ref)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        out.square().mean().backward()
        ref.square().mean().backward()
        torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-4, atol=1e-6)
    # A padding mask goes to torch's layer, which applies it.
    x = torch.randn(2, 8, 16)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[:, -2:] = True
    masked = blocks.layers[0](x, src_key_padding_mask=pad)
    assert calls and not torch.allclose(masked, blocks.layers[0](x))
