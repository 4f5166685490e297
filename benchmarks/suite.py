"""Shared suite runner: one Ray task per (task, seed) training run, then one score file.

`benchmarks.atari100k` and `benchmarks.dmc` only say which env specs to run. Each run's
config is resolved here (bad overrides fail before Ray starts) and trained with
`agents.run.train.train(cfg)` in its own Ray worker (one run per worker process), writing to
`OUT/<task>/seed_<s>/`. Runs whose `status.json` says finished are skipped; unfinished ones
are started again with the same logdir, which resumes them. A failed run is reported and the
others go on. A run stopped by a signal (SIGINT to its `ray::_train` worker: it finishes its
step, checkpoints and exits) pauses the suite (`run_suite`): queued runs are dropped, running
ones are stopped the same way, the driver reports and exits with status 75, and the same
command resumes everything later. At the end every
run's scores go to `OUT/scores.json.gz` (official format) and the aggregate table to
`OUT/summary.md`, with plots beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.run.cli_args import add_reference_arg, add_set_arg
from agents.run.config import Config, load_config
from benchmarks.ray_launch import add_ray_args, gpus_per_task, init_ray
from benchmarks.scores import Run, ScoreFileError, read_run_dir, read_status, task_id, write_scores

__all__ = [
    "RunSpec",
    "SuiteError",
    "add_common_args",
    "collect",
    "init_ray",
    "is_finished",
    "paused",
    "plan",
    "run_suite",
    "suite_main",
]


class SuiteError(ValueError):
    """Bad suite arguments (unknown task, non-positive budget...)."""


@dataclass
class RunSpec:
    """One training run of a suite: env spec, seed, logdir and its resolved config."""

    env: str
    seed: int
    logdir: Path
    steps: int
    config: Config
    group: str = ""  # a prefix that keeps names unique when one env and seed recur (compare)

    @property
    def task(self) -> str:
        return task_id(self.env)

    @property
    def name(self) -> str:
        return f"{self.group}{self.task}/seed_{self.seed}"


def plan(
    envs: Sequence[str],
    seeds: int,
    frames: int,
    repeat: int,
    out: str | Path,
    agent: str = "dreamerv3",
    size: str | None = None,
    sets: Sequence[str] = (),
) -> list[RunSpec]:
    """Every (env, seed) run with its config; agent steps = frames / action repeat."""
    if seeds < 1:
        raise SuiteError(f"--seeds must be >= 1, got {seeds}")
    if frames < repeat:
        raise SuiteError(f"--frames must be >= the action repeat ({repeat}), got {frames}")
    steps = frames // repeat
    specs = []
    for env in envs:
        for seed in range(seeds):
            logdir = Path(out).resolve() / task_id(env) / f"seed_{seed}"
            flags = {"run.steps": steps, "seed": seed, "logdir": str(logdir)}
            try:
                cfg = load_config(env, size=size, agent=agent, flags=flags, sets=sets)
            except ValueError as err:  # ConfigError, EnvSpecError
                raise SuiteError(str(err)) from None
            own = cfg.env.options.to_dict().get("repeat", repeat)
            if own != repeat:  # its steps would cover frames / repeat * own frames
                raise SuiteError(f"{env}: env.options.repeat={own}, but this suite counts "
                                 f"its --frames budget at action repeat {repeat}; leave "
                                 f"the repeat at {repeat}")
            specs.append(RunSpec(env, seed, logdir, steps, cfg))
    return specs


def is_finished(logdir: str | Path) -> bool:
    """Whether a run directory's `status.json` says the run finished."""
    status = read_status(logdir)
    return bool(status and status.get("finished"))


def reached(spec: RunSpec) -> bool:
    """Whether `spec`'s run finished at its budget or beyond: a rerun with a larger
    `--frames` goes on from where a finished run stopped (`run.steps` is resumable)."""
    status = read_status(spec.logdir) or {}
    target = status.get("target_steps") or status.get("step") or spec.steps  # adopted: done
    return bool(status.get("finished")) and float(target) >= spec.steps


# Outcomes of a paused suite (see `run_suite`): neither counts as a failure.
STOPPED, NOT_STARTED = "stopped", "not started"
# Exit status of a suite or comparison that paused (EX_TEMPFAIL: rerun to go on).
PAUSED_EXIT = 75
# Seconds a paused suite waits for its running runs' checkpoints before killing them.
PAUSE_GRACE_S = 900.0


