"""The trainer stores what an update returns for the steps it replayed (Agent.replay_writes),
wherever in the batch they are, for any stored key."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from agents.base import ReplayWrite
from agents.run.train import Trainer
from replay import SequenceReplay


class _Agent:
    """Writes each trained step's time index plus 0.5 into `score`, from batch step 2 on."""

    replay_context = 0

    def train(self, batch):
        self.seen = batch
        return {}

    def replay_writes(self):
        t = self.seen["t"][:, 2:].float() + 0.5
        return [ReplayWrite({"score": t}, start=2)]


def test_update_values_land_on_the_steps_they_belong_to():
    replay = SequenceReplay(200, 2, seed=0)
    for t in range(40):
        replay.add(TensorDict({"t": torch.full((2,), t), "env": torch.arange(2),
                               "score": torch.zeros(2)}, batch_size=[2]))
    trainer = Trainer.__new__(Trainer)  # only what train_step uses
    trainer.context, trainer.replay, trainer.agent = 0, replay, _Agent()
    trainer.train_step(4, 6)
    data = replay.chronological()
    written = data["score"] != 0
    assert written.any()
    # Every written value is its own step's t + 0.5, and only trained steps (not the first
    # two of each slice) were written.
    assert torch.equal(data["score"][written], data["t"][written].float() + 0.5)
    rows, envs = written.nonzero(as_tuple=True)
    seen = trainer.agent.seen
    trained = {(int(t), int(e)) for t, e in zip(seen["t"][:, 2:].flatten(),
                                                 seen["env"][:, 2:].flatten())}
    assert {(int(data["t"][r, e]), int(e)) for r, e in zip(rows, envs)} <= trained
