import json

import numpy as np
import pytest
import torch

import benchmarks.probe as probe_module
from benchmarks.probe import (
    embed_all,
    main,
    parse_encoder,
    parse_pool,
    pool_tokens,
    position_targets,
    token_variance_shares,
)
from world_models.vit_jepa import ViT, make_config


def test_position_targets_are_what_a_frame_shows():
    qpos = np.zeros((2, 9), dtype=np.float32)
    qpos[1, 1], qpos[1, 2] = 5.0, 2 * np.pi + 0.5  # rootx moved, torso turned a full turn more
    pos, names = position_targets("dmc:walker-walk", qpos)
    assert names[:3] == ["rootz", "sin_rooty", "cos_rooty"] and "rootx" not in names
    assert pos.shape == (2, 9)
    np.testing.assert_allclose(pos[1, 1:3], [np.sin(0.5), np.cos(0.5)], rtol=1e-5)
    _, names = position_targets("dmc:cartpole-swingup", np.zeros((1, 2)))
    assert names == ["slider", "sin_hinge_1", "cos_hinge_1"]


def test_clip_encoder_sees_the_previous_frame_and_never_crosses_an_episode():
    vit = ViT(make_config("tiny", (16, 16, 3), 2, width=16, depth=1, heads=2, patch=8))
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    episodes = np.array([0, 0, 0, 1, 1])
    z = embed_all(vit, frames, episodes, torch.device("cpu"))
    with torch.no_grad():
        def one(a, b):
            return vit(torch.from_numpy(frames[[a, b]])[None]).mean(1)[0].double().numpy()
        np.testing.assert_allclose(z[2], one(1, 2), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z[3], one(3, 3), rtol=1e-5, atol=1e-6)  # episode start
        np.testing.assert_allclose(z[0], one(0, 0), rtol=1e-5, atol=1e-6)


def test_grid_pooling_keeps_where_a_feature_is_and_one_cell_is_the_mean():
    grid = (1, 4, 4)
    tokens = torch.zeros(2, 16, 3)
    tokens[0, 0, 0] = 1.0  # frame 0: a feature in the top-left patch
    tokens[1, 15, 0] = 1.0  # frame 1: the same feature in the bottom-right patch
    mean = pool_tokens(tokens, grid, 0)
    torch.testing.assert_close(mean[0], mean[1])  # the mean cannot tell them apart
    cells = pool_tokens(tokens, grid, 2).reshape(2, 3, 2, 2)
    assert cells[0, 0, 0, 0] == 0.25 and cells[0, 0, 1, 1] == 0
    assert cells[1, 0, 1, 1] == 0.25 and cells[1, 0, 0, 0] == 0
    torch.testing.assert_close(pool_tokens(tokens, grid, 1), mean)
    clip = torch.randn(2, 2 * 16, 3)  # two time steps: time is averaged first
    torch.testing.assert_close(pool_tokens(clip, (2, 4, 4), 1), clip.mean(1))
    assert parse_pool("mean") == 0 and parse_pool("grid:4") == 4
    for bad in ("max", "grid:0", "grid:x", "grid"):
        with pytest.raises(ValueError, match="allowed: mean or grid:G"):
            parse_pool(bad)


def test_pool_flag_adds_rows_for_the_same_encoders_and_rejects_bad_values(tmp_path, capsys):
    summary = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                    "--encoders", "random,jepa", "--pool", "mean,grid:2", "--fast-render",
                    "--threads", "1", "--out", str(tmp_path)])
    assert set(summary) == {"random", "random grid:2", "jepa", "jepa grid:2"}
    assert summary["jepa grid:2"]["steps"] == summary["jepa"]["steps"] == 2
    assert "| jepa grid:2 |" in (tmp_path / "probe.md").read_text()
    with pytest.raises(SystemExit, match="--pool: pool 'max' unknown"):
        main(["--pool", "max"])


