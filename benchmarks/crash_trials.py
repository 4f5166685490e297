"""Crash trials: start a short `dreamer-run`, kill -9 it at random points (some while a
checkpoint is being written), rerun the same command, and check that every rerun resumes
from the last complete checkpoint and that the finished run is consistent.

    python -m benchmarks.crash_trials [--trials 20] [--steps 800] [--kills 3] [--out DIR]

Each trial is its own run directory. A kill is either at a random time or as soon as a
checkpoint write is seen in progress (`checkpoint.tmp` exists). After the last kill the
command runs to the end. Checked per trial: each rerun resumed from the step of the last
complete checkpoint (or started afresh when there was none); the finished run reached its
step budget; `scores.jsonl` has no duplicated episode and its steps never go back; the
replay holds every step the run made once, plus the reset row each env stores when a process
starts (a replay loaded twice would hold about twice as many). Prints one line per trial and
a summary (trials resumed cleanly, steps lost per kill at most).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.run.cli_args import ArgParser, add_set_arg, doc_summary

# Small and quick: checkpoints every second, so many kills land near one.
TINY = {"env.num_envs": 2, "threads": 1, "replay.batch_size": 4, "replay.batch_length": 8,
        "run.prefill": 64, "run.train_ratio": 8, "run.log_every": 0, "run.save_every": 1,
        "run.eval_every": 1_000_000, "run.video": False, "run.eval_episodes": 0}
RESUMED = re.compile(r"resuming from step (\d+) of|already finished \((\d+) of")


@dataclass
class Trial:
    """What one trial saw: per kill the checkpoint step then and the step resumed from."""

    index: int
    kills: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    final_step: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def command(logdir: Path, env: str, steps: int, sets: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-c", "import sys; from agents.run.cli import run_main; "
            "sys.exit(run_main())", "--env", env, "--size", "1m",
            "--steps", str(steps), "--logdir", str(logdir)]
    for item in [f"{key}={value}" for key, value in TINY.items()] + list(sets):
        argv += ["--set", item]
    return argv


def _checkpoint_step(logdir: Path) -> int | None:
    """The agent step of the checkpoint a rerun would resume from (None: there is none)."""
    from agents.run.checkpoint import load_checkpoint
    from agents.run.rundir import AGENT_FILE, RunDir

    folder = RunDir(logdir).latest_checkpoint()
    if folder is None:
        return None
    return int(load_checkpoint(folder / AGENT_FILE)["counters"]["step"])


def _last_metric_step(logdir: Path) -> int:
    try:
        lines = (logdir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = []
    for line in lines:
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    return max(steps, default=0)


def kill_once(argv: list[str], logdir: Path, rng: random.Random, during_save: bool,
              env: dict[str, str], timeout: float) -> dict:
    """Start the run, kill -9 it, and report the checkpoint step it leaves behind."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    start = time.time()
    delay = rng.uniform(3.0, 12.0)
    killed_in_save = False
    while proc.poll() is None and time.time() - start < timeout:
        if during_save and (logdir / "checkpoint.tmp").exists() and time.time() - start > 3:
            killed_in_save = True
            break
        if not during_save and time.time() - start > delay:
            break
        time.sleep(0.005)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    return {"finished": finished, "in_save": killed_in_save, "output": out,
            "checkpoint_step": _checkpoint_step(logdir), "progress_step": _last_metric_step(logdir)}


def _check_resume(output: str, expected: int | None, trial: Trial, required: bool) -> None:
    """A rerun must resume from the last complete checkpoint (None: start afresh)."""
    match = RESUMED.search(output)
    if match is None and not required and expected is not None:
        return
    got = int(match.group(1) or match.group(2)) if match else None
    if got != expected:
        trial.problems.append(f"resumed from {got}, last complete checkpoint was {expected}")


