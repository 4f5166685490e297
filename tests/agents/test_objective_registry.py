"""Representation objectives are a registry: a new one is one class plus its config section,
and the config is the one source of which objective trains."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from agents.base import make_agent
from agents.run.config import ConfigError, load_config
from world_models.latent_objective import LatentObjective
from world_models.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveContext,
    ReconstructionObjective,
    register_objective,
)
from world_models.rssm import RSSM, State

SPACE = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (4,), np.float32)})
SMALL = ["threads=1", "model.rssm.deter=32", "model.rssm.hidden=16", "model.rssm.classes=3",
         "model.rssm.blocks=4", "replay.batch_size=2", "replay.batch_length=8"]


class VarianceObjective(Objective):
    """A toy objective (VICReg's variance hinge on the features): all a new one needs."""

    SCALES = ("spread",)
    SECTION = "spread_objective"
    DEFAULTS = {"target_std": 1.0, "scales": {"spread": 1.0}}

    def __init__(self, context: ObjectiveContext, *, target_std: float) -> None:
        super().__init__()
        self.target_std = float(target_std)
        self.project = torch.nn.Linear(context.feat_dim, 8)
        self.terms = {"spread": "spread"}

    def loss(self, batch, embed, post: State, feat: torch.Tensor, rssm: RSSM):
        z = self.project(feat)
        std = z.flatten(0, 1).std(0)
        hinge = torch.relu(self.target_std - std).mean()
        return {"spread": hinge.expand(feat.shape[:2])}, {"spread/std": std.mean().detach()}

    def report(self, data, feat, context):
        return {}


@pytest.fixture
def spread_objective():
    register_objective("spread")(VarianceObjective)
    yield
    OBJECTIVES.pop("spread")


def _batch(B=2, T=9):
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    return {"vector": torch.randn(B, T, 4), "action": torch.nn.functional.one_hot(
        torch.randint(0, 2, (B, T)), 2).float(), "reward": torch.randn(B, T),
        "is_first": is_first, "is_last": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool)}


def test_a_new_objective_is_one_class_and_its_config_section(spread_objective):
    torch.manual_seed(0)
    cfg = load_config("gym:CartPole-v1", size="1m", sets=[
        *SMALL, "model.objective=spread", "spread_objective.target_std=2.0",
        "spread_objective.scales.spread=0.5"])
    assert cfg.spread_objective.target_std == 2.0
    assert "spread_objective" in yaml.safe_load(cfg.to_yaml())  # the run's config.yaml
    agent = make_agent("dreamerv3", SPACE, gym.spaces.Discrete(2), cfg)
    assert isinstance(agent.wm.objective, VarianceObjective)
    assert agent.wm.objective.target_std == 2.0 and agent.wm.scales["spread"] == 0.5
    assert agent.wm.decoder is None
    metrics = agent.train(_batch())
    assert np.isfinite(float(metrics["loss/spread"])) and "spread/std" in metrics
    with pytest.raises(ConfigError, match="spread_objective.target_sd"):
        load_config("gym:CartPole-v1", sets=["model.objective=spread",
                                             "spread_objective.target_sd=1"])


def test_unknown_objective_names_the_registered_ones():
    cfg = load_config("gym:CartPole-v1", size="1m", sets=[*SMALL, "model.objective=barlow"])
    with pytest.raises(ValueError, match="objective 'barlow' unknown; allowed: reconstruction"):
        make_agent("dreamerv3", SPACE, gym.spaces.Discrete(2), cfg)


@pytest.mark.parametrize(("agent", "sets", "kind"), [
    ("jepa", [], LatentObjective),
    ("jepa", ["model.objective=reconstruction"], ReconstructionObjective),
    ("dreamerv3", ["model.objective=latent"], LatentObjective),
    ("dreamerv3", [], ReconstructionObjective),
])
def test_the_config_says_what_trains(agent, sets, kind):
    cfg = load_config("gym:CartPole-v1", size="1m", agent=agent, sets=[*SMALL, *sets])
    built = make_agent(agent, SPACE, gym.spaces.Discrete(2), cfg)
    assert isinstance(built.wm.objective, kind)
    written = yaml.safe_load(cfg.to_yaml())["model"]["objective"]
    assert OBJECTIVES[written] is kind
