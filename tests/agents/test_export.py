"""dreamer-export: the exported acting step (ONNX via onnxruntime, TorchScript) gives the
same actions and carry as `agent.policy` on the same observations and noise."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.dreamerv3 import DreamerV3Agent
from agents.run.config import load_config
from agents.run.export import ExportedPolicy, ExportError, export_policy, main

IMAGE = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
VECTOR = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
AGENTS = {
    "state": (gym.spaces.Dict({"vector": VECTOR}), gym.spaces.Box(-1, 1, (2,), np.float32)),
    "pixels": (gym.spaces.Dict({"image": IMAGE}), gym.spaces.Discrete(3)),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: extra threads only contend


def make(kind: str, precision: str = "fp32") -> DreamerV3Agent:
    torch.manual_seed(0)
    cfg = load_config("gym:CartPole-v1", size="1m",
                      sets=["model.encoder.depth=2", "model.decoder.depth=2",
                            "conv_precision=bf16"])
    agent = DreamerV3Agent(*AGENTS[kind], cfg, precision=precision)
    with torch.no_grad():  # a trained-looking actor: the zero-ish init acts almost uniformly
        agent.ac.policy.net[-1].weight.normal_(0.0, 0.3)
    return agent


def observations(agent: DreamerV3Agent, n: int, steps: int):
    rng = np.random.default_rng(1)
    for t in range(steps):
        obs = {"is_first": np.array([t == 0 or (t == 3 and i == 0) for i in range(n)])}
        if "image" in agent.shapes:
            obs["image"] = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        if "vector" in agent.shapes:
            obs["vector"] = rng.normal(size=(n, 5)).astype(np.float32)
        yield t, obs


def assert_same_actions(agent: DreamerV3Agent, exported: ExportedPolicy, policy: str, n: int):
    """Both step through one observation sequence with the same noise: the agent's own draws
    (torch seeded per step), which the exported graph takes as inputs."""
    stoch = agent.wm.rssm.stoch
    carry = ours = None
    for t, obs in observations(agent, n, 6):
        torch.manual_seed(t)
        action, carry = agent.policy(obs, carry, mode="train" if policy == "sample" else "eval")
        torch.manual_seed(t)
        noise = {"latent_noise": torch.rand(n, stoch, 1)[..., 0].numpy()}
        if policy == "sample":
            noise["action_noise"] = (torch.rand(n, 1)[:, 0] if agent.discrete
                                     else torch.randn(n, agent.act_dim)).numpy()
        got, ours = exported.policy(obs, ours, noise)
        np.testing.assert_allclose(got, action, atol=1e-5)
        np.testing.assert_allclose(ours["deter"], carry[0]["deter"].numpy(), atol=1e-4)
        # One-hot up to the straight-through sum's rounding (1 - 6e-8): the same latents.
        np.testing.assert_allclose(ours["stoch"], carry[0]["stoch"].numpy(), atol=1e-6)


@pytest.mark.parametrize("kind,fmt,policy", [
    ("state", "onnx", "mode"), ("pixels", "onnx", "sample"),
    ("state", "torchscript", "sample"), ("pixels", "torchscript", "mode")])
def test_exported_policy_matches_the_agent(tmp_path, kind, fmt, policy):
    agent = make(kind)
    out = tmp_path / f"policy.{fmt}"
    spec = export_policy(agent, out, fmt, policy)
    names = [s["name"] for s in spec["inputs"]]
    assert names[-1] == ("action_noise" if policy == "sample" else "latent_noise")
    assert [s["name"] for s in spec["outputs"]] == ["action", "next_deter", "next_stoch"]
    assert json.loads((tmp_path / f"policy.{fmt}.json").read_text())["policy"] == policy
    exported = ExportedPolicy(out, seed=0)
    # The batch size is free: exported at 2, run at 1 and 3.
    for n in (1, 3):
        assert_same_actions(agent, exported, policy, n)
    # Observations as an env may give them (float64 vectors) run too.
    obs = next(observations(agent, 2, 1))[1]
    exported.policy({k: v.astype(np.float64) if k == "vector" else v for k, v in obs.items()})
    # The agent exported is the caller's, as it was: still training mode, acting on.
    assert all(m.training for m in agent.wm.modules())
    # The spec is strict JSON: unbounded Box bounds (state observations) are null.
    text = (tmp_path / f"policy.{fmt}.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the spec"))


def test_a_bf16_agent_acts_as_its_export_over_many_envs(tmp_path):
    # The conv stacks' bf16 is for training batches: acting over 64+ envs stays fp32, as
    # the exported graph is (it took bf16 convs there, and different actions).
    from world_models.encoders import CONV_BF16_MIN_FRAMES

    agent = make("pixels", precision="bf16")
    assert agent.conv_bf16
    out = tmp_path / "policy.pt"
    export_policy(agent, out, "torchscript", "mode")
    assert_same_actions(agent, ExportedPolicy(out, seed=0), "mode", CONV_BF16_MIN_FRAMES)
    assert agent.wm.encoder.conv_bf16  # and training batches keep it


def test_export_rejects_bad_arguments(tmp_path):
    agent = make("state")
    with pytest.raises(ExportError, match="format 'tflite' unknown; allowed: onnx, torchscript"):
        export_policy(agent, tmp_path / "p", "tflite")
    with pytest.raises(ExportError, match="policy 'greedy' unknown; allowed: mode, sample"):
        export_policy(agent, tmp_path / "p", "onnx", "greedy")


def test_cli_exports_a_trained_run(tmp_path, tiny_config, capsys):
    from agents.run.train import train

    cfg = tiny_config("gym:CartPole-v1", tmp_path / "run", 96,
                      {"run.eval_episodes": 0, "run.video": False})
    logdir = train(cfg, log=lambda _: None)
    assert main([str(logdir), "--format", "torchscript"]) == 0
    out = logdir / "export" / "policy.pt"
    spec = json.loads(out.with_name("policy.pt.json").read_text())
    assert spec["env"] == "gym:CartPole-v1" and spec["action_space"]["n"] == 2
    policy = ExportedPolicy(out)
    action, carry = policy.policy({"vector": np.zeros((1, 4), np.float32),
                                   "is_first": np.ones(1, bool)})
    assert action.shape == (1, 2) and action.sum() == pytest.approx(1.0)
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "dreamer-export: error:" in capsys.readouterr().err
