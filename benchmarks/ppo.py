"""PPO baseline with RLlib on our env specs, writing Dreamer-style run directories.

    python -m benchmarks.ppo --env SPEC --frames N [--seed S] [--out DIR]

The env creator wraps `envs.make` and flattens the dict observation for RLlib: `vector` if
the env has one, else the `image` scaled to [0, 1] floats (RLlib's default conv encoder). Each
finished training episode is appended to `OUT/scores.jsonl` with the env frames so far, and
`status.json` is rewritten after every iteration, so `benchmarks.plot` compares PPO and
Dreamer at equal frames. Sampling runs in the driver process (no remote env runners), which
keeps one frame counter for all episodes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from agents.run.cli_args import ArgParser
from agents.run.rundir import RunDir, atomic_write

__all__ = ["EpisodeLog", "FlattenObs", "main", "make_env", "train_ppo"]

ENV_NAME = "dreamjepa-ppo"


class FlattenObs(gym.ObservationWrapper):
    """Turns the dict observation into one array: `vector` if present, else `image`
    (as float32 in [0, 1])."""

    def __init__(self, env: gym.Env, key: str | None = None):
        super().__init__(env)
        spaces = env.observation_space.spaces
        self.key = key or ("vector" if "vector" in spaces else "image")
        if self.key not in spaces:
            raise ValueError(f"observation key {self.key!r} not in {sorted(spaces)}")
        space = spaces[self.key]
        # RLlib's conv encoder expects float input: uint8 frames become [0, 1] floats.
        self._scale = space.dtype == np.uint8
        if self._scale:
            space = gym.spaces.Box(0.0, 1.0, space.shape, np.float32)
        self.observation_space = space

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        value = observation[self.key]
        return value.astype(np.float32) / 255.0 if self._scale else value


class _Counter:
    """Agent steps and env frames summed over every env that logs to one run directory."""

    def __init__(self) -> None:
        self.steps = 0
        self.frames = 0
        self.start = time.time()


_COUNTERS: dict[str, _Counter] = {}


class EpisodeLog(gym.Wrapper):
    """Counts steps and frames and appends each finished episode to `scores.jsonl`."""

    def __init__(self, env: gym.Env, logdir: str | Path):
        super().__init__(env)
        self.path = Path(logdir) / "scores.jsonl"
        self.counter = _COUNTERS.setdefault(str(Path(logdir).resolve()), _Counter())
        self.repeat = int(env.metadata.get("action_repeat", 1))
        self._return, self._length = 0.0, 0

    def reset(self, **kwargs: Any):
        self._return, self._length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.counter.steps += 1
        self.counter.frames += self.repeat
        self._return += float(reward)
        self._length += 1
        if terminated or truncated:
            row = {
                "step": self.counter.steps,
                "frames": self.counter.frames,
                "return": self._return,
                "length": self._length,
                "time": time.time() - self.counter.start,
            }
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        return obs, reward, terminated, truncated, info


def make_env(config: dict[str, Any]) -> gym.Env:
    """RLlib env creator: `envs.make(spec)` with a flat observation and episode logging."""
    import envs

    # Different seeds per sub-env: RLlib passes the worker and vector indices.
    index = getattr(config, "worker_index", 0) * 1000 + getattr(config, "vector_index", 0)
    env = envs.make(config["spec"], seed=int(config.get("seed", 0)) + index)
    env = FlattenObs(env, config.get("obs_key"))
    if config.get("logdir"):
        env = EpisodeLog(env, config["logdir"])
    return env


def _write_status(logdir: Path, steps: int, frames: int, target_steps: int, done: bool) -> None:
    status = {"step": steps, "frames": frames, "target_steps": target_steps, "finished": done}
    atomic_write(RunDir(logdir).status, json.dumps(status, indent=1))


def train_ppo(
    spec: str,
    frames: int,
    logdir: str | Path,
    seed: int = 0,
    batch: int = 4000,
    minibatch: int = 128,
    epochs: int = 10,
    lr: float = 3e-4,
    num_envs: int = 1,
    obs_key: str | None = None,
    log: Any = print,
) -> Path:
    """Train RLlib PPO until `frames` env frames; returns the run directory."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    import envs

    logdir = Path(logdir).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    probe = envs.make(spec, seed=seed)
    repeat = int(probe.metadata.get("action_repeat", 1))
    probe.close()
    target_steps = max(1, frames // repeat)
    RunDir(logdir).scores.unlink(missing_ok=True)  # PPO has no resume: start afresh
    config_dump = {
        "agent": "ppo",
        "seed": seed,
        "env": {"spec": spec, "num_envs": num_envs},
        "run": {"steps": target_steps, "frames": frames},
        "ppo": {"batch": batch, "minibatch": minibatch, "epochs": epochs, "lr": lr},
    }
    atomic_write(RunDir(logdir).config, yaml.safe_dump(config_dump, sort_keys=False))
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    register_env(ENV_NAME, make_env)
    config = (
        PPOConfig()
        .environment(
            ENV_NAME,
            env_config={"spec": spec, "seed": seed, "logdir": str(logdir), "obs_key": obs_key},
        )
        .env_runners(num_env_runners=0, num_envs_per_env_runner=num_envs)
        .training(
            train_batch_size_per_learner=batch, minibatch_size=minibatch, num_epochs=epochs, lr=lr
        )
        .debugging(seed=seed)
    )
    algo = config.build_algo()
    counter = _COUNTERS.setdefault(str(logdir), _Counter())
    counter.steps = counter.frames = 0
    counter.start = time.time()
    try:
        iteration = 0
        while counter.steps < target_steps:
            result = algo.train()
            iteration += 1
            if counter.steps == 0:
                raise RuntimeError("PPO sampled no step through the episode logger")
            ret = result.get("env_runners", {}).get("episode_return_mean", float("nan"))
            log(f"iter {iteration}: {counter.frames} frames, episode_return_mean {ret:.4g}")
            _write_status(logdir, counter.steps, counter.frames, target_steps, False)
        _write_status(logdir, counter.steps, counter.frames, target_steps, True)
    finally:
        algo.stop()
    return logdir


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgParser(description="RLlib PPO baseline on an env spec.")
    parser.add_argument("--env", required=True, help="env spec, e.g. gym:CartPole-v1")
    parser.add_argument("--frames", type=int, required=True, help="env frames to train for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="run directory (default runs/ppo/...)")
    parser.add_argument("--batch", type=int, default=4000, help="env steps per PPO iteration")
    parser.add_argument("--minibatch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--envs", type=int, default=1, help="envs sampled in the driver")
    parser.add_argument(
        "--obs",
        default=None,
        choices=["vector", "image"],
        help="observation key (default: vector if the env has one)",
    )
    args = parser.parse_args(argv)
    if args.frames < 1 or args.batch < args.minibatch:
        parser.error("--frames must be >= 1 and --batch >= --minibatch")
    # Under `python -m` this file is __main__, whose functions cloudpickle copies by value,
    # giving the env creator its own frame counter; the imported module is shared by reference.
    from benchmarks.ppo import train_ppo
    from benchmarks.scores import task_id

    out = args.out or f"runs/ppo/{task_id(args.env)}/seed_{args.seed}"
    logdir = train_ppo(
        args.env,
        args.frames,
        out,
        args.seed,
        args.batch,
        args.minibatch,
        args.epochs,
        args.lr,
        args.envs,
        args.obs,
    )
    print(f"run directory: {logdir}")


if __name__ == "__main__":
    main()
