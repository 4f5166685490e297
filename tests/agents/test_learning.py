"""A tiny Dreamer must solve an env with a known optimum that random play fails."""

import json

import gymnasium as gym
import numpy as np
import pytest
from learning_envs import MatchCueEnv, ReachCueEnv

from agents.run.train import train

ENV_ID = "MatchCue-v0"
if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=MatchCueEnv, kwargs={"k": 3, "length": 10, "hold": True})

REACH_ID = "ReachCue-v0"
if REACH_ID not in gym.registry:
    gym.register(id=REACH_ID, entry_point=ReachCueEnv, kwargs={"length": 10})

# Small enough to train in about a minute on 2 CPU cores.
TINY = {
    "replay.size": 50_000, "env.num_envs": 4, "seed": 0, "threads": 1,
    "replay.batch_size": 16, "replay.batch_length": 16,
    "run.prefill": 400, "run.train_ratio": 64,
    "run.eval_episodes": 20, "run.eval_every": 100000,
    "run.log_every": 5, "run.video": False,
    "opt.lr": 1e-3, "opt.warmup": 10,
}


def test_random_policy_is_far_below_threshold():
    env = MatchCueEnv(k=3, length=10)
    rng = np.random.default_rng(0)
    returns = []
    for ep in range(200):
        env.reset(seed=ep)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(int(rng.integers(3)))
            total += r
            done = term or trunc
        returns.append(total)
    assert np.mean(returns) < 4.0  # 10/3 expected


# Both agent learning tests take ~250 s each on an AVX2-only 2-core CPU (fp32 fast path, no
# native bf16): `slow`, to keep the default run within its ~15-minute budget.
@pytest.mark.slow
def test_dreamer_learns_match_cue(tmp_path, tiny_config):
    logdir = train(tiny_config(f"gym:{ENV_ID}", tmp_path, 4000, base=TINY))
    evals = [json.loads(line) for line in (logdir / "eval_scores.jsonl").read_text().splitlines()]
    final = [e["return"] for e in evals if e["step"] == max(x["step"] for x in evals)]
    assert len(final) == 20
    assert np.mean(final) >= 8.0, f"mean eval return {np.mean(final):.2f} below 8 (optimum 10)"


@pytest.mark.slow
def test_dreamer_learns_continuous_reach_cue(tmp_path, tiny_config):
    logdir = train(tiny_config(f"gym:{REACH_ID}", tmp_path, 4000, base=TINY))
    evals = [json.loads(line) for line in (logdir / "eval_scores.jsonl").read_text().splitlines()]
    final = [e["return"] for e in evals if e["step"] == max(x["step"] for x in evals)]
    assert len(final) == 20
    # Uniform random actions score 3.75 on average; the optimum is 10.
    assert np.mean(final) >= 8.0, f"mean eval return {np.mean(final):.2f} below 8 (optimum 10)"
