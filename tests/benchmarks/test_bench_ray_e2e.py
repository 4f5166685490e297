"""End to end on Ray: a tiny DMC suite (and its rerun), a 2-trial sweep, a short PPO run,
and the same suite and sweep on a loopback Ray cluster (slow)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray")  # the `ray` extra of pyproject.toml

from benchmarks.scores import read_run_dir, read_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# A tiny, fast training run: 1m model, 1 env, 50-step episodes, almost no updates.
TINY = ["--size", "1m", "--set", "env.num_envs=1", "--set", "replay.size=20000",
        "--set", "run.prefill=50", "--set", "compile=off", "--set", "precision=fp32",
        "--set", "run.train_ratio=8", "--set", "run.video=false",
        "--set", "run.eval_episodes=0", "--set", "run.log_every=1"]
DMC_TINY = [*TINY, "--set", "env.options.time_limit=100"]


def _env() -> dict[str, str]:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), RAY_AUTH_MODE="disabled")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(args: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _suite(out: Path, address: list[str]) -> subprocess.CompletedProcess:
    return _run(["-m", "benchmarks.dmc", "--suite", "proprio",
                 "--tasks", "cartpole-balance,walker-stand", "--seeds", "1", "--frames", "300",
                 "--out", str(out), "--no-plots", *address, *DMC_TINY])


def _check_suite(out: Path, printed: str) -> None:
    runs = read_scores(out / "scores.json.gz")
    assert sorted(r.task for r in runs) == ["dmc_cartpole_balance", "dmc_walker_stand"]
    for run in runs:
        # 150 agent steps of 50-step episodes (100 frames each, action repeat 2).
        assert run.xs[0] == 100 and len(run.xs) >= 2 and run.xs[-1] <= 300
        assert run.method == "ours:dreamerv3"
        status = json.loads((out / run.task / "seed_0" / "status.json").read_text())
        assert status["finished"] and status["frames"] == 300
    assert "2 runs: 2 ok, 0 failed" in printed
    assert "| dmc_cartpole_balance |" in printed and "| **mean** |" in printed


def _sweep(out: Path, address: list[str]) -> subprocess.CompletedProcess:
    return _run(["-m", "benchmarks.sweep", "--env", "gym:CartPole-v1",
                 "--param", "opt.lr=loguniform(1e-5,1e-3)",
                 "--param", "run.train_ratio=choice(4,8)",
                 "--samples", "2", "--steps", "150", "--grace-steps", "75", "--out", str(out),
                 *address, *TINY])


def _check_sweep(out: Path, printed: str) -> None:
    table = printed[printed.index("trial "):].splitlines()
    assert table[0].split()[:4] == ["trial", "status", "opt.lr", "run.train_ratio"]
    assert sum(" ok " in line for line in table[1:3]) == 2
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert 1e-5 <= best["opt"]["lr"] <= 1e-3 and best["run"]["train_ratio"] in (4, 8)
    assert best["size"] == "1m" and best["run"]["prefill"] == 50


def test_local_suite_then_rerun_skips(tmp_path):
    out = tmp_path / "suite"
    _check_suite(out, _suite(out, ["--num-cpus", "2"]).stdout)
    scores = out / "dmc_walker_stand" / "seed_0" / "scores.jsonl"
    before = scores.stat().st_mtime_ns
    again = _suite(out, ["--num-cpus", "2"]).stdout
    assert again.count("skip  dmc_") == 2 and "running" not in again
    assert scores.stat().st_mtime_ns == before
    _check_suite(out, again)


def test_local_sweep_two_trials(tmp_path):
    out = tmp_path / "sweep"
    _check_sweep(out, _sweep(out, ["--num-cpus", "2"]).stdout)
    runs = sorted((out / "runs").iterdir())  # a run directory per trial, named by its id
    assert len(runs) == 2 and all((r / "scores.jsonl").is_file() for r in runs)
    # A trial that ran its whole budget ended as a run does: finished, checkpoint saved.
    done = [json.loads((r / "status.json").read_text()) for r in runs
            if (r / "status.json").is_file()]
    assert any(s["finished"] and s["step"] >= 150 for s in done)
    before = [(r / "scores.jsonl").stat().st_mtime_ns for r in runs]
    # The same command again: the sweep is restored, its finished trials not rerun.
    again = _sweep(out, ["--num-cpus", "2"]).stdout
    assert "resuming the sweep" in again
    assert [(r / "scores.jsonl").stat().st_mtime_ns for r in runs] == before
    _check_sweep(out, again)


def test_ppo_baseline_writes_a_comparable_run(tmp_path):
    out = tmp_path / "ppo"
    printed = _run(["-m", "benchmarks.ppo", "--env", "gym:CartPole-v1", "--frames", "600",
                    "--batch", "200", "--minibatch", "100", "--epochs", "1", "--out",
                    str(out)]).stdout
    assert "iter 3: 600 frames" in printed
    status = json.loads((out / "status.json").read_text())
    assert status == {"step": 600, "frames": 600, "target_steps": 600, "finished": True}
    run = read_run_dir(out)
    assert run.method == "ours:ppo" and run.task == "gym_cartpole_v1"
    assert len(run.xs) > 10 and run.xs[-1] <= 600 and (run.ys > 0).all()


def test_failed_run_is_reported_and_the_others_go_on(tmp_path):
    import ray

    from agents.run.config import load_config
    from benchmarks.suite import init_ray, plan, run_suite

    good, bad = plan(["dmc:cartpole-balance", "dmc:walker-stand"], 1, 200, 2, tmp_path,
                     size="1m", sets=DMC_TINY[3::2])
    # A config that resolves but fails inside its worker (the env refuses the option).
    bad.config = load_config(bad.env, size="1m", sets=DMC_TINY[3::2], flags={
        "run.steps": bad.steps, "logdir": str(bad.logdir), "env.options.no_such_key": 1})
    os.environ.setdefault("MUJOCO_GL", "egl")
    init_ray(None, num_cpus=2)
    published: list[str] = []

    def on_done(spec):  # a study's publishing hook; a failure in it stops nothing
        published.append(spec.name)
        raise OSError("disk full")

    try:
        lines: list[str] = []
        outcome = run_suite([bad, good], log=lines.append, on_done=on_done)
    finally:
        ray.shutdown()
    assert outcome[good.name] == "done" and published == [good.name]
    assert f"warning: after {good.name} finished: disk full" in lines
    assert outcome[bad.name].startswith("FAILED") and "no_such_key" in outcome[bad.name]
    assert any(line.startswith("[") and "FAILED dmc_walker_stand" in line for line in lines)
    assert json.loads((good.logdir / "status.json").read_text())["finished"]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): this test's own Ray workers, never another
    Ray instance's on the same machine."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _training_workers() -> list[int]:
    found = []
    for pid in _descendants(os.getpid()):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_train"):
                found.append(pid)
        except OSError:
            continue
    return found


def _last_step(logdir: Path) -> int:
    lines = (logdir / "metrics.jsonl").read_text().splitlines()
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds its Ray workers through /proc")
def test_signalled_runs_pause_the_suite_with_their_progress_saved(tmp_path):
    import signal
    import threading

    import ray

    from benchmarks.suite import NOT_STARTED, STOPPED, init_ray, plan, run_suite

    # Three long runs (stopped long before their budget), two at a time on two CPUs.
    specs = plan(["dmc:cartpole-balance", "dmc:walker-stand", "dmc:cartpole-swingup"], 1,
                 1_000_000, 2, tmp_path, size="1m", sets=DMC_TINY[3::2])
    os.environ.setdefault("MUJOCO_GL", "egl")
    init_ray(None, num_cpus=2)
    outcome: dict[str, str] = {}
    lines: list[str] = []
    driver = threading.Thread(target=lambda: outcome.update(run_suite(specs, log=lines.append)),
                              daemon=True)
    training = lambda: [s for s in specs if (s.logdir / "metrics.jsonl").is_file()]
    try:
        driver.start()
        deadline, workers = time.time() + 300, []
        # Both running runs in their training loops (metrics written), then SIGINT to both
        # at once, as `pkill -INT` does: the pause's cancel then reaches the second one
        # while it is already stopping, and must not cut its checkpoint short.
        while time.time() < deadline and not (len(training()) == 2 and len(workers) == 2):
            time.sleep(1)
            workers = _training_workers()
        assert len(workers) == 2, f"expected two training workers, found {workers}"
        logged = {s.name: _last_step(s.logdir) for s in training()}
        for pid in workers:
            os.kill(pid, signal.SIGINT)
        driver.join(timeout=300)
        assert not driver.is_alive(), "the suite did not return after the stop"
    finally:
        ray.shutdown()
    ran = training()
    (queued,) = [s for s in specs if s not in ran]
    assert outcome == {**{s.name: STOPPED for s in ran}, queued.name: NOT_STARTED}, (outcome,
                                                                                   lines)
    for spec in ran:  # each saved what it had done when the signal came
        status = json.loads((spec.logdir / "status.json").read_text())
        assert status["stopped"] == "SIGINT" and not status["finished"]
        assert status["step"] >= logged[spec.name] > 0
        assert (spec.logdir / "checkpoint").is_dir()
    assert any("rerun the same command to resume" in line for line in lines)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_suite_and_sweep_on_a_loopback_cluster(tmp_path):
    port = _free_port()
    # A short temp dir: Ray's unix socket paths must stay under ~107 characters.
    temp = tempfile.mkdtemp(prefix="rayc", dir="/tmp")
    # `--block` keeps the head in this child process; ending it stops exactly this cluster
    # (`ray stop` would also stop every other Ray instance on the machine).
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
         "--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--include-dashboard=false"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        executable=str(Path(sys.executable).with_name("ray")))
    try:
        address = ["--address", f"127.0.0.1:{port}"]
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run(["ray", "status", "--address", f"127.0.0.1:{port}"],
                                   env=_env(), capture_output=True, text=True,
                                   executable=str(Path(sys.executable).with_name("ray")))
            if probe.returncode == 0:
                break
            assert head.poll() is None, "ray head exited early"
            time.sleep(2)
        out = tmp_path / "suite"
        _check_suite(out, _suite(out, address).stdout)
        _check_sweep(tmp_path / "sweep", _sweep(tmp_path / "sweep", address).stdout)
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
