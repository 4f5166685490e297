import pytest
import torch

from world_models.encoders import make_encoder
from world_models.vit_jepa import (
    EncoderSpecError,
    ViT,
    load_encoder,
    make_config,
    pool_tokens,
    read_encoder_file,
    save_encoder,
)


@pytest.fixture
def encoder_file(tmp_path):
    torch.manual_seed(0)
    vit = ViT(make_config("tiny", width=32, depth=1, heads=2))
    path = tmp_path / "encoder.pt"
    save_encoder(path, vit, {"frames": 10, "steps": 3, "env": "test"})
    return path, vit


def test_round_trip_same_outputs(encoder_file):
    path, vit = encoder_file
    enc = load_encoder(f"jepa:{path}", (64, 64, 3))
    assert enc.out_dim == 32
    x = torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8)
    z = enc({"image": x})
    assert z.shape == (2, 5, 32)
    with torch.no_grad():
        ref = vit(x.reshape(10, 1, 64, 64, 3)).mean(1).reshape(2, 5, 32)
    torch.testing.assert_close(z, ref)
    assert not any(p.requires_grad for p in enc.parameters())
    _, meta = read_encoder_file(path)
    assert meta["train"]["steps"] == 3 and meta["patch"] == 8 and meta["embed_dim"] == 32


def test_grid_pool_keeps_image_regions_and_sizes_the_feature(encoder_file):
    path, vit = encoder_file
    enc = load_encoder(f"jepa:{path}", (64, 64, 3), pool="grid:2")
    assert enc.out_dim == 4 * 32
    x = torch.randint(0, 255, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        ref = pool_tokens(vit(x[:, None]), vit.cfg.grid, 2)
    torch.testing.assert_close(enc({"image": x}), ref)
    # Through the agents' factory: the image feature plus the vector MLP's.
    both = make_encoder({"image": (64, 64, 3), "vector": (5,)}, kind=f"jepa:{path}",
                        pool="grid:2", layers=1, units=16, symlog=True)
    assert both.out_dim == 4 * 32 + 16
    assert both({"image": x, "vector": torch.zeros(3, 5)}).shape == (3, 4 * 32 + 16)


def test_bad_pools_are_one_line_errors(encoder_file):
    path, _ = encoder_file
    with pytest.raises(EncoderSpecError, match="allowed: mean or grid:G"):
        load_encoder(f"jepa:{path}", (64, 64, 3), pool="max")
    with pytest.raises(EncoderSpecError, match="more cells per side than .* 8x8 patch grid"):
        load_encoder(f"jepa:{path}", (64, 64, 3), pool="grid:9")
    with pytest.raises(EncoderSpecError, match="is for jepa: encoders"):
        load_encoder("hf:some/model", (64, 64, 3), pool="grid:2")
    with pytest.raises(ValueError, match="is for pretrained encoders"):
        make_encoder({"image": (64, 64, 3)}, kind="cnn", pool="grid:2")


def test_unfrozen_encoder_gets_gradients(encoder_file):
    path, _ = encoder_file
    enc = load_encoder(f"jepa:{path}", (64, 64, 3), frozen=False)
    enc({"image": torch.zeros(2, 64, 64, 3, dtype=torch.uint8)}).sum().backward()
    assert enc.vit.patch_embed.weight.grad.abs().sum() > 0


def test_wrong_shape_and_format_are_clean_errors(encoder_file, tmp_path):
    path, _ = encoder_file
    with pytest.raises(EncoderSpecError, match=r"\(64, 64, 3\).*\(84, 84, 3\)"):
        load_encoder(f"jepa:{path}", (84, 84, 3))
    enc = load_encoder(f"jepa:{path}", (64, 64, 3))
    with pytest.raises(EncoderSpecError, match=r"\(64, 64, 1\)"):
        enc({"image": torch.zeros(2, 64, 64, 1, dtype=torch.uint8)})
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(EncoderSpecError, match="format"):
        load_encoder(f"jepa:{bad}", (64, 64, 3))
    with pytest.raises(EncoderSpecError, match="allowed"):
        load_encoder("cnn:foo", (64, 64, 3))


def test_vjepa2_adapter_on_tiny_random_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VJEPA2Config(
        crop_size=64, frames_per_clip=2, tubelet_size=2, patch_size=16, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=2, pred_hidden_size=32,
        pred_num_hidden_layers=1, pred_num_attention_heads=2,
    )
    torch.manual_seed(0)
    transformers.VJEPA2Model(cfg).save_pretrained(tmp_path / "vjepa2")
    enc = load_encoder(f"hf:{tmp_path / 'vjepa2'}", (32, 32, 3))
    assert enc.out_dim == 64
    x = torch.randint(0, 255, (2, 3, 32, 32, 3), dtype=torch.uint8)
    z = enc({"image": x})
    assert z.shape == (2, 3, 64) and torch.isfinite(z).all()
    assert not any(p.requires_grad for p in enc.parameters())
    with pytest.raises(EncoderSpecError, match="3"):
        load_encoder(f"hf:{tmp_path / 'vjepa2'}", (32, 32, 1))
    with pytest.raises(EncoderSpecError, match="cannot load"):
        load_encoder(f"hf:{tmp_path / 'missing'}", (32, 32, 3))


def test_vjepa2_finetune_trains_through_the_encoder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from world_models.encoders import make_encoder

    cfg = transformers.VJEPA2Config(
        crop_size=32, frames_per_clip=2, tubelet_size=2, patch_size=16, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, pred_hidden_size=16,
        pred_num_hidden_layers=1, pred_num_attention_heads=2,
    )
    torch.manual_seed(0)
    transformers.VJEPA2Model(cfg).save_pretrained(tmp_path / "vjepa2")
    enc = make_encoder({"image": (32, 32, 3)}, f"hf:{tmp_path / 'vjepa2'}", "finetune")
    tuned = enc.pretrained_parameters()
    assert tuned and enc.image.training
    x = torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)
    enc({"image": x}).pow(2).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned)
    frozen = make_encoder({"image": (32, 32, 3)}, f"hf:{tmp_path / 'vjepa2'}", "frozen")
    assert frozen.pretrained_parameters() == []