def test_tiny_probe_run_every_encoder_two_seeds_equal_cpu(tmp_path, monkeypatch):
    # Measured CPU-seconds per step, made exact: JEPA's 2 steps buy MAE 4, the others 1.
    per_step = {"jepa": 1.0, "mae": 0.5}
    monkeypatch.setattr(probe_module, "cpu_per_step",
                        lambda name, *a, **k: per_step.get(name, 2.0))
    trained, real_train = [], probe_module.train_encoder

    def train(name, *args, **kwargs):  # JEPA's measured CPU-seconds, made exact too
        vit, cost = real_train(name, *args, **kwargs)
        trained.append(name)
        return vit, {**cost, "cpu_s": cost["steps"] * per_step.get(name, 2.0)}

    monkeypatch.setattr(probe_module, "train_encoder", train)
    summary = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                    "--seeds", "0,1", "--budget", "equal-cpu", "--fast-render",
                    "--threads", "1", "--out", str(tmp_path)])
    assert set(summary) == {"random", "autoencoder", "mae", "jepa", "jepa-tubelet"}
    assert summary["random"]["steps"] == 0 and summary["random"]["cpu_s"] == 0
    steps = {n: summary[n]["steps"] for n in ("jepa", "mae", "autoencoder", "jepa-tubelet")}
    assert steps == {"jepa": 2, "mae": 4, "autoencoder": 1, "jepa-tubelet": 1}
    assert trained[0] == trained[4] == "jepa"  # it trains first: its CPU-s are the budget
    # A kept JEPA row's CPU-seconds set the budget of encoders added later.
    per_step["jepa"] = 3.0
    more = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                 "--seeds", "0", "--budget", "equal-cpu", "--fast-render", "--threads", "1",
                 "--encoders", "jepa,mae,autoencoder", "--out", str(tmp_path / "more")])
    assert more["mae"]["steps"] == 12 and more["autoencoder"]["steps"] == 3
    trained.clear()
    kept = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                 "--seeds", "0", "--budget", "equal-cpu", "--fast-render", "--threads", "1",
                 "--encoders", "jepa,jepa-tubelet", "--out", str(tmp_path / "more")])
    assert trained == ["jepa-tubelet"] and kept["jepa-tubelet"]["steps"] == 3
    assert all(s["seeds"] == 2 for s in summary.values())
    assert all(summary[n]["cpu_s"] > 0 for n in steps)
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert all(np.isfinite(r["vel_r2"]) for rows in saved["per_seed"].values() for r in rows)
    assert "| mae |" in (tmp_path / "probe.md").read_text()


