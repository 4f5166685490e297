"""The training loop behind `dreamer-run`: collect, replay, train at a fixed ratio,
evaluate, log, checkpoint and resume.

`train(cfg)` is the API: it takes a resolved `Config` (see `agents.run.config.load_config`);
argv belongs to the CLI alone. `build_parts` makes the env, agent, replay and logger, and
`Trainer` receives them, so a test can hand it a fake agent.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from agents.base import Agent, make_agent
from agents.behaviors import check_behavior
from agents.compiled import resolve_compile
from agents.run.checkpoint import CheckpointError, GracefulExit, load_checkpoint, save_checkpoint
from agents.run.collector import Collector
from agents.run.compat import saved_rng_state
from agents.run.config import Config, ConfigError, absolute_encoder, save_config
from agents.run.logger import Progress, RunLogger, open_loop_video
from agents.run.rundir import AGENT_FILE, REPLAY, STATUS, RunDir
from agents.run.schedules import Every, Ratio
from agents.run.seeding import EVAL_ENVS, env_seed, rng_state, set_rng_state, streams_aside
from agents.runtime import describe_machine, seed_everything, select_device, set_malloc, set_threads
from replay import SequenceReplay, make_sampler

Report = Callable[[dict], None]
# Agents report updates skipped for a non-finite gradient under these keys (see LaProp.step).
SKIPPED_IN_A_ROW, SKIPPED = "train/skipped_in_a_row", "train/skipped_updates"


class RunError(RuntimeError):
    """The run stopped for a reason the CLI reports in one line."""


class DivergedError(RunError):
    """Training produced non-finite gradients or parameters; the run stopped."""


class SaveError(RunError):
    """A checkpoint could not be written (a full disk, a read-only folder)."""

# Keys a resumed run may change: they steer logging, evaluation, budget and speed, not what
# the checkpoint holds. Any other difference from the run's config.yaml is refused.
RESUMABLE = ("logdir", "device", "precision", "conv_precision", "compile", "threads", "malloc",
             "env.eval_envs", "model.diag_every", "run.steps", "run.log_every",
             "run.save_every", "run.eval_every", "run.eval_episodes", "run.eval_policy",
             "run.report_every", "run.video")
EVAL_POLICIES = ("sample", "mode")


def default_logdir(cfg: Config) -> Path:
    spec = cfg.env.spec.replace(":", "-").replace("/", "_")
    obs = cfg.env.options.get("obs")
    if obs and not spec.endswith(obs):
        spec += f"-{obs}"
    return Path("runs") / spec / f"{cfg.agent}-{cfg.size}-seed{cfg.seed}"


def run_dir(cfg: Config, logdir: str | Path | None = None) -> RunDir:
    """The run directory: `logdir`, else the config's `logdir`, else the default layout."""
    return RunDir(logdir or cfg.logdir or default_logdir(cfg))


def resume_changes(cfg: Config, run: RunDir) -> dict[str, tuple[Any, Any]]:
    """Keys whose value differs from the run's saved config: {key: (old, new)}. Raises a
    one-line ConfigError when one of them may not change on resume."""
    if not run.exists():
        return {}
    old, new = Config.from_yaml(run.config).flat(), cfg.flat()
    # A run from before encoder paths were kept absolute names its file relative to where
    # it was started: the same command from there names the same file.
    key = "model.encoder.kind"
    if isinstance(old.get(key), str):
        old[key] = absolute_encoder(old[key])
    changed = {k: (old.get(k), v) for k, v in new.items()
               if (k in old or k.startswith("env.options.")) and old.get(k) != v}
    changed.update({k: (v, None) for k, v in old.items()
                    if k.startswith("env.options.") and k not in new})
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        diff = ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ConfigError(
            f"{run.path} holds a run trained with a different config ({diff}); resuming may "
            f"change only {', '.join(RESUMABLE[1:])}: use another --logdir for a new run, or "
            "--set KEY=VALUE with the run's values to go on as it was trained")
    return changed


def make_eval_env(cfg: Config, num_envs: int, seed: int, video: bool, obs_space):
    """Vector env for evaluation; asks for rendered frames only when the
    observations hold no image to make the video from."""
    extra = {"render_mode": "rgb_array"} if video and "image" not in obs_space.spaces else {}
    return envs.make_vector(cfg.env.spec, num_envs, seed=seed, **eval_options(cfg), **extra)