@pytest.mark.parametrize("norm", ["channel", "pixel"])
def test_standardised_inputs_fit_the_frames_and_travel_with_the_file(norm, tmp_path):
    """`input_norm` channel / pixel scales each input by the pretraining frames' statistics,
    kept in the encoder file; a file from before the setting reads as `center`."""
    from world_models.vit_jepa import ConfigError, ViTConfig, fit_input_stats

    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8, generator=gen)
    frames[:, :8] = 7  # a band of pixels no frame changes
    vit = ViT(make_config("tiny", width=32, depth=1, heads=2, input_norm=norm))
    fit_input_stats(vit, frames.numpy())
    x = frames.double() / 255
    dims = (0, 1, 2) if norm == "channel" else (0,)
    torch.testing.assert_close(vit.in_mean.double(), x.mean(dims), rtol=0, atol=1e-6)
    if norm == "pixel":
        assert torch.all(vit.in_std[:8] == 0.05)  # the floor, not 1 / 0
    # The patch embedding sees standardised pixels: the frames' mean maps to its bias alone.
    mean_frame = (vit.in_mean * 255).expand(1, 1, 64, 64, 3)
    tokens = vit.tokens(mean_frame) - vit.pos
    torch.testing.assert_close(tokens, vit.patch_embed.bias.expand_as(tokens), rtol=0,
                               atol=1e-4)
    path = tmp_path / "encoder.pt"
    save_encoder(path, vit)
    back, meta = read_encoder_file(path)
    assert meta["vit"]["input_norm"] == norm
    torch.testing.assert_close(back.in_std, vit.in_std)
    old = {k: v for k, v in meta["vit"].items() if k != "input_norm"}
    assert ViTConfig.from_dict(old).input_norm == "center"
    assert not hasattr(ViT(ViTConfig.from_dict(old)), "in_mean")
    with pytest.raises(ConfigError, match="allowed: center, channel, pixel"):
        make_config("tiny", input_norm="imagenet")
