"""Training's random streams: evaluations and reports draw their own."""

import random

import numpy as np
import torch

from agents.run.inference import load_agent
from agents.run.seeding import streams_aside
from agents.run.train import train
from replay import SequenceReplay

SMALL = {"run.report_every": 1_000_000, "run.video": False}


def test_streams_aside_restores_the_global_streams_and_the_replays():
    # A block inside `streams_aside` draws what it likes; the global streams and the
    # replay's sampler continue as if it had not run.
    replay = SequenceReplay(capacity=64, num_envs=2, seed=0)
    for t in range(10):
        replay.add({"x": torch.full((2, 1), float(t)), "is_first": torch.tensor([t == 0] * 2)})

    def draws():
        return (torch.rand(3), np.random.rand(3), random.random(), replay.sample(2, 4)["x"])

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = replay.sampling_generator.get_state()
    expected = draws()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    replay.sampling_generator.set_state(state)
    with streams_aside(replay.sampling_generator):
        draws(), draws()  # an evaluation's and a report's own randomness
    for got, want in zip(draws(), expected, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(want))


def test_evaluations_change_nothing_that_training_draws(tmp_path, tiny_config):
    # The same run with and without evaluations (run.eval_every and run.eval_episodes may
    # change on a resume) ends with the same parameters.
    params = []
    for name, episodes in (("quiet", 0), ("evaluated", 1)):
        cfg = tiny_config("gym:CartPole-v1", tmp_path / name, 240,
                          {**SMALL, "run.eval_every": 80, "run.eval_episodes": episodes})
        agent, _ = load_agent(train(cfg))
        params.append([t.detach().clone() for t in agent.wm.state_dict().values()])
    assert (tmp_path / "evaluated" / "eval_scores.jsonl").read_text().strip()
    assert all(torch.equal(a, b) for a, b in zip(*params, strict=True))
