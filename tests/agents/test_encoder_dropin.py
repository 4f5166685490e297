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
def test_dreamer_runs_with_jepa_encoder(tmp_path, encoder_file, mode, pool, monkeypatch):
    from world_models.vit_jepa.encoder import JEPAEncoder

    frames = []  # frames the ViT encoded: acting, and training batches
    forward = JEPAEncoder.forward
    monkeypatch.setattr(JEPAEncoder, "forward", lambda self, obs: frames.append(
        obs["image"].shape[:-3].numel()) or forward(self, obs))
    before = torch.load(encoder_file, weights_only=False)
    logdir = tmp_path / mode
    assert run_main(["--env", "dmc:cartpole-balance", "--logdir", str(logdir), *SMOKE,
                     "--encoder", f"jepa:{encoder_file}", "--encoder-mode", mode,
                     "--set", f"model.encoder.pool={pool}"]) == 0
    status = json.loads((logdir / "status.json").read_text())
    assert status["finished"] and status["updates"] > 0
    # Fine-tuned, every update encodes its whole batch; frozen, each stored frame is encoded
    # once when first replayed (and once when acted on): at most 2 per agent step.
    batch = 2 * (8 + 1)  # replay.batch_size x (batch_length + replay context)
    if mode == "frozen":
        assert sum(frames) <= 2 * status["step"] < status["updates"] * batch
    else:
        assert sum(frames) >= status["updates"] * 2 * 8
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
                                         ("jepa:enc.pt", "jepa:{cwd}/enc.pt")])
def test_encoder_flags_set_model_encoder(flag, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a jepa: path is kept absolute, from where it was given
    args = parse_run_args(["--env", "gym:CartPole-v1", "--encoder", flag,
                           "--encoder-mode", "finetune"])
    cfg = build_config(args)
    assert cfg.model.encoder.kind == kind.format(cwd=tmp_path.resolve())
    assert cfg.model.encoder.mode == "finetune"
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


def _agent(encoder_file, agent="dreamerv3", mode="frozen", sets=(), precision="fp32"):
    import gymnasium as gym
    import numpy as np

    from agents.base import make_agent

    cfg = load_config("dmc:cartpole-balance", size="1m", agent=agent, sets=[
        f"model.encoder.kind=jepa:{encoder_file}", f"model.encoder.mode={mode}",
        "env.options.obs=pixels", "compile=off", "precision=fp32", "threads=1", *sets])
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)})
    return make_agent(agent, space, gym.spaces.Box(-1, 1, (1,)), cfg, device="cpu",
                      precision=precision, compile=False)


