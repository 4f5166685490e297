"""MPPI over the latent interface: it beats random action sequences on a model that is
known exactly, reduces to the actor with zero iterations, and acts inside the agents."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.base import make_agent
from agents.behaviors import BEHAVIORS, ActorBehavior, check_behavior, register_behavior
from agents.compiled import compiler_missing, graphs_compiled
from agents.dreamerv3 import DreamerV3Agent
from agents.planner import MPPI
from agents.run.config import ConfigError, load_config
from agents.run.train import train
from world_models.dists import BoundedNormal, OneHotCategorical

pytestmark = pytest.mark.usefixtures("one_thread_per_module")

TARGET, SPEED, STEPS = 1.0, 0.25, 8


class PointModel:
    """A known world model: the latent is a position on a line, an action moves it by up to
    SPEED (continuous in [-1, 1], or left / stay / right), the reward is -|x - TARGET|."""

    def __init__(self, discrete: bool):
        self.discrete = discrete

    def move(self, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return SPEED * (action.argmax(-1, keepdim=True).float() - 1)
        return SPEED * action.clamp(-1, 1)

    def img_step(self, state, action, sample=True):
        return {"deter": state["deter"] + self.move(action), "stoch": state["stoch"]}

    def feat(self, state):
        return state["deter"]

    def predict_reward(self, feat):
        return -(feat[..., 0] - TARGET).abs()

    def predict_continue(self, feat):
        return torch.ones(feat.shape[:-1])


class Clueless:
    """An actor-critic that knows nothing: a uniform (or zero-mean) actor, a zero critic."""

    disc, lam = 1 - 1 / 333, 0.95

    def __init__(self, act_dim: int, discrete: bool):
        self.act_dim, self.discrete = act_dim, discrete

    def policy(self, feat):
        width = self.act_dim if self.discrete else 2 * self.act_dim
        out = torch.zeros(*feat.shape[:-1], width)
        return OneHotCategorical(out, 0.01) if self.discrete else BoundedNormal(out, 0.1, 1.0)

    def value(self, feat):
        return type("Zero", (), {"pred": lambda _: torch.zeros(feat.shape[:-1])})()


def episode_return(model: PointModel, act, envs: int = 4) -> float:
    """Mean return over `envs` episodes from x = 0 of `act(state, carry, is_first)`."""
    state = {"deter": torch.zeros(envs, 1), "stoch": torch.zeros(envs, 1, 1)}
    carry, total = None, 0.0
    for t in range(STEPS):
        is_first = torch.full((envs,), t == 0)
        action, carry = act(state, carry, is_first)
        state = model.img_step(state, action)
        total += float(model.predict_reward(model.feat(state)).mean())
    return total


@pytest.mark.parametrize("discrete", [False, True], ids=["continuous", "discrete"])
def test_mppi_beats_random_sequences_on_a_known_model(discrete):
    torch.manual_seed(0)
    act_dim = 3 if discrete else 1
    model, ac = PointModel(discrete), Clueless(act_dim, discrete)
    planner = MPPI(model, ac, act_dim, discrete, samples=64, elites=8, actor_samples=4)

    def plan(state, carry, is_first):
        carry = planner.initial(len(is_first), "cpu") if carry is None else carry
        return planner(state, carry, is_first, sample=False)

    def random(state, carry, is_first):
        n = len(is_first)
        if discrete:
            return torch.eye(3)[torch.randint(0, 3, (n,))], carry
        return torch.rand(n, 1) * 2 - 1, carry

    best = -(0.75 + 0.5 + 0.25)  # reach the target in 4 steps of SPEED, then stay
    planned = episode_return(model, plan)
    randoms = [episode_return(model, random) for _ in range(20)]
    assert planned > max(randoms)
    assert planned > best - 0.3, (planned, best)


def tiny_agent(kind: str, sets=(), agent: str = "dreamerv3") -> DreamerV3Agent:
    torch.manual_seed(0)
    cfg = load_config("gym:CartPole-v1", size="1m", agent=agent,
                      sets=["actor_critic.imag_length=4", *sets])
    vector = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    act = gym.spaces.Discrete(3) if kind == "discrete" else gym.spaces.Box(-1, 1, (2,))
    return make_agent(agent, gym.spaces.Dict({"vector": vector}), act, cfg)


def obs(n: int, first: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"is_first": np.full(n, first), "vector": rng.normal(size=(n, 5)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
@pytest.mark.parametrize("mode,candidates", [("eval", 16), ("train", 1)])
def test_zero_iterations_all_from_the_actor_is_the_actor(kind, mode, candidates):
    sets = ["mppi.iterations=0", f"mppi.samples={candidates}", "mppi.elites=1",
            f"mppi.actor_samples={candidates}"]
    agent = tiny_agent(kind, sets)
    torch.manual_seed(1)
    actor_action, _ = agent.policy(obs(3, True), None, mode=mode)
    agent.set_behavior("mppi")
    torch.manual_seed(1)
    planned, carry = agent.policy(obs(3, True), None, mode=mode)
    if kind == "continuous":  # the planner keeps actions in bounds; the env clips the actor's
        actor_action = actor_action.clip(-1, 1)
    np.testing.assert_allclose(planned, actor_action, atol=1e-6)
    assert carry[2].shape == (3, 3, agent.act_dim)  # the plan: horizon 3


@pytest.mark.parametrize("kind,agent_name", [("continuous", "dreamerv3"),
                                             ("discrete", "dreamerv3"), ("continuous", "jepa")])
def test_mppi_in_the_agent_acts_and_warm_starts(kind, agent_name):
    agent = tiny_agent(kind, ["mppi.samples=32", "mppi.elites=4", "mppi.actor_samples=4",
                              "mppi.iterations=2"], agent_name)
    agent.set_behavior("mppi")
    assert agent.behavior_name == "mppi"
    action, carry = agent.policy(obs(2, True), None, mode="train")
    assert action.shape == (2, agent.act_dim) and np.isfinite(action).all()
    if kind == "discrete":
        np.testing.assert_allclose(action.sum(-1), 1.0)
        np.testing.assert_allclose(carry[2].sum(-1).numpy(), 1.0, atol=1e-5)
    else:
        assert np.abs(action).max() <= 1.0
    plan = carry[2].clone()
    shifted = agent.behavior._warm_start(plan, torch.tensor([False, True]))
    torch.testing.assert_close(shifted[0, :-1], plan[0, 1:])  # shifted by one step
    torch.testing.assert_close(shifted[1], agent.behavior.initial(1, "cpu")[0])  # new episode
    action, carry = agent.policy(obs(2, False, seed=1), carry, mode="eval")
    assert np.isfinite(action).all()


def test_planner_scores_the_return_the_actor_trains_on():
    agent = tiny_agent("continuous", ["actor_critic.value.outscale=1.0",
                                      "model.reward_head.outscale=1.0"])
    planner = MPPI(agent.wm, agent.ac, agent.act_dim, False, horizon=4, sample_latents=False)
    torch.manual_seed(3)
    n, horizon = 5, 4
    start = {"deter": torch.randn(n, agent.wm.rssm.deter).tanh(),
             "stoch": torch.nn.functional.one_hot(torch.randint(0, 4, (n, 32)), 4).float()}
    actions = torch.rand(n, horizon + 1, agent.act_dim) * 2 - 1
    states, s = [start], start
    for t in range(horizon):
        s = agent.wm.img_step(s, actions[:, t], sample=False)
        states.append(s)
    stacked = {k: torch.stack([x[k] for x in states], 1) for k in ("deter", "stoch")}
    with torch.no_grad():
        _, ret, _ = agent.ac.imagined_losses(agent.wm, stacked, actions,
                                             torch.zeros(n, dtype=torch.bool))
        score = planner.returns(start, actions[:, :horizon])
    assert ret[:, 0].abs().max() > 1e-3  # non-trivial heads: rewards, continues and values
    torch.testing.assert_close(score, ret[:, 0])


def test_behavior_errors_are_one_line(monkeypatch):
    cfg = load_config("gym:CartPole-v1", size="1m")
    check_behavior("mppi", cfg)
    with pytest.raises(ValueError, match="unknown behavior 'plan'; available: actor, mppi") as e:
        check_behavior("plan", cfg)
    assert "\n" not in str(e.value)
    bad = load_config("gym:CartPole-v1", size="1m", sets=["mppi.elites=600"])
    with pytest.raises(ValueError, match=r"mppi settings \['elites'\] out of range") as e:
        check_behavior("mppi", bad)
    assert "\n" not in str(e.value)
    monkeypatch.setattr("agents.behaviors.BEHAVIORS", dict(BEHAVIORS))
    register_behavior("mine", ActorBehavior)  # a user's behaviour: no other edit
    check_behavior("mine", cfg)


def test_training_with_the_planner_and_evaluating_either_way(tmp_path, tiny_config,
                                                             monkeypatch):
    from agents.run.cli import eval_main

    planner = {"mppi.samples": 16, "mppi.elites": 4, "mppi.actor_samples": 4,
               "mppi.iterations": 1}
    cfg = tiny_config("gym:CartPole-v1", tmp_path / "run", 200,
                      {"run.behavior": "mppi", **planner})
    calls = []
    original = MPPI.__call__
    monkeypatch.setattr(MPPI, "__call__",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    train(cfg)
    assert len(calls) > 50  # the planner chose the actions after the random prefill
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["finished"] and status["updates"] > 0
    for behavior in ("actor", "mppi"):
        out = tmp_path / behavior
        assert eval_main([str(tmp_path / "run"), "--episodes", "1", "--envs", "2",
                          "--behavior", behavior, "--set", "mppi.iterations=2",
                          "--out", str(out)]) == 0
        summary = json.loads((out / "eval.json").read_text())
        assert summary["behavior"] == behavior and summary["act_ms"] > 0
    # benchmarks.planning: both behaviours from the same checkpoint, one row each.
    from benchmarks.planning import main as planning_main

    table = tmp_path / "planning.md"
    assert planning_main([str(tmp_path / "run"), "--behavior", "actor", "--behavior",
                          "mppi:iterations=2", "--episodes", "2", "--envs", "2", "--timing",
                          "1", "--timing-steps", "2", "--out", str(table)]) == 0
    rows = [[c.strip() for c in line.split("|")[1:-1]]
            for line in table.read_text().splitlines()[2:]]
    assert [(r[2], r[3]) for r in rows] == [("actor", "2"), ("mppi iterations=2", "2")]
    assert all(float(r[8]) > 0 for r in rows)  # ms/step at batch 1
    with pytest.raises(ConfigError, match="run.behavior 'plan'"):
        train(tiny_config("gym:CartPole-v1", tmp_path / "bad", 10, {"run.behavior": "plan"}))


@pytest.mark.skipif(compiler_missing(torch.device("cpu")) is not None, reason="no C++ compiler")
def test_compiled_planner_acts_without_recompiling():
    # Horizon 1: the compiled rollout is then one step, a graph that builds in seconds.
    sets = ["mppi.samples=32", "mppi.elites=4", "mppi.actor_samples=4", "mppi.iterations=2",
            "mppi.horizon=1"]
    torch.manual_seed(0)
    cfg = load_config("gym:CartPole-v1", size="1m", sets=["actor_critic.imag_length=4", *sets])
    space = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    agent = DreamerV3Agent(space, gym.spaces.Box(-1, 1, (2,)), cfg, compile=True)
    agent.policy(obs(2, True), None, mode="train")  # the actor's fused step, traced first
    agent.set_behavior("mppi")
    carry, before = None, graphs_compiled()
    for step in range(4):
        if step == 1:
            assert graphs_compiled() >= before + 2  # the acting step again, and the rollout
            warm = graphs_compiled()
        action, carry = agent.policy(obs(2, step == 0, seed=step), carry, mode="train")
        assert np.isfinite(action).all() and np.abs(action).max() <= 1
    assert graphs_compiled() == warm, "the planner recompiled after warm-up"
