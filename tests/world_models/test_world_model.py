"""One world model, a pluggable objective: the scale check, the objective switch, open-loop
features and the encoder factory's one-line errors."""

import pytest
import torch
import torch.nn.functional as F

from world_models.encoders import MultiDecoder, MultiEncoder, make_encoder
from world_models.vit_jepa import ViT, make_config, save_encoder
from world_models.world_model import WorldModel

torch.set_num_threads(1)

SHAPES = {"vector": (6,)}
RSSM = dict(deter=32, hidden=16, stoch=4, classes=3, blocks=4)
SMALL = dict(layers=1, units=16)
SCALES = dict(rec=1.0, rew=1.0, con=1.0, dyn=1.0, rep=0.1)
LATENT = dict(ema=0.99, stop_grad=True, horizon=2, decay=0.5,
              predictor=dict(layers=1, units=0), vicreg=False, inverse=False,
              probe_decoder=False, probe_stride=2)
LATENT_SCALES = dict(jepa_post=1.0, jepa_open=1.0, vicreg=0.04, inverse=1.0, probe_rec=1.0)


def make_wm(objective="reconstruction", scales=None, **latent):
    scales = {**SCALES, **LATENT_SCALES} if scales is None else scales
    settings = {**LATENT, **latent} if objective == "latent" else None
    return WorldModel(SHAPES, 2, RSSM, SMALL, SMALL, SMALL, SMALL, scales, objective=objective,
                      settings=settings)


def batch(B=2, T=6):
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"vector": torch.randn(B, T, 6),
            "action": F.one_hot(torch.randint(0, 2, (B, T)), 2).float(),
            "reward": torch.randn(B, T), "is_first": is_first,
            "is_terminal": torch.zeros(B, T, dtype=torch.bool)}


def test_scales_are_expanded_per_term():
    wm = make_wm()
    assert wm.scales == {"dyn": 1.0, "rep": 0.1, "rew": 1.0, "con": 1.0, "rec_vector": 1.0}
    wm = make_wm("latent", probe_decoder=True, vicreg=True)
    assert set(wm.scales) == {"dyn", "rep", "rew", "con", "jepa_post", "jepa_open", "vicreg",
                              "probe_rec_vector"}


def test_missing_scale_raises_naming_the_term():
    with pytest.raises(ValueError, match="rec_vector.*add \\['rec'\\]"):
        make_wm(scales={k: v for k, v in SCALES.items() if k != "rec"})
    with pytest.raises(ValueError, match="jepa_open"):
        make_wm("latent", scales={**SCALES, "jepa_post": 1.0})


def test_extra_scale_raises_naming_it():
    with pytest.raises(ValueError, match="'bogus'.*name no loss term"):
        make_wm(scales={**SCALES, "bogus": 1.0})


def test_loss_checks_every_term_against_the_scales():
    torch.manual_seed(0)
    wm = make_wm()
    losses, _, _ = wm.loss(batch())
    assert set(losses) == set(wm.scales)
    wm.scales["extra"] = 1.0
    with pytest.raises(ValueError, match="scales without a term \\['extra'\\]"):
        wm.loss(batch())
    del wm.scales["extra"], wm.scales["rew"]
    with pytest.raises(ValueError, match="terms without a scale \\['rew'\\]"):
        wm.loss(batch())


def test_objective_switch_builds_the_decoder_only_when_needed():
    rec = make_wm()
    assert isinstance(rec.decoder, MultiDecoder)
    latent = make_wm("latent")
    assert latent.decoder is None
    assert not any("decoder" in k for k in latent.state_dict())
    assert isinstance(make_wm("latent", probe_decoder=True).decoder, MultiDecoder)
    with pytest.raises(ValueError, match="allowed: reconstruction, latent"):
        make_wm("barlow")


def test_latent_ema_target_follows_after_step():
    torch.manual_seed(0)
    wm = make_wm("latent")
    with torch.no_grad():
        for p in wm.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in wm.objective.target_encoder.parameters()]
    wm.after_step()
    after = list(wm.objective.target_encoder.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("objective", ["reconstruction", "latent"])
def test_open_loop_features_and_report(objective):
    torch.manual_seed(0)
    wm = make_wm(objective)
    data = batch(T=8)
    feat = wm.open_loop(data, context=3)
    assert feat.shape == (2, 8, wm.rssm.feat_dim)
    out = wm.objective.report(data, feat, 3)
    keys = (["openl/mse_vector_observed", "openl/mse_vector_imagined"]
            if objective == "reconstruction" else ["openl/jepa_observed", "openl/jepa_imagined"])
    assert set(out) == set(keys) and all(torch.isfinite(torch.tensor(out[k])) for k in keys)


def test_encoder_factory():
    assert isinstance(make_encoder(SHAPES, **SMALL), MultiEncoder)
    assert make_encoder(SHAPES, "cnn", "finetune", **SMALL).pretrained_parameters() == []


@pytest.mark.parametrize("kind, mode, match", [
    ("resnet", "frozen", "encoder kind 'resnet' unknown; allowed: cnn, jepa:PATH"),
    ("jepa:", "frozen", "encoder kind 'jepa:' unknown"),
    ("cnn", "thawed", "encoder mode 'thawed' unknown; allowed: frozen, finetune"),
    ("jepa:enc.pt", "frozen", "needs image observations.*--obs pixels"),
    ("hf:facebook/vjepa2", "finetune", "needs image observations"),
])
def test_encoder_factory_one_line_errors(kind, mode, match):
    with pytest.raises(ValueError, match=match) as err:
        make_encoder(SHAPES, kind, mode, **SMALL)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("mode", ["frozen", "finetune"])
def test_pretrained_encoder_lists_its_finetuned_parameters(tmp_path, mode):
    path = tmp_path / "encoder.pt"
    save_encoder(path, ViT(make_config("tiny", (16, 16, 3), width=16, depth=1, heads=2)))
    shapes = {"image": (16, 16, 3), "vector": (6,)}
    enc = make_encoder(shapes, f"jepa:{path}", mode, **SMALL)
    tuned = enc.pretrained_parameters()
    assert (len(tuned) > 0) == (mode == "finetune")
    assert {id(p) for p in tuned} <= {id(p) for p in enc.image.parameters()}
    obs = {"image": torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8),
           "vector": torch.randn(2, 3, 6)}
    assert enc(obs).shape == (2, 3, enc.out_dim) and enc.out_dim == 16 + 16