def eval_act_mode(cfg: Config) -> str:
    """The `Agent.policy` mode of a run's evaluation (`run.eval_policy`): `sample` acts as in
    training (the official evaluation), `mode` takes the policy's most likely action."""
    return "eval" if cfg.run.eval_policy == "mode" else "train"


def eval_options(cfg: Config) -> dict[str, Any]:
    """The training env's options, with Atari distractor backgrounds from held-out games:
    a run trained on `atari`/`atari:train` is evaluated on `atari:eval`, so its eval return
    measures robustness to backgrounds it never saw (an explicit game list is kept)."""
    options = cfg.env.options.to_dict()
    if options.get("distractor") in ("atari", "atari:train"):
        options["distractor"] = "atari:eval"
    return options


def nonfinite(state: Any, prefix: str = "") -> str:
    """The first tensor path in a nested state dict holding a NaN or inf ('' if none)."""
    if torch.is_tensor(state):
        return "" if not state.is_floating_point() or bool(torch.isfinite(state).all()) \
            else prefix.rstrip(".")
    items = state.items() if isinstance(state, dict) else \
        enumerate(state) if isinstance(state, list | tuple) else ()
    for key, value in items:
        found = nonfinite(value, f"{prefix}{key}.")
        if found:
            return found
    return ""


@dataclass
class Parts:
    """What a training run is made of."""

    env: Any
    agent: Agent
    replay: SequenceReplay
    logger: RunLogger


def build_parts(cfg: Config, run: RunDir) -> Parts:
    """Env and agent first, so that a bad spec or agent leaves no run directory behind;
    then the directory, the replay and the logger."""
    if cfg.run.eval_policy not in EVAL_POLICIES:
        raise ConfigError(f"run.eval_policy {cfg.run.eval_policy!r} unknown; allowed: "
                          f"{', '.join(EVAL_POLICIES)}")
    envs_n, rcfg = int(cfg.env.num_envs), cfg.replay
    need = int(rcfg.batch_length) + int(rcfg.context)
    if int(rcfg.size) // envs_n < need:  # it would never sample a batch, and never train
        raise ConfigError(
            f"replay.size {rcfg.size} holds {int(rcfg.size) // envs_n} steps per env "
            f"({envs_n} envs), fewer than a training sequence (replay.batch_length "
            f"{rcfg.batch_length} + replay.context {rcfg.context}); use replay.size >= "
            f"{need * envs_n}")
    try:  # a bad sampler or behaviour fails before anything is built or written
        make_sampler(cfg.replay.sampler, **cfg.replay.sampler_options.to_dict())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        check_behavior(cfg.run.behavior, cfg)
    except ValueError as exc:
        raise ConfigError(f"run.behavior {cfg.run.behavior!r}: {exc}") from None
    device, precision = select_device(cfg.device, cfg.precision)
    compile = resolve_compile(cfg.compile, device)
    set_threads(cfg.threads)
    try:
        set_malloc(cfg.malloc)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    seed_everything(cfg.seed)
    env = envs.make_vector(cfg.env.spec, cfg.env.num_envs, seed=env_seed(cfg.seed),
                           **cfg.env.options.to_dict())
    try:
        agent = make_agent(cfg.agent, env.single_observation_space, env.single_action_space,
                           cfg, device=device, precision=precision, compile=compile)
    except BaseException:
        env.close()
        raise
    run.path.mkdir(parents=True, exist_ok=True)
    rcfg = cfg.replay
    replay = SequenceReplay(int(rcfg.size), cfg.env.num_envs, recency=rcfg.recency,
                            seed=cfg.seed, sampler=rcfg.sampler,
                            sampler_options=rcfg.sampler_options.to_dict(),
                            directory=str(run.path / REPLAY) if rcfg.on_disk else None)
    return Parts(env, agent, replay, RunLogger(run.path))


