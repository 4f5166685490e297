"""`--agent jepa`: CLI smoke runs (gym, DMC pixels with distractors), resume, eval, learning."""

import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from learning_envs import MatchCueEnv

from agents.base import make_agent
from agents.dreamerv3 import JEPAAgent
from agents.run.cli import eval_main, run_main
from agents.run.cli_args import build_config, parse_run_args
from agents.run.config import load_config
from agents.run.train import train

torch.set_num_threads(1)

SMOKE = [
    "--set", "replay.size=20000", "--set", "compile=off", "--set", "precision=fp32",
    "--agent", "jepa", "--size", "1m", "--envs", "2", "--set", "threads=1",
    "--set", "replay.batch_size=4", "--set", "replay.batch_length=16",
    "--set", "run.prefill=64", "--set", "run.train_ratio=16",
    "--set", "run.log_every=0", "--set", "run.eval_every=1000000",
    "--set", "run.report_every=100", "--set", "run.eval_episodes=1",
    "--set", "model.diag_every=2",
]


def run(argv, report=None):
    """`dreamer-run ARGV` in-process; returns the run directory."""
    return train(build_config(parse_run_args(argv)), report=report)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_registered_and_dreamer_config_untouched():
    cfg = load_config("gym:CartPole-v1", size="1m", agent="jepa", sets=["threads=1"])
    space = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (4,), np.float32)})
    agent = make_agent("jepa", space, gym.spaces.Discrete(2), cfg)
    assert isinstance(agent, JEPAAgent) and agent.wm.decoder is None
    assert cfg.model.objective == "latent"  # the jepa name is a preset of this key
    dreamer_cfg = load_config("gym:CartPole-v1", size="1m", sets=["threads=1"])
    dreamer = make_agent("dreamerv3", space, gym.spaces.Discrete(2), dreamer_cfg)
    assert type(dreamer).__name__ == "DreamerV3Agent" and dreamer.wm.decoder is not None
    assert not hasattr(dreamer.wm.objective, "target_encoder")


def test_cartpole_smoke_interrupt_resume_and_eval(tmp_path, capsys):
    logdir = tmp_path / "run"
    argv = ["--env", "gym:CartPole-v1", "--steps", "300", "--logdir", str(logdir), *SMOKE]
    stopped = []

    def interrupt(metrics):
        if metrics.get("perf/updates", 0) > 0 and not stopped:
            stopped.append(metrics["step"])
            os.kill(os.getpid(), signal.SIGINT)

    run(argv, report=interrupt)
    first = json.loads((logdir / "status.json").read_text())
    assert stopped and not first["finished"]
    run(argv)
    final = json.loads((logdir / "status.json").read_text())
    assert final["finished"] and final["updates"] > first["updates"]
    metrics = _lines(logdir / "metrics.jsonl")
    for key in ("loss/jepa_post", "loss/jepa_open", "loss/vicreg", "loss/inverse",
                "jepa/pred_1step", "jepa/copy_last", "collapse/embed_rankme",
                "collapse/feat_rankme"):
        assert any(key in m and np.isfinite(m[key]) for m in metrics), key
    assert not any("loss/rec_vector" in m for m in metrics)
    assert any("openl/jepa_imagined" in m for m in metrics)
    capsys.readouterr()
    assert eval_main([str(logdir), "--episodes", "1"]) == 0
    assert "mean return" in capsys.readouterr().out


def test_dmc_pixels_with_distractor_and_probe_video(tmp_path):
    logdir = tmp_path / "run"
    assert run_main(["--env", "dmc:cartpole-balance", "--obs", "pixels", "--steps", "160",
                     "--logdir", str(logdir), *SMOKE,
                     "--set", "env.options.time_limit=100",
                     "--set", "env.options.fast_render=true",
                     "--set", "env.options.distractor=shapes",
                     "--set", "jepa.probe_decoder=true"]) == 0
    status = json.loads((logdir / "status.json").read_text())
    assert status["finished"] and status["updates"] > 0
    metrics = _lines(logdir / "metrics.jsonl")
    assert any("loss/probe_rec_image" in m for m in metrics)
    assert any("openl/mse_image_imagined" in m for m in metrics)
    videos = {p.name for p in (logdir / "videos").iterdir()}
    assert any(n.startswith("openl") for n in videos) and any(n.startswith("eval") for n in videos)


def test_pretrained_jepa_vit_finetuned_with_ema_target(tmp_path):
    from world_models.vit_jepa import ViT, make_config, save_encoder

    path = tmp_path / "encoder.pt"
    save_encoder(path, ViT(make_config("tiny", (64, 64, 3), width=32, depth=1, heads=2)))
    logdir = tmp_path / "run"
    assert run_main(["--env", "dmc:cartpole-balance", "--obs", "pixels", "--steps", "100",
                     "--logdir", str(logdir), *SMOKE, "--set", "replay.batch_length=8",
                     "--set", "run.prefill=48", "--set", "run.eval_episodes=0",
                     "--set", "env.options.time_limit=100",
                     "--set", "env.options.fast_render=true",
                     "--encoder", f"jepa:{path}", "--encoder-mode", "finetune"]) == 0
    state = torch.load(logdir / "checkpoint" / "agent.pt", weights_only=False)["state"]
    wm = state["agent"]["wm"]
    online = {k[len("encoder."):]: v for k, v in wm.items() if k.startswith("encoder.image.")}
    target = {k[len("objective.target_encoder."):]: v for k, v in wm.items()
              if k.startswith("objective.target_encoder.image.")}
    assert online and online.keys() == target.keys()
    # The target is an EMA that lags the fine-tuned online ViT, so the two differ ...
    assert any(not torch.equal(online[k], target[k]) for k in online)
    # ... and it moved away from the pretrained weights (an EMA, not a frozen copy).
    saved = torch.load(path, weights_only=False)["state_dict"]
    match = {name: [k for k in target if k == name or k.endswith("." + name)] for name in saved}
    assert all(len(keys) == 1 for keys in match.values()), match
    assert any(not torch.equal(target[keys[0]], saved[name]) for name, keys in match.items())


ENV_ID = "MatchCueJEPA-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=MatchCueEnv, kwargs={"k": 3, "length": 10, "hold": True})


@pytest.mark.slow
def test_jepa_learns_match_cue(tmp_path):
    # The DreamerV3 learning test (tests/agents/test_learning.py) with --agent jepa.
    tiny = [
        "--agent", "jepa", "--size", "1m", "--envs", "4", "--seed", "0", "--set", "threads=1",
        "--set", "replay.batch_size=16", "--set", "replay.batch_length=16",
        "--set", "run.prefill=400", "--set", "run.train_ratio=64",
        "--set", "run.eval_episodes=20", "--set", "run.eval_every=100000",
        "--set", "run.log_every=5", "--set", "run.video=false",
        "--set", "opt.lr=1e-3", "--set", "opt.warmup=10",
    ]
    logdir = run(["--env", f"gym:{ENV_ID}", "--steps", "4000", "--logdir", str(tmp_path), *tiny])
    evals = _lines(logdir / "eval_scores.jsonl")
    final = [e["return"] for e in evals if e["step"] == max(x["step"] for x in evals)]
    assert len(final) == 20
    assert np.mean(final) >= 8.0, f"mean eval return {np.mean(final):.2f} below 8 (optimum 10)"