def _train(cfg: Config) -> str:
    # Imported in the worker: the driver needs neither torch nor the agents.
    from agents.run.train import train

    # A pause sends Ray's cancel (a SIGINT in Python) to runs the user may have signalled
    # already: the second must not cut the checkpoint short.
    return str(train(cfg, escalate_signals=False))


def submission_order(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """Furthest-along runs first (by the share of its steps each run's `status.json` says it
    checkpointed; a stable sort keeps the plan's order among equals). Ray starts tasks of
    one shape in submission order in practice (a queue per scheduling key on one machine;
    not a documented promise, and a cluster may spill tasks over), so a machine that ends
    mid-suite has finished the runs closest to done, not started fresh ones beside them."""
    def done(spec: RunSpec) -> float:
        status = read_status(spec.logdir) or {}
        return float(status.get("step") or 0) / max(float(status.get("target_steps") or 1), 1.0)

    return sorted(specs, key=lambda spec: -done(spec))


def run_suite(
    specs: Sequence[RunSpec],
    cpus_per_run: float = 1.0,
    gpus_per_run: float | None = None,
    log: Callable[[str], None] = print,
    grace_s: float = PAUSE_GRACE_S,
    on_done: Callable[[RunSpec], None] | None = None,
) -> dict[str, str]:
    """Run every unfinished spec as a Ray task (Ray must be initialised); name -> outcome:
    "done", "skipped (finished)", "FAILED: ...", or, once the suite pauses, "stopped" and
    "not started". `on_done(spec)` is called as each run finishes (a study publishes it
    then, so a machine that ends before the suite does keeps its finished runs); an error
    it raises is logged and the suite goes on.

    A run the user stops with a signal (`kill -INT` on its `ray::_train` worker) checkpoints
    and returns with `status.json` saying so; the suite then pauses: queued runs are
    cancelled, running ones get Ray's cancel, which their signal guard takes as a stop (they
    checkpoint too; after `grace_s` seconds any still running are killed), and the same
    command resumes everything later."""
    import ray

    gpus_per_run = gpus_per_task(gpus_per_run)
    # max_calls=1: each run gets a fresh worker process, so no state leaks between runs.
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_calls=1, max_retries=0)(
        _train
    )
    outcome: dict[str, str] = {}
    pending = {}
    for spec in submission_order(specs):
        if reached(spec):
            outcome[spec.name] = "skipped (finished)"
            log(f"skip  {spec.name}: already finished")
            continue
        spec.logdir.mkdir(parents=True, exist_ok=True)
        pending[remote.remote(spec.config)] = (spec, time.time())
    total = len(pending)
    if total:
        log(f"running {total} runs ({cpus_per_run} CPU, {gpus_per_run} GPU each)")
    paused_at: float | None = None

    def pause(reason: str) -> None:
        nonlocal paused_at
        if paused_at is None:
            paused_at = time.time()
            log(f"pausing the suite ({reason}): queued runs will not start, running ones "
                "checkpoint and stop; rerun the same command to resume")
            for ref in pending:
                ray.cancel(ref)

    killed = False
    while pending:
        timeout = (None if paused_at is None or killed
                   else max(paused_at + grace_s - time.time(), 0.0))
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not done:  # paused, and the grace period is over
            for ref, (spec, _) in pending.items():
                log(f"killing {spec.name}: no checkpoint within {grace_s:.0f} s of the pause")
                ray.cancel(ref, force=True)
            killed = True  # they come back as failures below
            continue
        spec, start = pending.pop(done[0])
        count = total - len(pending)
        try:
            ray.get(done[0])
        except ray.exceptions.TaskCancelledError:
            # The pause's cancel, or the user's signal before the run's guard was set up
            # (while it started): a stop either way, with nothing since its last checkpoint.
            outcome[spec.name] = STOPPED if read_status(spec.logdir) else NOT_STARTED
            log(f"[{count}/{total}] {outcome[spec.name]} {spec.name}")
            pause(f"{spec.name} stopped while starting")
            continue
        except Exception as exc:  # a failed run is reported; the others go on
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            outcome[spec.name] = f"FAILED: {message}"
            log(f"[{count}/{total}] FAILED {spec.name}: {message}")
            continue
        status = read_status(spec.logdir) or {}
        if status.get("finished"):
            outcome[spec.name] = "done"
            log(f"[{count}/{total}] done {spec.name} in {time.time() - start:.0f} s")
            if on_done is not None:
                try:
                    on_done(spec)
                except Exception as exc:  # noqa: BLE001 - the runs matter more than the hook
                    log(f"warning: after {spec.name} finished: {exc}")
        elif status.get("stopped"):
            outcome[spec.name] = STOPPED
            log(f"[{count}/{total}] stopped {spec.name} at step {status.get('step')} "
                f"({status['stopped']}; checkpointed)")
            pause(f"{spec.name} got {status['stopped']}")
        else:
            outcome[spec.name] = (f"FAILED: returned unfinished at step {status.get('step')} "
                                  "without a stop")
            log(f"[{count}/{total}] {outcome[spec.name]} ({spec.name})")
    return outcome


