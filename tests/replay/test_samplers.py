"""Replay samplers are a registry: a new one is one class plus `replay.sampler` in the
config, with no edit to the buffer."""

from __future__ import annotations

import pytest
import torch
from test_sequence_replay import assert_contiguous, fill

from agents.run.config import load_config
from replay import SAMPLERS, ReplayError, SequenceReplay, StreamSliceSampler, register_sampler


class NewestSampler(StreamSliceSampler):
    """Every slice ends at its stream's newest step, or `lag` steps before it."""

    def __init__(self, *, slice_len: int = 1, lag: int = 0) -> None:
        super().__init__(slice_len=slice_len)
        self.lag = int(lag)

    def starts(self, span: torch.Tensor) -> torch.Tensor:
        return (span - 1 - self.lag).clamp(min=0)


@pytest.fixture
def newest():
    register_sampler("newest")(NewestSampler)
    yield
    SAMPLERS.pop("newest")


def _replay(cfg, **kw) -> SequenceReplay:
    """The replay as agents/run/train.py builds it from a config."""
    r = cfg.replay
    return SequenceReplay(400, 2, recency=r.recency, seed=0, sampler=r.sampler,
                          sampler_options=dict(r.sampler_options), **kw)


def test_a_new_sampler_is_one_class_and_config(newest):
    cfg = load_config("gym:CartPole-v1", sets=["replay.sampler=newest",
                                               "replay.sampler_options.lag=3"])
    replay = _replay(cfg)
    fill(replay, 50)
    batch = replay.sample(6, 8)
    assert_contiguous(batch)
    assert (batch["t"][:, -1] == 49 - 3).all()  # the newest full slice, 3 steps back
    assert set(batch["env"][:, 0].tolist()) <= {0, 1}


def test_recency_sampler_and_the_uniform_default():
    fresh = SequenceReplay(4000, 2, seed=5, sampler="recency",
                           sampler_options={"recency_exponent": 1.0})
    uniform = _replay(load_config("gym:CartPole-v1"))
    fill(fresh, 1000)
    fill(uniform, 190)
    starts = torch.cat([fresh.sample(64, 8)["t"][:, 0] for _ in range(10)]).double()
    assert starts.median().item() > 900  # as `recency=1.0` on the uniform sampler
    assert type(uniform._sampler).__name__ == "UniformSampler"


def test_recency_draws_land_on_random_rows_of_the_batch():
    # A report shows a batch's first rows: they must not always be the recency draws.
    replay = SequenceReplay(4000, 1, seed=3, recency=0.25)
    fill(replay, 3000)
    newest_rows = torch.zeros(8)
    for _ in range(40):
        newest_rows += (replay.sample(8, 4)["t"][:, 0] > 2900).double()
    assert newest_rows[:2].sum() < 40 and (newest_rows[2:] > 0).sum() >= 4


def test_bad_sampler_names_and_options_are_one_line():
    with pytest.raises(ReplayError, match="replay sampler 'prio' unknown; allowed: uniform"):
        SequenceReplay(100, 1, sampler="prio")
    with pytest.raises(ReplayError, match="replay sampler 'recency':.*'lag'"):
        SequenceReplay(100, 1, sampler="recency", sampler_options={"lag": 1})