def test_rerun_keeps_finished_rows_and_merge_joins_seeds(tmp_path, capsys):
    common = ["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
              "--fast-render", "--threads", "1", "--encoders", "random,jepa"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    main(common + ["--seeds", "0", "--out", str(a)])
    first = json.loads((a / "probe.json").read_text())["per_seed"]["jepa"]
    # More seeds into the same directory: seed 0 is kept, not retrained.
    summary = main(common + ["--seeds", "0,1", "--out", str(a)])
    assert "jepa kept from" in capsys.readouterr().out
    again = json.loads((a / "probe.json").read_text())["per_seed"]["jepa"]
    assert [r["seed"] for r in again] == [0, 1] and again[0] == first[0]
    assert summary["jepa"]["seeds"] == 2
    main(common + ["--seeds", "2", "--out", str(b)])
    main(common + ["--seeds", "0", "--encoders", "mae", "--out", str(a)])  # config: seeds 0
    merged = main(["--merge", f"{a},{b}", "--out", str(c)])
    assert merged["jepa"]["seeds"] == 3 and "seeds 0,1,2" in (c / "probe.md").read_text()
    with pytest.raises(SystemExit, match="'random' seed 0 is in more than one"):
        main(["--merge", f"{a},{a}", "--out", str(c)])
    with pytest.raises(SystemExit, match=r"other settings \(--frames 120 vs 200\)"):
        main([*common[:1], "200", *common[2:], "--out", str(a)])
    with pytest.raises(SystemExit, match="--merge needs --out"):
        main(["--merge", str(a)])


def test_jepa_options_in_an_encoder_name():
    assert parse_encoder("mae") == ("mae", 1, {})
    assert parse_encoder("jepa:horizon=2:actions:token_weight=change", 6) == (
        "jepa", 1, {"horizon": 2, "action_dim": 6, "token_weight": "change"})
    with pytest.raises(ValueError, match="option 'speed=3'; allowed: actions, horizon=..."):
        parse_encoder("jepa:speed=3")
    with pytest.raises(ValueError, match="horizon='two' is not a number"):
        parse_encoder("jepa:horizon=two")
    with pytest.raises(ValueError, match="or jepa:OPTION"):
        parse_encoder("vjepa")


def test_regulariser_and_ema_options_reach_the_jepa_config():
    name = ("jepa:reg=none:reg_weight=0.2:ema_start=0.99:ema_end=0.999:ema_stretch=1.25:"
            "pred_depth=2")
    assert parse_encoder(name) == ("jepa", 1, {"reg": "none", "reg_weight": 0.2,
                                               "ema_start": 0.99, "ema_end": 0.999,
                                               "ema_stretch": 1.25, "pred_depth": 2})
    data = {"frames": np.zeros((4, 64, 64, 3), np.uint8), "actions": np.zeros((4, 2))}
    cfg = probe_module.build_encoder_model(name, data).cfg
    assert (cfg.reg, cfg.reg_weight, cfg.ema_start, cfg.ema_end, cfg.ema_stretch,
            cfg.pred_depth) == ("none", 0.2, 0.99, 0.999, 1.25, 2)
    with pytest.raises(ValueError, match="regulariser 'l2'; allowed: sigreg, vicreg, none"):
        probe_module.build_encoder_model("jepa:reg=l2", data)


def test_mask_options_set_the_block_geometry(tmp_path):
    assert parse_encoder("jepa:targets=2:target_scale=0.3-0.4")[2] == {
        "targets": 2, "target_scale": (0.3, 0.4)}
    data = {"frames": np.zeros((4, 64, 64, 3), np.uint8), "actions": np.zeros((4, 2))}
    model = probe_module.build_encoder_model("jepa:targets=2:target_scale=0.3", data)
    assert (model.mask_cfg.num_targets, model.mask_cfg.target_scale) == (2, (0.3, 0.3))
    _, tgt = probe_module.sample_masks(3, model.vit_cfg.grid, model.mask_cfg, torch.Generator())
    assert tgt.shape[:2] == (3, 2) and 16 <= tgt.shape[2] <= 24  # ~0.3 of the 8 x 8 grid
    with pytest.raises(SystemExit, match="target scale 0.5-2.0; need 0 < low <= high <= 1"):
        main(["--encoders", "jepa:target_scale=0.5-2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="left no context token; use fewer or smaller"):
        main(["--encoders", "jepa:target_scale=1", "--out", str(tmp_path)])


def test_temporal_jepa_rows_at_patch_16(tmp_path):
    summary = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                    "--encoders", "random,jepa,jepa:horizon=2:actions:context=full",
                    "--patch", "16", "--budget", "equal-cpu", "--fast-render", "--threads", "1",
                    "--out", str(tmp_path)])
    assert set(summary) == {"random", "jepa", "jepa:horizon=2:actions:context=full"}
    assert all(np.isfinite(s["pos_r2"]) for s in summary.values())
    assert "patch 16" in (tmp_path / "probe.md").read_text()
    for bad, message in ((["--encoders", "jepa:context=full"], "need a horizon > 0"),
                         (["--patch", "6"], "--patch: image 64x64 is not divisible by patch 6")):
        with pytest.raises(SystemExit, match=message):
            main(bad)


def test_standardised_inputs_for_every_encoder_and_old_files_read_as_center(tmp_path, capsys):
    assert parse_encoder("jepa:shared_masks=1")[2] == {"shared_masks": True}
    common = ["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
              "--fast-render", "--threads", "1", "--out", str(tmp_path)]
    summary = main([*common, "--encoders", "random,jepa:shared_masks=1", "--input-norm", "pixel"])
    assert all(np.isfinite(s["pos_r2"]) for s in summary.values())
    assert "inputs standardised per pixel" in (tmp_path / "probe.md").read_text()
    with pytest.raises(SystemExit, match="--input-norm 'pixel' vs 'center'"):
        main([*common, "--encoders", "random"])
    saved = json.loads((tmp_path / "probe.json").read_text())
    del saved["config"]["input_norm"]  # a file from before the flag: its inputs were centred
    (tmp_path / "probe.json").write_text(json.dumps(saved))
    main([*common, "--encoders", "random"])
    with pytest.raises(SystemExit):
        main(["--input-norm", "imagenet"])
    assert "--input-norm: invalid choice: 'imagenet'" in capsys.readouterr().err


def test_token_variance_splits_into_position_frame_and_local():
    from types import SimpleNamespace

    class Tokens(torch.nn.Module):
        """Tokens [B, 4, 8]: a fixed pattern per position, plus `mix` x the frame's first pixel
        on every token (frame-wide), plus `local` x each pixel's own value at one position."""

        def __init__(self, frame: float, local: float) -> None:
            super().__init__()
            self.cfg = SimpleNamespace(frames_per_clip=1)
            self.pattern = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
            self.frame, self.local = frame, local

        def forward(self, clip):
            x = clip[:, 0, :4, 0, 0].float() / 255  # [B, 4]
            out = self.pattern.expand(len(clip), -1, -1).clone()
            out = out + self.frame * x[:, :1, None] * torch.linspace(-1, 1, 8)
            return out + self.local * x[:, :, None] * torch.linspace(1, -1, 8)

    frames = np.random.default_rng(0).integers(0, 255, (64, 8, 8, 3), dtype=np.uint8)
    eps, cpu = np.zeros(64, dtype=np.int64), torch.device("cpu")
    only_pos = token_variance_shares(Tokens(0.0, 0.0), frames, eps, cpu)
    assert only_pos["positional"] == pytest.approx(1.0)
    mixed = token_variance_shares(Tokens(3.0, 3.0), frames, eps, cpu)
    assert sum(mixed.values()) == pytest.approx(1.0)
    assert mixed["frame"] > 0.05 and mixed["local"] > 0.05
    vit = ViT(make_config("tiny", frames_per_clip=2, width=32, depth=1, heads=2))
    shares = token_variance_shares(vit, frames.repeat(8, 1).repeat(8, 2), eps, cpu)
    assert sum(shares.values()) == pytest.approx(1.0) and min(shares.values()) >= 0
