"""export_latency times any run's agent: observations of the agent's own shapes."""

import math

import gymnasium as gym
import numpy as np
import torch

from agents.dreamerv3 import DreamerV3Agent
from agents.run.config import load_config
from benchmarks.export_latency import agent_obs, policy_ms


def test_latency_of_an_agent_with_its_own_observation_shapes():
    # A 4-d state and an image beside it: neither the 24-d vector nor the image alone the
    # benchmark's built-in rows use.
    torch.manual_seed(0)
    cfg = load_config("gym:CartPole-v1", size="1m",
                      sets=["model.encoder.depth=2", "model.decoder.depth=2"])
    spaces = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
                              "image": gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)})
    agent = DreamerV3Agent(spaces, gym.spaces.Discrete(2), cfg)
    obs = agent_obs(agent)
    assert obs["vector"].shape == (1, 4) and obs["image"].shape == (1, 64, 64, 3)
    assert obs["image"].dtype == np.uint8 and not obs["is_first"].any()
    assert math.isfinite(policy_ms(agent, calls=2))
