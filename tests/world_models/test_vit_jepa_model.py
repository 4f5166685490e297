import pytest
import torch

from world_models.vit_jepa import JEPA, JEPAConfig, Predictor, make_config, vicreg_terms
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


@pytest.mark.parametrize("fpc", [1, 2])
def test_loss_backward_only_reaches_online_branch(fpc):
    m = _tiny(fpc)
    m.cfg = JEPAConfig(pred_depth=1, pred_heads=2, vicreg_var=1.0, vicreg_cov=0.04)
    x = torch.randint(0, 255, (4, fpc, 64, 64, 3), dtype=torch.uint8)
    out = m.loss(x, torch.Generator().manual_seed(0))
    assert {"loss/pred", "loss/vicreg_var", "loss/vicreg_cov", "loss/total"} <= set(out)
    out["loss/total"].backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert m.encoder.patch_embed.weight.grad is not None


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
    with pytest.raises(ConfigError, match="preset"):
        make_config("huge")
    with pytest.raises(ConfigError, match="frames_per_clip"):
        make_config("tiny", frames_per_clip=3)