def check_finished(logdir: Path, steps: int, starts: int, trial: Trial) -> None:
    status = json.loads((logdir / "status.json").read_text())
    trial.final_step = int(status["step"])
    if not status.get("finished") or status["step"] < steps:
        trial.problems.append(f"not finished: {status}")
    rows = [line for line in (logdir / "scores.jsonl").read_text().splitlines() if line]
    if len(rows) != len(set(rows)):
        trial.problems.append(f"{len(rows) - len(set(rows))} duplicated scores.jsonl rows")
    row_steps = [json.loads(r)["step"] for r in rows]
    if row_steps != sorted(row_steps):
        trial.problems.append("scores.jsonl steps go back")
    sizes = [json.loads(line).get("replay/size") for line in
             (logdir / "metrics.jsonl").read_text().splitlines() if line]
    sizes = [s for s in sizes if s is not None]
    envs = TINY["env.num_envs"]
    if sizes and not trial.final_step <= sizes[-1] <= trial.final_step + envs * starts:
        trial.problems.append(f"replay holds {sizes[-1]} rows; the run made {trial.final_step} "
                              f"steps in {starts} starts of {envs} envs")


def run_trial(index: int, out: Path, env_spec: str, steps: int, kills: int, seed: int,
              timeout: float, sets: Sequence[str] = ()) -> Trial:
    rng = random.Random(seed * 1000 + index)
    logdir = out / f"trial_{index:02d}"
    argv = command(logdir, env_spec, steps, sets)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    trial = Trial(index)
    for k in range(kills):
        during_save = k % 2 == 1
        record = kill_once(argv, logdir, rng, during_save, env, timeout)
        output = record.pop("output")
        if trial.kills:  # killed before it printed where it resumed: nothing to compare
            _check_resume(output, trial.kills[-1]["checkpoint_step"], trial, required=False)
        trial.kills.append(record)
        if record["finished"]:
            break
    final = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    outputs = [final.stdout]
    if final.returncode != 0:
        trial.problems.append(f"final run exited {final.returncode}: {final.stderr[-300:]}")
        return trial
    last = trial.kills[-1] if trial.kills else None
    if last is not None and not last["finished"]:
        _check_resume(outputs[0], last["checkpoint_step"], trial, required=True)
    check_finished(logdir, steps, len(trial.kills) + 1, trial)
    return trial


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description=doc_summary(__doc__))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--kills", type=int, default=3, help="kills per trial before the final run")
    p.add_argument("--steps", type=int, default=800, help="agent steps per run")
    p.add_argument("--env", default="gym:CartPole-v1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600, help="seconds per process at most")
    p.add_argument("--out", default="runs/crash_trials")
    add_set_arg(p, "config override for every run (repeatable), e.g. compile=off", dest="set")
    args = p.parse_args(argv)
    if args.trials < 1 or args.kills < 1 or args.steps < 1:
        p.error("--trials, --kills and --steps must be >= 1")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        p.error(f"--out {out} is not empty; crash trials need fresh run directories")
    trials = []
    for i in range(args.trials):
        trial = run_trial(i, out, args.env, args.steps, args.kills, args.seed, args.timeout,
                          args.set)
        trials.append(trial)
        lost = [k["progress_step"] - (k["checkpoint_step"] or 0) for k in trial.kills
                if not k["finished"]]
        in_save = sum(k["in_save"] for k in trial.kills)
        print(f"trial {i:2d}: {'ok' if trial.ok else 'FAILED'}; {len(lost)} kills "
              f"({in_save} during a checkpoint write), steps lost per kill {lost}, final step "
              f"{trial.final_step}" + (f"; {'; '.join(trial.problems)}" if trial.problems else ""),
              flush=True)
    kills = [k for t in trials for k in t.kills if not k["finished"]]
    lost = [k["progress_step"] - (k["checkpoint_step"] or 0) for k in kills]
    good = sum(t.ok for t in trials)
    print(f"\n{good} of {len(trials)} trials resumed and finished consistently; {len(kills)} "
          f"kills, {sum(k['in_save'] for k in kills)} during a checkpoint write; steps lost "
          f"per kill: at most {max(lost, default=0)}, mean {sum(lost) / max(len(lost), 1):.0f}")
    return 0 if good == len(trials) else 1


if __name__ == "__main__":
    raise SystemExit(main())
