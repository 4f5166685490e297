"""DreamerV3Agent on tiny configs: acting with a carry, training, checkpoints, reports."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.base import AGENTS, UnknownAgentError, agent_class, make_agent, register
from agents.dreamerv3 import LATENT_DETER, LATENT_STOCH, DreamerV3Agent, action_dim
from agents.run.config import load_config

B, T = 2, 8
# 1m preset, with the narrowest CNN and a short imagination horizon to keep this fast.
SETS = ["actor_critic.imag_length=4", "model.encoder.depth=2", "model.decoder.depth=2"]

IMAGE = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
VECTOR = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
SPACES = {
    "image+discrete": (gym.spaces.Dict({"image": IMAGE, "vector": VECTOR}),
                       gym.spaces.Discrete(3)),
    "vector+continuous": (gym.spaces.Dict({"vector": VECTOR}),
                          gym.spaces.Box(-1, 1, (2,), np.float32)),
}


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def make(kind: str, seed: int = 0) -> DreamerV3Agent:
    torch.manual_seed(seed)
    cfg = load_config("gym:CartPole-v1", size="1m", sets=SETS)
    obs_space, act_space = SPACES[kind]
    return DreamerV3Agent(obs_space, act_space, cfg)


def observation(agent: DreamerV3Agent, n: int, first: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    obs = {"is_first": np.full(n, first)}
    if "image" in agent.shapes:
        obs["image"] = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    obs["vector"] = rng.normal(size=(n, 5)).astype(np.float32)
    return obs


def replay_batch(agent: DreamerV3Agent, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if agent.discrete:
        action = torch.eye(agent.act_dim)[torch.randint(0, agent.act_dim, (B, T), generator=g)]
    else:
        action = torch.rand(B, T, agent.act_dim, generator=g) * 2 - 1
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_last = torch.zeros(B, T, dtype=torch.bool)
    is_last[1, 5] = True
    is_first[1, 6] = True
    action[is_first] = 0.0
    data = {"vector": torch.randn(B, T, 5, generator=g), "action": action,
            "reward": torch.randn(B, T, generator=g), "is_first": is_first, "is_last": is_last,
            "is_terminal": is_last.clone()}
    if "image" in agent.shapes:
        data["image"] = torch.randint(0, 256, (B, T, 64, 64, 3), dtype=torch.uint8, generator=g)
    return data


def test_action_dim_and_registry():
    assert action_dim(gym.spaces.Discrete(4)) == (4, True)
    assert action_dim(gym.spaces.Box(-1, 1, (3,))) == (3, False)
    with pytest.raises(ValueError, match="unsupported action space"):
        action_dim(gym.spaces.Box(-1, 1, (2, 2)))
    cfg = load_config("gym:CartPole-v1", size="1m", sets=SETS)
    agent = make_agent("dreamerv3", *SPACES["vector+continuous"], cfg)
    assert isinstance(agent, DreamerV3Agent)


@pytest.mark.parametrize("kind", list(SPACES))
def test_policy_returns_model_format_actions_and_a_carry(kind):
    agent = make(kind)
    n = 3
    action, carry = agent.policy(observation(agent, n, True), None, mode="train")
    assert action.shape == (n, agent.act_dim) and action.dtype == np.float32
    if agent.discrete:
        np.testing.assert_allclose(action.sum(-1), 1.0, atol=1e-6)
        assert set(np.unique(action.round(6))) <= {0.0, 1.0}
    state, prev, _ = carry
    assert state["deter"].shape == (n, agent.wm.rssm.deter)
    np.testing.assert_allclose(prev.numpy(), action)
    action2, carry2 = agent.policy(observation(agent, n, False, seed=1), carry, mode="eval")
    assert action2.shape == (n, agent.act_dim)
    assert not torch.equal(carry2[0]["deter"], state["deter"])
    random, after = agent.policy(observation(agent, n, False), carry, mode="random")
    assert random.shape == (n, agent.act_dim)
    np.testing.assert_array_equal(after[1].numpy(), random)  # the action taken, carried
    agent.replay_context = 0  # no latents stored: random acting skips the world model
    assert agent.policy(observation(agent, n, False), carry, mode="random")[1] is carry
    if not agent.discrete:
        assert np.abs(random).max() <= 1.0


def test_policy_resets_the_carry_at_is_first():
    agent = make("image+discrete")
    obs = observation(agent, 2, True, seed=5)
    _, carry = agent.policy(observation(agent, 2, True, seed=1), None)
    _, carry = agent.policy(observation(agent, 2, False, seed=2), carry)
    torch.manual_seed(7)
    a, fresh = agent.policy(obs, None, mode="eval")
    torch.manual_seed(7)
    b, reset = agent.policy(obs, carry, mode="eval")
    np.testing.assert_array_equal(a, b)
    torch.testing.assert_close(fresh[0]["deter"], reset[0]["deter"])


@pytest.mark.parametrize("kind", list(SPACES))
def test_train_returns_finite_metrics_and_changes_parameters(kind):
    agent = make(kind)
    before = {k: v.clone() for k, v in agent.wm.state_dict().items()}
    policy_before = agent.ac.policy.net[-1].weight.detach().clone()
    metrics = agent.train(replay_batch(agent))
    assert agent.step == 1
    for key in ("loss/dyn", "loss/rep", "loss/rew", "loss/con", "loss/policy", "loss/value",
                "loss/repval", "loss/total", "loss/rec_vector", "train/imag_return"):
        assert key in metrics, key
    if "image" in agent.shapes:
        assert "loss/rec_image" in metrics
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    changed = [k for k, v in agent.wm.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("rssm.") for k in changed)
    assert not torch.equal(agent.ac.policy.net[-1].weight, policy_before)


def test_state_dict_round_trip_reproduces_eval_actions():
    agent = make("image+discrete", seed=0)
    agent.train(replay_batch(agent))
    other = make("image+discrete", seed=1)
    obs = observation(agent, 4, True, seed=3)

    def act(a: DreamerV3Agent) -> np.ndarray:
        # Posterior latents are sampled even in eval mode: fix the seed for both.
        torch.manual_seed(11)
        action, carry = a.policy(obs, None, mode="eval")
        action2, _ = a.policy(observation(a, 4, False, seed=4), carry, mode="eval")
        return np.concatenate([action, action2])

    other.load_state_dict(agent.state_dict())
    assert other.step == agent.step == 1
    np.testing.assert_array_equal(act(other), act(agent))
    for key, value in agent.wm.state_dict().items():
        torch.testing.assert_close(other.wm.state_dict()[key], value)
    torch.testing.assert_close(other.ac.retnorm.hi, agent.ac.retnorm.hi)
    # Optimizer moments travel too: a further update is identical on both.
    batch = replay_batch(agent, seed=9)
    torch.manual_seed(5)
    m1 = agent.train(batch)
    torch.manual_seed(5)
    m2 = other.train(batch)
    assert m1["loss/total"] == pytest.approx(m2["loss/total"], rel=1e-5)


def test_report_returns_open_loop_videos_for_images():
    agent = make("image+discrete")
    out = agent.report(replay_batch(agent))
    truth, pred = out["openl"]
    assert truth.shape == pred.shape == (B, T, 64, 64, 3)
    assert 0.0 <= pred.min() and pred.max() <= 1.0
    np.testing.assert_allclose(truth, replay_batch(agent)["image"].numpy() / 255.0, rtol=1e-6)
    for key in ("openl/mse_image_observed", "openl/mse_image_imagined",
                "openl/mse_vector_observed", "openl/mse_vector_imagined"):
        assert np.isfinite(out[key]), key
    vector_only = make("vector+continuous")
    out = vector_only.report(replay_batch(vector_only))
    assert "openl" not in out and np.isfinite(out["openl/mse_vector_imagined"])


def test_registry_does_not_import_its_agents():
    code = ("import sys, agents.base as b; assert 'agents.dreamerv3' not in sys.modules; "
            "assert b.agent_class('jepa').__name__ == 'JEPAAgent'; "
            "assert 'agents.dreamerv3' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_names_and_user_entry_points():
    assert {"dreamerv3", "jepa"} <= set(AGENTS)
    with pytest.raises(UnknownAgentError, match="unknown agent 'nope'; available: .*dreamerv3"):
        make_agent("nope", *SPACES["vector+continuous"], None)
    try:
        register("mine", "agents.dreamerv3:DreamerV3Agent")
        assert agent_class("mine") is DreamerV3Agent
        register("mine2")(DreamerV3Agent)
        assert agent_class("mine2") is DreamerV3Agent
    finally:
        AGENTS.pop("mine", None)
        AGENTS.pop("mine2", None)


def test_plugin_agents_from_entry_points_and_the_base_class_defaults(monkeypatch):
    # A package declares `[project.entry-points."dreamjepa.agents"] plug = "module:Class"`:
    # a fresh process (the CLI) finds it by name with no register call.
    from importlib.metadata import EntryPoint

    from agents.base import Agent

    monkeypatch.setattr("agents.base.AGENTS", dict(AGENTS))
    eps = [EntryPoint("plug", "agents.dreamerv3:DreamerV3Agent", "dreamjepa.agents")]
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: eps if group == "dreamjepa.agents" else [])
    assert agent_class("plug") is DreamerV3Agent
    with pytest.raises(UnknownAgentError, match="unknown agent 'plug2'"):
        agent_class("plug2")

    class Minimal(Agent):  # only the abstract methods: what the README's recipe asks for
        def policy(self, obs, carry, mode="train"):
            return np.zeros((len(obs["is_first"]), 1), np.float32), carry

        def features(self, obs, carry):
            return torch.zeros(1, 1), torch.zeros(1, 1)

        def train(self, batch):
            return {}

        def report(self, batch):
            return {}

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    agent = Minimal()
    assert agent.step == 0  # dreamer-eval reports it
    agent.set_behavior("actor")
    with pytest.raises(ValueError, match="acts with its own policy only .*not 'mppi'"):
        agent.set_behavior("mppi")


def test_features_give_embeddings_and_the_carried_latent():
    agent = make("image+discrete")
    obs = observation(agent, 3, True)
    _, carry = agent.policy(obs, None, mode="eval")
    embed, feat = agent.features(obs, carry)
    assert embed.shape == (3, agent.wm.encoder.out_dim)
    assert feat.shape == (3, agent.wm.rssm.feat_dim)
    torch.testing.assert_close(feat, agent.wm.rssm.feat(carry[0]))
    data = {k: torch.as_tensor(obs[k]) for k in agent.shapes}
    torch.testing.assert_close(embed, agent.wm.encode(data).detach())


def with_latents(agent: DreamerV3Agent, data: dict, deter: torch.Tensor, index: torch.Tensor):
    """`data` plus stored latents: `deter`/`index` at step 0, zeros elsewhere."""
    spec = agent.latent_spec()
    out = dict(data)
    for key, value in ((LATENT_DETER, deter), (LATENT_STOCH, index)):
        shape, dtype = spec[key]
        stored = torch.zeros(B, T, *shape, dtype=dtype)
        stored[:, 0] = value.to(dtype)
        out[key] = stored
    return out


def test_replay_context_continues_the_posterior_from_the_stored_latent():
    # Official replay_context 1: a sequence starts from the latent stored at its first
    # step, so it continues exactly as if that step had been observed in the same pass.
    agent = make("vector+continuous")
    assert agent.replay_context == 1
    rssm = agent.wm.rssm
    spec = agent.latent_spec()
    assert spec[LATENT_DETER] == ((rssm.deter,), torch.float16)
    assert spec[LATENT_STOCH] == ((rssm.stoch,), torch.uint8)
    data = replay_batch(agent)
    data["is_first"][:, 1:] = False  # one episode per row: step 1 continues step 0
    with torch.no_grad():
        embed = agent.wm.encode(data)
        post, _ = rssm.observe(embed, data["action"], data["is_first"])
        stored = agent._latents({k: v[:, 0] for k, v in post.items()})
        start, rest = agent._context(with_latents(agent, data, stored[LATENT_DETER],
                                                  stored[LATENT_STOCH]))
        assert rest["reward"].shape == (B, T - 1)
        cont, _ = rssm.observe(agent.wm.encode(rest), rest["action"], rest["is_first"], start)
    # Step 1's deterministic state depends only on step 0's state and step 1's action.
    torch.testing.assert_close(cont["deter"][:, 0], post["deter"][:, 1], atol=2e-3, rtol=0)
    zero_start, _ = rssm.observe(embed[:, 1:], data["action"][:, 1:], data["is_first"][:, 1:])
    assert (zero_start["deter"][:, 0] - post["deter"][:, 1]).abs().max() > 1e-2


def test_random_actions_still_carry_the_posterior_for_the_replay_context():
    # Prefill acts at random, but the latent stored for each step must be the posterior of
    # what was observed (with the random action taken), not the zero state.
    agent = make("vector+continuous")
    obs = {"vector": np.ones((B, 5), np.float32), "is_first": np.array([True, True])}
    action, carry = agent.policy(obs, None, mode="random")
    assert action.shape == (B, agent.act_dim) and np.abs(action).max() <= 1
    np.testing.assert_array_equal(carry[1].numpy(), action)  # the next step's prev action
    obs["is_first"][:] = False
    _, carry = agent.policy(obs, carry, mode="random")
    stored = agent.latent_entries(carry)[LATENT_DETER]
    _, same = agent.policy(obs, carry, mode="eval")  # the same posterior update, acting
    assert np.abs(stored.astype(np.float32)).sum() > 0
    next_random = agent.latent_entries(agent.policy(obs, carry, mode="random")[1])
    np.testing.assert_array_equal(next_random[LATENT_DETER],
                                  agent.latent_entries(same)[LATENT_DETER])


def test_a_sequence_without_a_stored_latent_starts_as_an_episode_start():
    # No stored latent (replay context 0, or none written yet): the sequence starts from
    # zeros, so its first step is marked is_first (the official agent does the same).
    agent = make("vector+continuous")
    data = replay_batch(agent)
    data["is_first"][:, 0] = False  # windows that begin mid-episode
    start, out = agent._context(data)
    assert start is None and out["is_first"][:, 0].all()
    assert torch.equal(out["is_first"][:, 1:], data["is_first"][:, 1:])
    assert not data["is_first"][:, 0].any()  # the caller's batch is left alone


def test_train_with_stored_latents_returns_the_new_ones_for_write_back():
    agent = make("vector+continuous")
    data = replay_batch(agent)
    agent.train(data)  # no stored latents: trains from zeros on all T steps
    assert agent.trained_latents() == {}
    deter = torch.rand(B, agent.wm.rssm.deter) - 0.5
    index = torch.randint(0, agent.wm.rssm.classes, (B, agent.wm.rssm.stoch))
    agent.train(with_latents(agent, data, deter, index))
    latents = agent.trained_latents()
    assert latents[LATENT_DETER].shape == (B, T - 1, agent.wm.rssm.deter)
    assert latents[LATENT_DETER].dtype == torch.float16
    assert latents[LATENT_STOCH].shape == (B, T - 1, agent.wm.rssm.stoch)
    assert int(latents[LATENT_STOCH].max()) < agent.wm.rssm.classes
    assert agent.trained_latents() == {}  # handed out once


def test_acting_carry_gives_the_latent_stored_with_the_observation():
    agent = make("image+discrete")
    obs = observation(agent, 3, True)
    assert agent.latent_entries(None) == {}
    _, carry = agent.policy(obs, None)
    entries = agent.latent_entries(carry)
    np.testing.assert_allclose(entries[LATENT_DETER].astype(np.float32),
                               carry[0]["deter"].numpy(), atol=1e-3)
    np.testing.assert_array_equal(entries[LATENT_STOCH], carry[0]["stoch"].argmax(-1).numpy())
