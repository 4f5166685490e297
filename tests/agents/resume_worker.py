"""Run in a fresh process by test_exact_resume: N updates then a checkpoint ("first"), or a
restore then M updates ("second"), or N + M updates in one go ("straight"), each through
`Trainer.train_step`; writes the agent's parameters and the replay's stored steps to OUT."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.base import make_agent
from agents.run.config import load_config
from agents.run.logger import RunLogger
from agents.run.rundir import RunDir
from agents.run.train import Parts, Trainer
from agents.runtime import seed_everything
from replay import SequenceReplay

N_ENVS, B, T = 2, 4, 8


class StubEnv:
    """Just enough of a vector env for the Trainer's bookkeeping."""

    num_envs = N_ENVS
    metadata: dict = {}
    single_action_space = gym.spaces.Discrete(2)

    def close(self) -> None:
        pass


def filled_replay(seed: int, latent_spec: dict) -> SequenceReplay:
    """50 random steps, each with the agent's latent keys zeroed, as the collector stores
    them before acting."""
    replay = SequenceReplay(1000, N_ENVS, seed=seed)
    rng = np.random.default_rng(0)
    latents = {k: torch.zeros(N_ENVS, *shape, dtype=dtype)
               for k, (shape, dtype) in latent_spec.items()}
    for t in range(50):
        replay.add({**latents, "vector": rng.normal(size=(N_ENVS, 4)).astype(np.float32),
                    "action": np.eye(2, dtype=np.float32)[rng.integers(2, size=N_ENVS)],
                    "reward": rng.normal(size=N_ENVS).astype(np.float32),
                    "is_first": np.full(N_ENVS, t == 0), "is_last": np.zeros(N_ENVS, bool),
                    "is_terminal": np.zeros(N_ENVS, bool)})
    return replay


def main(mode: str, logdir: str, out: str, n: int, m: int) -> None:
    torch.set_num_threads(1)
    cfg = load_config("gym:CartPole-v1", size="1m",
                      overrides={"replay.batch_size": B, "replay.batch_length": T})
    seed_everything(cfg.seed)
    obs = gym.spaces.Dict({"vector": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
    agent = make_agent(cfg.agent, obs, gym.spaces.Discrete(2), cfg, device="cpu",
                       precision="fp32")
    run = RunDir(logdir)
    run.path.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run, Parts(StubEnv(), agent, filled_replay(cfg.seed,
                                                                      agent.latent_spec()),
                                      RunLogger(logdir, tensorboard=False)))
    if mode == "second":
        assert trainer.restore()
    updates = {"straight": n + m, "first": n, "second": m}[mode]
    for _ in range(updates):  # as training does: the replay context's latents written back
        trainer.train_step(B, T)
        trainer.counters["updates"] += 1
    if mode == "first":
        trainer.save()
    # The parameters, and the replay the written-back latents went into.
    state = tensors(agent.state_dict())
    state.update({f"replay.{k}": v.clone() for k, v in
                  trainer.replay.chronological().items() if torch.is_tensor(v)})
    torch.save(state, Path(out))


def tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict (model, optimizer state) by dotted path."""
    out = {}
    items = state.items() if isinstance(state, dict) else enumerate(state) \
        if isinstance(state, list | tuple) else ()
    for key, value in items:
        if torch.is_tensor(value):
            out[f"{prefix}{key}"] = value.detach().clone()
        else:
            out.update(tensors(value, f"{prefix}{key}."))
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
