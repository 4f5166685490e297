import pytest
import torch

from agents.pretrain.pretrainer import (
    DEFAULT_REG_WEIGHT,
    CollapseGuard,
    PretrainConfigError,
    Pretrainer,
    build_objective,
)
from world_models.vit_jepa import make_config

HEALTHY = {"collapse/rankme": 40.0, "collapse/std_score": 0.9, "collapse/eig_top1_frac": 0.3}
COLLAPSED = {"collapse/rankme": 3.0, "collapse/std_score": 0.9, "collapse/eig_top1_frac": 0.97}


def _trainer(objective="jepa", reg="sigreg"):
    cfg = make_config("tiny", frames_per_clip=1, width=32, depth=1, heads=2)
    return Pretrainer(build_objective(objective, cfg, reg), steps=100, lr=1e-3)


def test_schedules_follow_ijepa():
    t = _trainer()
    assert t.lr_at(0) == pytest.approx(2e-4)  # warm-up from 0.2 x peak
    assert t.lr_at(10) == pytest.approx(1e-3)  # peak after 10% of the steps
    assert t.lr_at(100) == pytest.approx(1e-6)  # cosine to 0.001 x peak
    assert t.wd_at(0) == pytest.approx(0.04) and t.wd_at(100) == pytest.approx(0.4)
    assert t.wd_at(50) == pytest.approx(0.22)
    x = torch.randint(0, 255, (4, 1, 64, 64, 3), dtype=torch.uint8)
    out = t.step(50, x, torch.Generator().manual_seed(0))
    assert out["train/wd"] == pytest.approx(0.22) and out["train/ema"] == pytest.approx(0.998)
    assert t.opt.param_groups[0]["weight_decay"] == pytest.approx(0.22)
    assert t.opt.param_groups[1]["weight_decay"] == 0.0  # norms and biases


def _params(t):
    return [p.detach().clone() for p in t.model.parameters()]


def test_guard_rolls_back_to_best_and_strengthens_the_regulariser_then_stops():
    t = _trainer()
    guard = CollapseGuard("adapt", max_adapts=2)
    assert guard.observe(0, HEALTHY, 128, 400, t)[0] == "ok"
    with torch.no_grad():
        for p in t.model.parameters():
            p.add_(1.0)
    assert guard.observe(100, {**HEALTHY, "collapse/rankme": 30.0}, 128, 400, t)[0] == "ok"
    best = _params(t)
    assert guard.best["step"] == 100  # a trained healthy state beats the initial one
    weight = t.reg_weight
    for n in (1, 2):
        with torch.no_grad():
            for p in t.model.parameters():
                p.add_(1.0)
        what, found = guard.observe(100 + n * 100, COLLAPSED, 128, 400, t)
        assert what == "adapted" and any("RankMe" in f for f in found)
        for a, b in zip(_params(t), best):
            torch.testing.assert_close(a, b)
        assert t.reg_weight == pytest.approx(weight * 4**n)
    assert guard.observe(400, COLLAPSED, 128, 400, t)[0] == "stopped"
    assert guard.adapts == 2


def test_guard_adds_sigreg_to_a_jepa_without_regulariser_and_resumes_that_choice():
    t = _trainer(reg="none")
    assert t.reg_weight == 0.0
    guard = CollapseGuard("adapt")
    guard.observe(0, HEALTHY, 128, 400, t)
    assert guard.observe(100, COLLAPSED, 128, 400, t)[0] == "adapted"
    assert t.model.cfg.reg == "sigreg" and t.reg_weight == DEFAULT_REG_WEIGHT["sigreg"]
    state = guard.state_dict(t)
    fresh, again = _trainer(reg="none"), CollapseGuard("adapt")
    again.load_state_dict(state, fresh)
    assert fresh.model.cfg.reg == "sigreg" and again.adapts == 1


def test_guard_rank_floor_and_warn_mode():
    t = _trainer("mae")
    guard = CollapseGuard("warn", min_rank_frac=0.25)
    guard.observe(0, HEALTHY, 128, 400, t)
    low = {**HEALTHY, "collapse/rankme": 20.0}  # healthy for check_collapse, < 25% of 128
    with pytest.warns(UserWarning):
        assert guard.observe(100, {**low, **COLLAPSED}, 128, 400, t)[0] == "warned"
    assert guard.findings(low, 128, 400) == ["RankMe 20.0 < 25% of 128"]


def test_bad_names_are_clear():
    cfg = make_config("tiny")
    with pytest.raises(PretrainConfigError, match="allowed: jepa, mae, autoencoder"):
        build_objective("simclr", cfg)
    with pytest.raises(PretrainConfigError, match="allowed: sigreg, vicreg, none"):
        build_objective("jepa", cfg, reg="barlow")
    with pytest.raises(PretrainConfigError, match="allowed: adapt, stop, warn"):
        CollapseGuard("ignore")


def _scene(n: int, seed: int) -> torch.Tensor:
    """Frames of one fixed scene (a shaded floor) with a small coloured square moving on it:
    like a DMC task, most pixels are the same in every frame."""
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(60, 160, 64).view(64, 1, 1).expand(64, 64, 3).clone()
    frames = base.repeat(n, 1, 1, 1)
    for i in range(n):
        top, left = torch.randint(0, 52, (2,), generator=g).tolist()
        frames[i, top : top + 12, left : left + 12] = torch.rand(3, generator=g) * 255
    return frames.to(torch.uint8).unsqueeze(1)  # [n, 1, 64, 64, 3]


def test_default_jepa_recipe_keeps_its_rank_on_a_mostly_static_scene():
    """A learning test of the default objective (standardised SIGReg, EMA, I-JEPA schedules):
    after 80 steps the target encoder's held-out RankMe is above its initial value and above
    25% of the width, and the prediction loss has fallen."""
    from world_models.diagnostics import collapse_metrics

    torch.manual_seed(0)
    cfg = make_config("tiny", frames_per_clip=1, width=32, depth=1, heads=2)
    model = build_objective("jepa", cfg)
    trainer = Pretrainer(model, steps=80, lr=1e-3)
    train, held = _scene(256, 0), _scene(128, 1)

    def rank() -> float:
        with torch.no_grad():
            return collapse_metrics(model.export_encoder()(held).mean(1))["collapse/rankme"]

    start, losses = rank(), []
    for step in range(80):
        gen = torch.Generator().manual_seed(step)
        idx = torch.randint(0, len(train), (32,), generator=gen)
        losses.append(trainer.step(step, train[idx], gen)["loss/pred"])
    end = rank()
    assert end > start and end > 0.25 * 32, (start, end)
    assert sum(losses[-10:]) < sum(losses[:10])
