"""The training loop behind `dreamer-run`: collect, replay, train at a fixed
ratio, evaluate, log, checkpoint and resume."""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from agents.base import make_agent
from agents.checkpoint import GracefulExit, load_checkpoint, save_checkpoint
from agents.cli_args import build_config, parse_run_args
from agents.collector import Collector
from agents.config import Config, save_config
from agents.logger import Progress, RunLogger, open_loop_video
from replay import SequenceReplay

CKPT_DIR = "checkpoint"


def select_device(device: str, precision: str) -> tuple[torch.device, str]:
    """CUDA when present (bf16 autocast), else CPU with fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    return dev, precision


def default_logdir(cfg: Config) -> Path:
    spec = cfg.env.spec.replace(":", "-").replace("/", "_")
    obs = cfg.env.options.get("obs")
    if obs and not spec.endswith(obs):
        spec += f"-{obs}"
    return Path("runs") / spec / f"{cfg.agent}-{cfg.size}-seed{cfg.seed}"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(cfg: Config, device: torch.device, precision: str, num_envs: int | None = None,
          **env_kwargs: Any):
    """Vector env and agent for a resolved config."""
    env = envs.make_vector(cfg.env.spec, num_envs or cfg.env.num_envs, seed=cfg.seed,
                           **cfg.env.options.to_dict(), **env_kwargs)
    agent = make_agent(cfg.agent, env.single_observation_space, env.single_action_space, cfg,
                       device=device, precision=precision)
    return env, agent


def make_eval_env(cfg: Config, num_envs: int, seed: int, video: bool, obs_space):
    """Vector env for evaluation; asks for rendered frames only when the
    observations hold no image to make the video from."""
    extra = {"render_mode": "rgb_array"} if video and "image" not in obs_space.spaces else {}
    return envs.make_vector(cfg.env.spec, num_envs, seed=seed, **cfg.env.options.to_dict(),
                            **extra)


class Trainer:
    """State of one training run; `run()` drives it to `run.steps` agent steps."""

    def __init__(self, cfg: Config, logdir: Path, report: Callable[[dict], None] | None = None):
        self.cfg, self.logdir, self.report_fn = cfg, logdir, report
        self.device, precision = select_device(cfg.device, cfg.precision)
        torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
        seed_everything(cfg.seed)
        self.env, self.agent = build(cfg, self.device, precision)
        self.repeat = int(self.env.metadata.get("action_repeat", 1))
        self.num_envs = cfg.env.num_envs
        rcfg = cfg.replay
        self.replay = SequenceReplay(
            int(rcfg.size), self.num_envs, recency=rcfg.recency, seed=cfg.seed,
            directory=str(logdir / "replay") if rcfg.on_disk else None)
        self.collector = Collector(self.env, self.replay)
        self.counters = {"step": 0, "updates": 0, "train_start": -1, "time": 0.0,
                         "last_eval": 0, "last_report": 0}
        self.logger = RunLogger(logdir)
        self._restore()

    # -- persistence -------------------------------------------------------------
    def _restore(self) -> None:
        ckpt = self.logdir / CKPT_DIR
        if not ckpt.exists() and (self.logdir / f"{CKPT_DIR}.old").exists():
            ckpt = self.logdir / f"{CKPT_DIR}.old"  # crashed between the two renames
        if not (ckpt / "agent.pt").exists():
            return
        state = load_checkpoint(ckpt / "agent.pt")
        self.agent.load_state_dict(state["agent"])
        self.counters.update(state["counters"])
        self.replay.load(ckpt / "replay")
        self.logger.truncate_after(self.counters["step"])
        print(f"resumed from {ckpt} at step {self.counters['step']}")

    def save(self) -> None:
        """Checkpoint agent + optimizer + replay + counters; swapped in atomically."""
        tmp, final, old = (self.logdir / f"{CKPT_DIR}{s}" for s in (".tmp", "", ".old"))
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_checkpoint(tmp / "agent.pt", {"agent": self.agent.state_dict(),
                                           "counters": dict(self.counters)})
        self.replay.save(tmp / "replay")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self._status()

    def _status(self) -> None:
        step = self.counters["step"]
        target = int(self.cfg.run.steps)
        self.logger.status(step=step, frames=step * self.repeat, target_steps=target,
                           finished=step >= target, updates=self.counters["updates"])

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        cfg, c = self.cfg, self.counters
        B, T = cfg.replay.batch_size, cfg.replay.batch_length
        ratio = cfg.run.train_ratio / (B * T)
        total = int(cfg.run.steps)
        train_policy = lambda obs, carry: self.agent.policy(obs, carry, mode="train")
        random_policy = lambda obs, carry: self.agent.policy(obs, carry, mode="random")
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        returns: list[float] = []
        last_log = last_save = time.time()
        start_time, start_step, start_clock = c["time"], c["step"], time.time()
        progress = Progress(total, c["step"], self.repeat)
        with GracefulExit() as stop:
            while c["step"] < total and not stop.requested:
                prefill = c["step"] < cfg.run.prefill
                for ep in self.collector.collect(random_policy if prefill else train_policy, 1):
                    returns.append(ep["return"])
                    self.logger.episode({"step": c["step"] + self.num_envs,
                                         "frames": (c["step"] + self.num_envs) * self.repeat,
                                         "return": ep["return"], "length": ep["length"],
                                         "time": c["time"]})
                c["step"] += self.num_envs
                c["time"] = start_time + time.time() - start_clock
                if not prefill and self.replay.can_sample(T):
                    if c["train_start"] < 0:
                        c["train_start"] = c["step"]
                    due = int((c["step"] - c["train_start"] + self.num_envs) * ratio) - c["updates"]
                    for _ in range(max(0, due)):
                        for k, v in self.agent.train(self.replay.sample(B, T)).items():
                            sums[k] += v
                            counts[k] += 1
                        c["updates"] += 1
                progress.update(self.num_envs, last_return=returns[-1] if returns else None)
                now = time.time()
                if now - last_log >= cfg.run.log_every or c["step"] >= total:
                    rate = (c["step"] - start_step) / max(now - start_clock, 1e-6)
                    self._log(sums, counts, returns, rate)
                    sums.clear(), counts.clear(), returns.clear()
                    last_log = now
                if c["step"] - c["last_eval"] >= cfg.run.eval_every or c["step"] >= total:
                    self.evaluate()
                if (c["updates"] and cfg.run.video
                        and c["step"] - c["last_report"] >= cfg.run.report_every):
                    self.open_loop_report()
                if now - last_save >= cfg.run.save_every:
                    self.save()
                    last_save = now
        progress.close()
        self.save()
        self.logger.close()
        self.env.close()

    def _log(self, sums, counts, returns, rate: float) -> None:
        c = self.counters
        metrics = {k: sums[k] / counts[k] for k in sums}
        if returns:
            metrics["episode/return"] = float(np.mean(returns))
            metrics["episode/count"] = len(returns)
        metrics.update({"replay/size": len(self.replay), "perf/agent_steps_per_s": rate,
                        "perf/updates": c["updates"], "frames": c["step"] * self.repeat})
        self.logger.scalars(metrics, c["step"])
        if self.report_fn is not None:
            self.report_fn({"step": c["step"], **metrics})

    def evaluate(self) -> None:
        c, cfg = self.counters, self.cfg
        c["last_eval"] = c["step"]
        if cfg.run.eval_episodes <= 0 or c["updates"] == 0:
            return
        video = bool(cfg.run.video)
        env = make_eval_env(cfg, cfg.env.eval_envs, cfg.seed + 10_000, video,
                            self.env.single_observation_space)
        try:
            policy = lambda obs, carry: self.agent.policy(obs, carry, mode="eval")
            records, frames = Collector(env).run_episodes(policy, cfg.run.eval_episodes,
                                                          render=video)
        finally:
            env.close()
        for r in records:
            self.logger.episode({"step": c["step"], "frames": c["step"] * self.repeat,
                                 "return": r["return"], "length": r["length"], "time": c["time"]},
                                eval=True)
        metrics = {"eval/return": float(np.mean([r["return"] for r in records])),
                   "eval/length": float(np.mean([r["length"] for r in records]))}
        self.logger.scalars(metrics, c["step"])
        if video and frames:
            self.logger.video("eval", np.stack(frames), c["step"])
        if self.report_fn is not None:
            self.report_fn({"step": c["step"], "frames": c["step"] * self.repeat, **metrics})

    def open_loop_report(self) -> None:
        c, cfg = self.counters, self.cfg
        c["last_report"] = c["step"]
        T = cfg.replay.batch_length
        out = self.agent.report(self.replay.sample(4, T))
        video = out.pop("openl", None)
        self.logger.scalars(out, c["step"])
        if video is not None:
            truth, pred = video
            frames = np.concatenate([open_loop_video(truth[i], pred[i]) for i in range(len(truth))],
                                    axis=1)  # stack the sequences vertically
            self.logger.video("openl", frames, c["step"])


def run(argv: Sequence[str] | None = None, report: Callable[[dict], None] | None = None) -> Path:
    """Train as `dreamer-run ARGV` would; returns the run directory.

    `report` receives a flat metrics dict (`step`, `frames`, `episode/return`,
    `eval/return`, ...) every time metrics are logged (Ray Tune hooks in here)."""
    args = parse_run_args(argv)
    cfg = build_config(args)
    logdir = Path(cfg.logdir) if cfg.logdir else default_logdir(cfg)
    logdir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, logdir / "config.yaml")
    trainer = Trainer(cfg, logdir, report)
    trainer.run()
    return logdir
