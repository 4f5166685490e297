import pytest
import torch

from world_models.diagnostics import (
    CollapseWarning,
    check_collapse,
    collapse_metrics,
    eigen_spectrum,
    rankme,
    std_score,
)
from world_models.vit_jepa import JEPAEncoder, ViT, make_config


def test_rankme_known_rank():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(4000, 32, generator=g)
    low = torch.randn(4000, 4, generator=g) @ torch.randn(4, 32, generator=g)
    assert rankme(full) > 0.9 * 32
    assert 2.5 < rankme(low) <= 4.05


def test_std_score_and_spectrum():
    z = torch.randn(2000, 64)
    _, score = std_score(z)
    assert score == pytest.approx(1.0, abs=0.05)
    eig = eigen_spectrum(z)
    assert eig.shape == (64,) and torch.all(eig[:-1] >= eig[1:])
    m = collapse_metrics(z)
    assert set(m) == {f"collapse/{k}" for k in ("rankme", "rankme_frac", "std", "std_score",
                                                "eig_top1_frac", "eig_n90", "dim")}
    # A full-rank isotropic batch: high rank, no dominant direction, most dims for 90%.
    assert m["collapse/rankme_frac"] > 0.9 and m["collapse/eig_top1_frac"] < 0.05
    assert m["collapse/eig_n90"] > 48 and m["collapse/dim"] == 64


def test_collapse_warning_fires_on_constant_encoder():
    class Constant(torch.nn.Module):
        out_dim = 64

        def forward(self, obs):
            return torch.ones(*obs["image"].shape[:-3], 64)

    imgs = torch.randint(0, 255, (128, 64, 64, 3), dtype=torch.uint8)
    z = Constant()({"image": imgs})
    with pytest.warns(CollapseWarning):
        issues = check_collapse(collapse_metrics(z), d=64, n=128)
    assert any("RankMe" in m for m in issues) and any("std score" in m for m in issues)


def test_quiet_on_random_init_encoder(recwarn):
    torch.manual_seed(0)
    enc = JEPAEncoder(ViT(make_config("tiny", width=64, depth=2, heads=2)))
    imgs = torch.randint(0, 255, (128, 64, 64, 3), dtype=torch.uint8)
    z = enc({"image": imgs})
    assert check_collapse(collapse_metrics(z), d=64, n=128) == []
    assert not [w for w in recwarn if issubclass(w.category, CollapseWarning)]


def test_one_direction_collapse_is_flagged():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 1, generator=g) * torch.randn(1, 64, generator=g)
    z = z + 0.01 * torch.randn(512, 64, generator=g)
    issues = check_collapse(collapse_metrics(z), d=64, n=512, warn=False)
    assert any("one direction" in msg for msg in issues)
