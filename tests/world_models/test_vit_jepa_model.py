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
    assert m.encoder.patch_embed.weight.grad is not None


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
        assert model.export_encoder().patch_embed.weight.grad is not None
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