def _batch(agent, B=2, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = {"image": torch.randint(0, 256, (B, T, 64, 64, 3), generator=g, dtype=torch.uint8),
            "action": torch.rand(B, T, 1, generator=g) * 2 - 1,
            "reward": torch.rand(B, T, generator=g),
            "is_first": torch.zeros(B, T, dtype=torch.bool),
            "is_last": torch.zeros(B, T, dtype=torch.bool),
            "is_terminal": torch.zeros(B, T, dtype=torch.bool)}
    data["is_first"][:, 0] = True
    for key, (shape, dtype) in agent.latent_spec().items():  # as the collector stores them
        data[key] = torch.zeros(B, T, *shape, dtype=dtype)
    return data


@pytest.mark.parametrize("agent_name", ["dreamerv3", "jepa"])
def test_frozen_encoder_embeds_each_stored_frame_once(encoder_file, agent_name, monkeypatch):
    from world_models.encoders import EMBED_KEY, EMBED_OK_KEY

    agent = _agent(encoder_file, agent_name)
    image = agent.wm.encoder.image
    assert agent.latent_spec()[EMBED_KEY] == ((image.out_dim,), torch.float32)
    data = _batch(agent)
    K = agent.replay_context
    # The first update encodes every frame after the context and hands the embeddings back
    # for replay; they are what the encoder gives for those frames.
    agent.train(data)
    (write,) = [w for w in agent.replay_writes() if EMBED_KEY in w.values]
    assert write.start == K and write.values[EMBED_OK_KEY].all()
    torch.testing.assert_close(write.values[EMBED_KEY],
                               agent.wm.encoder.embed_images(data["image"][:, K:]))
    assert agent.replay_writes() == []  # handed out once
    # Stored back, a later batch skips the image encoder, and its loss is the same as the
    # one computed from the frames.
    cached = {**data, EMBED_KEY: data[EMBED_KEY].clone(), EMBED_OK_KEY: data[EMBED_OK_KEY].clone()}
    cached[EMBED_KEY][:, K:] = write.values[EMBED_KEY]
    cached[EMBED_OK_KEY][:, K:] = True
    plain = {k: v for k, v in data.items() if k not in (EMBED_KEY, EMBED_OK_KEY)}
    calls = []
    monkeypatch.setattr(type(image), "forward",
                        lambda self, obs, f=type(image).forward: calls.append(1) or f(self, obs))
    losses = []
    for batch in (cached, plain):
        torch.manual_seed(1)
        start, rest = agent._context(dict(batch))
        loss, _, _ = agent.loss(agent._fill_embeds(rest, keep=False), start)
        losses.append(loss)
    assert len(calls) == 1 + (agent_name == "jepa")  # only the plain batch ran the ViT
    torch.testing.assert_close(losses[0], losses[1])


def test_finetuned_or_uncached_encoder_keeps_no_embeddings(encoder_file):
    from world_models.encoders import EMBED_KEY, EMBED_OK_KEY

    assert EMBED_KEY not in _agent(encoder_file, mode="finetune").latent_spec()
    agent = _agent(encoder_file, sets=["model.encoder.cache=false"])
    assert EMBED_KEY not in agent.latent_spec()
    # A batch whose embeddings were never completed is refused, not read as zeros.
    cached = _agent(encoder_file)
    data = _batch(cached)
    with pytest.raises(ValueError, match="never computed"):
        cached.wm.encode({k: v for k, v in data.items() if k in ("image", EMBED_KEY,
                                                                EMBED_OK_KEY)})


def test_frozen_encoder_run_saved_before_embeddings_resumes(tmp_path, encoder_file,
                                                            monkeypatch, capsys):
    from agents.dreamerv3 import DreamerV3Agent
    from world_models.encoders import EMBED_KEY

    argv = ["--env", "dmc:cartpole-balance", "--logdir", str(tmp_path / "run"), *SMOKE,
            "--encoder", f"jepa:{encoder_file}"]
    spec = DreamerV3Agent.latent_spec
    with monkeypatch.context() as m:  # a run whose replay has no embeddings
        m.setattr(DreamerV3Agent, "latent_spec",
                  lambda self: {k: v for k, v in spec(self).items() if "embed" not in k})
        assert run_main(argv) == 0
    capsys.readouterr()
    assert run_main([*argv, "--steps", "160"]) == 0
    out = capsys.readouterr().out
    assert "resuming from step 120 of 160" in out and f"holds no {EMBED_KEY}" in out
    assert json.loads((tmp_path / "run" / "status.json").read_text())["step"] == 160


def test_finetuned_encoder_takes_bf16_on_training_batches_as_the_conv_stacks_do(encoder_file):
    # conv_precision=bf16 (auto on CPUs with native bf16): a fine-tuned ViT's forward and
    # backward over a training batch run in bf16, outputs and gradients stay fp32 and close
    # to fp32's; acting-size calls and frozen encoders (each frame embedded once, the
    # embedding kept in replay) stay fp32.
    from world_models.encoders import CONV_BF16_MIN_FRAMES

    frames = torch.randint(0, 256, (CONV_BF16_MIN_FRAMES, 64, 64, 3), dtype=torch.uint8)
    dtypes: list[torch.dtype] = []
    for mode in ("finetune", "frozen"):
        agent = _agent(encoder_file, mode=mode, sets=["conv_precision=bf16"], precision="bf16")
        enc = agent.wm.encoder
        assert agent.conv_bf16 and enc.conv_bf16  # the agent hands the setting down
        fp32 = _agent(encoder_file, mode=mode, sets=["conv_precision=bf16"])
        assert not fp32.wm.encoder.conv_bf16  # an fp32 update keeps fp32 everywhere
        dtypes.clear()
        linears = [m for m in enc.image.modules() if isinstance(m, torch.nn.Linear)]
        hooks = [m.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
                 for m in linears]

        def run(count: int, bf16: bool, enc=enc):
            enc.conv_bf16 = bf16
            enc.zero_grad(set_to_none=True)
            emb = enc.embed_images(frames[:count])
            if enc.finetuned:
                emb.square().mean().backward()
            return emb

        ref = run(len(frames), False)
        dtypes.clear()
        out = run(len(frames), True)
        assert out.dtype == torch.float32
        expected = torch.bfloat16 if mode == "finetune" else torch.float32
        assert linears and set(dtypes) == {expected}
        assert (out - ref).norm() / ref.norm() < (2e-2 if mode == "finetune" else 1e-6)
        dtypes.clear()
        run(4, True)  # acting: a frame per env
        assert set(dtypes) == {torch.float32}
        for h in hooks:
            h.remove()


def test_jepa_target_copy_of_a_finetuned_encoder_runs_as_the_online_one(encoder_file):
    # The EMA target copy takes no gradient, yet it is a fine-tuned encoder's copy: it keeps
    # no embeddings in replay and embeds a training batch in bf16 as the online one does.
    from world_models.encoders import CONV_BF16_MIN_FRAMES

    agent = _agent(encoder_file, agent="jepa", mode="finetune", sets=["conv_precision=bf16"],
                   precision="bf16")
    target = agent.wm.objective.target_encoder
    assert not any(p.requires_grad for p in target.parameters())
    assert target.finetuned and target.conv_bf16 and target.cached_dim == 0
    dtypes = []
    for m in target.image.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    frames = torch.randint(0, 256, (CONV_BF16_MIN_FRAMES, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        target.embed_images(frames)
    assert dtypes and set(dtypes) == {torch.bfloat16}