class Trainer:
    """One training run over given parts; `run()` drives it to `run.steps` agent steps."""

    def __init__(self, cfg: Config, run: RunDir, parts: Parts, report: Report | None = None,
                 escalate_signals: bool = True):
        self.cfg, self.rundir, self.report_fn = cfg, run, report
        # `status.json`'s `stopped`: the signal that ended this start early (None otherwise),
        # how a suite tells a run the user stopped from one that returned for another reason.
        self.stopped: str | None = None
        self.escalate_signals = escalate_signals
        self.env, self.agent = parts.env, parts.agent
        self.replay, self.logger = parts.replay, parts.logger
        self.repeat = int(self.env.metadata.get("action_repeat", 1))
        self.num_envs = int(self.env.num_envs)
        # cpu_s: CPU-seconds of this process (all its threads; env worker processes, which
        # pixel envs use, are not counted), summed over every start; None when the run began
        # before it was counted.
        self.counters = {"step": 0, "updates": 0, "train_start": -1, "time": 0.0,
                         "cpu_s": 0.0, "last_eval": 0, "last_report": 0}
        # Duck-typed agents without the replay-context hooks (test fakes) store no latents.
        spec = getattr(self.agent, "latent_spec", dict)()
        self.collector = Collector(self.env, self.replay, spec,
                                   getattr(self.agent, "latent_entries", None))
        # Replay context: batches this many steps longer, whose first steps seed the state.
        self.context = int(self.agent.replay_context) if spec else 0

    # -- persistence -------------------------------------------------------------
    def restore(self, warn: Callable[[str], None] = print) -> bool:
        """Load the newest checkpoint that loads whole (agent, counters, replay); warn in one
        line about each that does not. Whether one was loaded."""
        folders = self.rundir.checkpoints()
        if not folders:
            self.logger.truncate_after(0)  # a run that died before its first checkpoint
            return False
        initial = dict(self.counters)
        failed: list[Path] = []
        for folder in folders:
            try:
                state = load_checkpoint(folder / AGENT_FILE)
                self.agent.load_state_dict(state["agent"])
                self.counters = {**initial, "cpu_s": None, **state["counters"]}
                self.replay.load(folder / REPLAY)
                if saved_rng_state(state) is not None:
                    set_rng_state(saved_rng_state(state))
            except Exception as err:  # noqa: BLE001 - any failure means: try the older one
                reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                warn(f"warning: checkpoint {folder} does not load ({type(err).__name__}: "
                     f"{reason[:200]}); trying an older one")
                failed.append(folder)
                continue
            # The newer ones that did not load step aside: left in place, the next save would
            # delete the one just loaded (`checkpoint.prev`) and keep a broken one as backup.
            for bad in failed:
                shutil.rmtree(bad.with_name(bad.name + ".bad"), ignore_errors=True)
                bad.rename(bad.with_name(bad.name + ".bad"))
                warn(f"kept {bad} as {bad.name}.bad")
            self.logger.truncate_after(self.counters["step"])
            # The envs restart: from seeds of this resume point, not the run's first ones,
            # which would replay the opening episodes (start states, distractor videos,
            # sticky-action draws) at every resume.
            self.collector.reset_seed = env_seed(self.cfg.seed, self.counters["step"])
            added = self.replay.add_keys(self.collector.latent_spec)
            if added:  # e.g. a frozen encoder's embeddings, stored since this run began
                warn(f"replay of {folder} holds no {', '.join(added)}: stored steps start "
                     "without them")
            return True
        raise CheckpointError(f"no checkpoint in {self.rundir.path} loads (tried "
                              f"{', '.join(f.name for f in folders)}); move them away to start "
                              "afresh")

    def save(self) -> None:
        """Checkpoint agent + optimizer + replay + counters; swapped in atomically. Never
        over good checkpoints with non-finite parameters."""
        state = self.agent.state_dict()
        bad = nonfinite(state)
        if bad:
            raise DivergedError(f"parameters are not finite ({bad}); not writing a checkpoint: "
                                f"{self.rundir.path} keeps the last good one")

        def fill(folder: Path) -> None:
            self.logger.sync()  # on disk before the checkpoint is marked whole
            save_checkpoint(folder / AGENT_FILE, {"agent": state,
                                                  "counters": dict(self.counters),
                                                  "rng": rng_state()})
            self.replay.save(folder / REPLAY)

        try:
            self.rundir.write_checkpoint(fill)
            self._status()
        except OSError as err:
            # Stop rather than train on without a way back: the previous checkpoint is whole.
            reason = err.strerror or str(err)
            raise SaveError(f"cannot write a checkpoint in {self.rundir.path} ({reason}); the "
                            "previous checkpoint is intact: free space or fix the folder, then "
                            "rerun the same command to resume") from None

    def _status(self) -> None:
        step, target = self.counters["step"], int(self.cfg.run.steps)
        self.logger.status(step=step, frames=step * self.repeat, target_steps=target,
                           finished=step >= target, updates=self.counters["updates"],
                           cpu_s=self.counters["cpu_s"], stopped=self.stopped)

    @property
    def finished(self) -> bool:
        return self.counters["step"] >= int(self.cfg.run.steps)

    # -- the loop ------------------------------------------------------------------
    def _updates(self) -> Ratio:
        """Updates due so that replayed steps (B x T per update) track `train_ratio` per
        agent step, counted from the collect step in which training started."""
        c, rcfg = self.counters, self.cfg.replay
        ratio = Ratio(self.cfg.run.train_ratio / (rcfg.batch_size * rcfg.batch_length))
        if c["train_start"] >= 0:
            ratio.start(c["train_start"] - self.num_envs, done=c["updates"])
        return ratio

    def run(self) -> None:
        cfg, c = self.cfg, self.counters
        B, T = cfg.replay.batch_size, cfg.replay.batch_length
        updates = self._updates()
        log_due, save_due = Every(cfg.run.log_every), Every(cfg.run.save_every)
        eval_due = Every(cfg.run.eval_every, last=c["last_eval"])
        report_due = Every(cfg.run.report_every, last=c["last_report"])
        now = time.time()
        log_due.last = save_due.last = now
        train_policy = lambda obs, carry: self.agent.policy(obs, carry, mode="train")
        random_policy = lambda obs, carry: self.agent.policy(obs, carry, mode="random")
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        returns: list[float] = []
        start_time, start_step, start_clock = c["time"], c["step"], now
        start_cpu, start_process = c["cpu_s"], time.process_time()
        total = int(cfg.run.steps)
        progress = Progress(total, c["step"], self.repeat, every=max(cfg.run.log_every, 1))
        with GracefulExit(escalate=self.escalate_signals) as stop:
            while c["step"] < total and not stop.requested:
                prefill = c["step"] < cfg.run.prefill
                for ep in self.collector.collect(random_policy if prefill else train_policy, 1):
                    returns.append(ep["return"])
                    step = c["step"] + self.num_envs
                    self.logger.episode({"step": step, "frames": step * self.repeat,
                                         "return": ep["return"], "length": ep["length"],
                                         "env": ep["env"], "time": c["time"]})
                c["step"] += self.num_envs
                c["time"] = start_time + time.time() - start_clock
                if start_cpu is not None:
                    c["cpu_s"] = start_cpu + time.process_time() - start_process
                if not prefill and self.replay.can_sample(T + self.context):
                    if c["train_start"] < 0:
                        c["train_start"] = c["step"]
                        updates.start(c["step"] - self.num_envs)
                    for _ in range(updates(c["step"])):
                        metrics = self.train_step(B, T)
                        for k, v in metrics.items():
                            sums[k] += v
                            counts[k] += 1
                        c["updates"] += 1
                        if metrics.get(SKIPPED_IN_A_ROW, 0) >= cfg.run.max_bad_updates:
                            self._log(sums, counts, returns, rate=0.0)
                            self._stop_diverged(int(metrics[SKIPPED_IN_A_ROW]))
                progress.update(self.num_envs, last_return=returns[-1] if returns else None)
                now = time.time()
                if log_due(now) or self.finished:
                    rate = (c["step"] - start_step) / max(now - start_clock, 1e-6)
                    self._log(sums, counts, returns, rate)
                    sums.clear(), counts.clear(), returns.clear()
                if eval_due(c["step"]) or self.finished:
                    self.evaluate()
                if c["updates"] and cfg.run.video and report_due(c["step"]):
                    self.open_loop_report()
                if save_due(now):
                    self.save()
            # Still inside the guard: a signal during the last save is taken as a request
            # (or, escalating, as a second signal), not as the default KeyboardInterrupt.
            progress.close()
            if start_cpu is not None:  # the last pass's updates, evaluation and report too
                c["cpu_s"] = start_cpu + time.process_time() - start_process
            self.stopped = stop.signal if stop.requested and not self.finished else None
            self.save()

    def train_step(self, batch_size: int, length: int) -> dict[str, float]:
        """One update on a replayed batch; what the update returns for the steps it trained
        on (`Agent.replay_writes`: the replay context's latents) goes back to those steps."""
        K = self.context
        batch, (rows, envs) = self.replay.sample(batch_size, length + K, return_index=True)
        metrics = self.agent.train(batch)
        # An agent outside the Agent base class (duck-typed) may have no replay_writes.
        for write in getattr(self.agent, "replay_writes", list)():
            width = next(iter(write.values.values())).shape[1]
            span = slice(write.start, write.start + width)
            self.replay.write((rows[:, span], envs[:, span]), write.values)
        return metrics

    def _stop_diverged(self, in_a_row: int) -> None:
        """Stop after `run.max_bad_updates` skipped updates in a row. Skipped updates change
        nothing, so the checkpoint written now holds the model from before the first one."""
        self.save()
        raise DivergedError(
            f"{in_a_row} updates in a row had non-finite gradients (NaN or inf); stopped at "
            f"step {self.counters['step']} with a checkpoint from before the first of them. "
            "Lower opt.lr or check the env's rewards and observations")

    def close(self) -> None:
        self.logger.close()
        self.env.close()

    def _log(self, sums, counts, returns, rate: float) -> None:
        c = self.counters
        metrics = {k: sums[k] / counts[k] for k in sums}
        if returns:
            metrics["episode/return"] = float(np.mean(returns))
            metrics["episode/count"] = len(returns)
        metrics.update(self.replay.stats())
        metrics.update({"replay/size": len(self.replay), "perf/agent_steps_per_s": rate,
                        "perf/updates": c["updates"], "frames": c["step"] * self.repeat})
        if c["cpu_s"] is not None:
            metrics["perf/cpu_s"] = c["cpu_s"]
        self.logger.scalars(metrics, c["step"])
        if self.report_fn is not None:
            self.report_fn({"step": c["step"], **metrics})

    def evaluate(self) -> None:
        c, cfg = self.counters, self.cfg
        c["last_eval"] = c["step"]
        if cfg.run.eval_episodes <= 0 or c["updates"] == 0:
            return
        video = bool(cfg.run.video)
        # A new episode at every evaluation (start states, held-out distractor games).
        seed = env_seed(cfg.seed, c["step"], EVAL_ENVS)
        env = make_eval_env(cfg, cfg.env.eval_envs, seed, video, self.env.single_observation_space)
        try:
            mode = eval_act_mode(cfg)
            policy = lambda obs, carry: self.agent.policy(obs, carry, mode=mode)
            with streams_aside(self.replay.sampling_generator):  # training's draws unmoved
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
        with streams_aside(self.replay.sampling_generator):  # training's draws unmoved
            out = self.agent.report(self.replay.sample(4, cfg.replay.batch_length + self.context))
        video = out.pop("openl", None)
        self.logger.scalars(out, c["step"])
        if video is not None:
            truth, pred = video
            frames = np.concatenate([open_loop_video(truth[i], pred[i]) for i in range(len(truth))],
                                    axis=1)  # stack the sequences vertically
            self.logger.video("openl", frames, c["step"])