def paused(outcome: dict[str, str]) -> int:
    """How many runs of `run_suite`'s outcome a pause left to resume."""
    return sum(result in (STOPPED, NOT_STARTED) for result in outcome.values())


def collect(specs: Sequence[RunSpec], method: str | None = None) -> list[Run]:
    """The learning curves of every spec that wrote scores (finished or not)."""
    runs = []
    for spec in specs:
        try:
            runs.append(read_run_dir(spec.logdir, spec.task, spec.seed, method))
        except ScoreFileError:
            continue
    return runs


def add_common_args(parser: argparse.ArgumentParser, frames: int | None) -> None:
    """Arguments every suite shares (`frames` None: the suite picks its default)."""
    parser.add_argument("--seeds", type=int, default=5, help="seeds per task: 0..N-1")
    parser.add_argument("--frames", type=int, default=frames,
                        help="env frames per run" + (f" (default {frames:,})" if frames else
                                                     " (default: the published budget)"))
    parser.add_argument("--agent", default="dreamerv3", help="agent name (dreamerv3, jepa)")
    parser.add_argument("--size", default=None, help="model size preset (default: domain's)")
    add_ray_args(parser, unit="run")
    parser.add_argument("--out", default=None, help="output folder")
    add_set_arg(parser, "config override forwarded to every run (repeatable)")
    add_reference_arg(parser, "published score files to plot and tabulate beside ours", "FILE")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG files")


def suite_main(args: argparse.Namespace, envs: Sequence[str], repeat: int, out: str) -> int:
    """Plan, run on Ray, aggregate and print; returns the exit status (1 if a run failed,
    else `PAUSED_EXIT` if the suite paused, else 0)."""
    out_dir = Path(args.out or out)
    specs = plan(envs, args.seeds, args.frames, repeat, out_dir, args.agent, args.size, args.sets)
    init_ray(args.address, args.num_cpus)
    outcome = run_suite(specs, args.cpus_per_run, args.gpus_per_run)
    runs = collect(specs)
    if runs:
        write_scores(runs, out_dir / "scores.json.gz")
    failed = sorted(name for name, result in outcome.items() if result.startswith("FAILED"))
    waiting = paused(outcome)
    print(
        f"\n{len(specs)} runs: {len(specs) - len(failed) - waiting} ok, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + (f", {waiting} paused (rerun to resume)" if waiting else "")
    )
    if not runs:
        print("no run wrote scores yet; nothing to aggregate")
        return 1 if failed or not waiting else PAUSED_EXIT
    from benchmarks.plot import report
    from benchmarks.scores import read_scores

    refs = [run for path in args.reference for run in read_scores(path)]
    text, pngs = report(runs, refs, out_dir, budget=args.frames, plots=not args.no_plots)
    print(text)
    print(f"wrote {out_dir / 'scores.json.gz'}, {out_dir / 'summary.md'} and {len(pngs)} plots")
    return 1 if failed else PAUSED_EXIT if waiting else 0


def exit_with(code: int) -> None:
    """Exit with `code`, flushing output first (Ray may hold stdout open)."""
    sys.stdout.flush()
    raise SystemExit(code)
