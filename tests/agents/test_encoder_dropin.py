"""A pretrained JEPA encoder drops into DreamerV3 with one flag, frozen or fine-tuned."""

import json

import pytest
import torch
import yaml

from agents.run.cli import run_main
from agents.run.cli_args import build_config, parse_run_args
from agents.run.config import Config, load_config
from world_models.vit_jepa import ViT, make_config, save_encoder

SMOKE = [
    "--set", "replay.size=20000", "--set", "compile=off", "--set", "precision=fp32",
    "--size", "1m", "--envs", "2", "--steps", "120", "--obs", "pixels",
    "--set", "threads=1", "--set", "replay.batch_size=2", "--set", "replay.batch_length=8",
    "--set", "run.prefill=48", "--set", "run.train_ratio=8", "--set", "run.eval_episodes=0",
    "--set", "env.options.time_limit=100", "--set", "env.options.fast_render=true",
]


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("jepa") / "encoder.pt"
    vit = ViT(make_config("tiny", (64, 64, 3), width=32, depth=1, heads=2))
    save_encoder(path, vit, {"note": "random weights for a test"})
    return path


@pytest.mark.parametrize(("mode", "pool"), [("frozen", "mean"), ("finetune", "mean"),
                                          ("frozen", "grid:2")])
def test_dreamer_runs_with_jepa_encoder(tmp_path, encoder_file, mode, pool):
    before = torch.load(encoder_file, weights_only=False)
    logdir = tmp_path / mode
    assert run_main(["--env", "dmc:cartpole-balance", "--logdir", str(logdir), *SMOKE,
                     "--encoder", f"jepa:{encoder_file}", "--encoder-mode", mode,
                     "--set", f"model.encoder.pool={pool}"]) == 0
    status = json.loads((logdir / "status.json").read_text())
    assert status["finished"] and status["updates"] > 0
    state = torch.load(logdir / "checkpoint" / "agent.pt", weights_only=False)["state"]
    enc = {k.split("encoder.image.", 1)[1]: v for k, v in state["agent"]["wm"].items()
           if k.startswith("encoder.image.")}
    assert enc, "the world model should hold the JEPA encoder"
    changed = any(not torch.equal(enc[k], v) for k, v in _match(enc, before["state_dict"]).items())
    assert changed == (mode == "finetune")


def _match(enc: dict, saved: dict) -> dict:
    """Pair the saved ViT tensors with the agent's copies by key suffix."""
    out = {}
    for k, v in saved.items():
        hits = [e for e in enc if e.endswith(k)]
        if torch.is_tensor(v) and hits:
            out[hits[0]] = v
    assert out, "no encoder tensors matched"
    return out


def test_wrong_encoder_shape_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "enc.pt"
    save_encoder(path, ViT(make_config("tiny", (32, 32, 3), width=32, depth=1, heads=2)))
    assert run_main(["--env", "dmc:cartpole-balance", "--logdir", str(tmp_path / "r"), *SMOKE,
                     "--encoder", f"jepa:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "32" in err and "64" in err and "\n" not in err


@pytest.mark.parametrize("flag, kind", [("default", "cnn"), ("cnn", "cnn"),
                                         ("jepa:enc.pt", "jepa:enc.pt")])
def test_encoder_flags_set_model_encoder(flag, kind):
    args = parse_run_args(["--env", "gym:CartPole-v1", "--encoder", flag,
                           "--encoder-mode", "finetune"])
    cfg = build_config(args)
    assert cfg.model.encoder.kind == kind and cfg.model.encoder.mode == "finetune"
    assert "encoder" not in cfg  # no top-level section any more


def test_old_run_config_with_top_level_encoder_section_loads(tmp_path):
    old = load_config("gym:CartPole-v1", size="1m").to_dict()
    for key in ("kind", "mode", "lr_scale"):
        del old["model"]["encoder"][key]
    old["encoder"] = {"name": "jepa:enc.pt", "mode": "finetune", "lr_scale": 0.5}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = Config.from_yaml(path)
    assert "encoder" not in cfg
    assert (cfg.model.encoder.kind, cfg.model.encoder.mode, cfg.model.encoder.lr_scale) == \
        ("jepa:enc.pt", "finetune", 0.5)
    old["encoder"] = {"name": "default", "mode": "frozen", "lr_scale": 0.1}
    path.write_text(yaml.safe_dump(old))
    assert Config.from_yaml(path).model.encoder.kind == "cnn"