def _says_finished(status: Path) -> bool:
    try:
        return bool(json.loads(status.read_text()).get("finished"))
    except (OSError, ValueError):
        return False


def train(cfg: Config, logdir: str | Path | None = None, report: Report | None = None,
          log: Callable[[str], None] = print, escalate_signals: bool = True) -> Path:
    """Train (or resume) the run that `cfg` describes; returns the run directory.

    `report` receives a flat metrics dict (`step`, `frames`, `episode/return`,
    `eval/return`, ...) every time metrics are logged (Ray Tune hooks in here). The
    config file is (re)written only once the run's checkpoint has loaded.
    `escalate_signals=False` (suite runs on Ray): a second SIGINT/SIGTERM/SIGHUP does not
    interrupt the checkpoint the first one asked for."""
    run = run_dir(cfg, logdir)
    changed = resume_changes(cfg, run)
    parts = build_parts(cfg, run)
    trainer = Trainer(cfg, run, parts, report, escalate_signals)
    try:
        resumed = trainer.restore(warn=log)
        save_config(cfg, run.config)
        run.record_machine({"step": trainer.counters["step"],
                            "updates": trainer.counters["updates"], **describe_machine()})
        total, step = int(cfg.run.steps), trainer.counters["step"]
        if changed:
            log("applied on resume: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                   for k, (a, b) in changed.items()))
        if resumed and trainer.finished:
            if not _says_finished(run.path / STATUS):  # a budget below where it stopped
                trainer._status()
            log(f"already finished ({step} of {total} steps); nothing to do: {run.path}")
            return run.path
        if resumed:
            log(f"resuming from step {step} of {total} ({trainer.counters['updates']} updates)"
                f": {run.path}")
        trainer.run()
    finally:
        trainer.close()
    return run.path
