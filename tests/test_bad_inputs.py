"""Every command-line tool, fed bad input: a non-zero exit, one line on stderr, no
traceback, and nothing on disk changed. One row per case; run in-process for speed."""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path

import pytest

from agents.run.cli import eval_main, run_main

ENTRY_POINTS = {
    "dreamer-run": run_main,
    "dreamer-eval": eval_main,
    "jepa-pretrain": "agents.pretrain.jepa_pretrain",
    "dreamer-sweep": "benchmarks.sweep",
    "benchmarks.plot": "benchmarks.plot",
    "benchmarks.dmc": "benchmarks.dmc",
    "benchmarks.atari100k": "benchmarks.atari100k",
    "benchmarks.throughput": "benchmarks.throughput",
    "benchmarks.collapse": "benchmarks.collapse",
    "benchmarks.env_throughput": "benchmarks.env_throughput",
    "benchmarks.crash_trials": "benchmarks.crash_trials",
    "benchmarks.official": "benchmarks.official",
    "benchmarks.publish": "benchmarks.publish",
    "dreamer-export": "agents.run.export",
    "dreamer-cost": "benchmarks.cost",
    "benchmarks.probe": "benchmarks.probe",
    "benchmarks.compare": "benchmarks.compare",
    "benchmarks.decoder_forms": "benchmarks.decoder_forms",
    "benchmarks.export_latency": "benchmarks.export_latency",
    "benchmarks.planning": "benchmarks.planning",
    "benchmarks.ppo": "benchmarks.ppo",
    "benchmarks.replay_throughput": "benchmarks.replay_throughput",
    "benchmarks.state_probe": "benchmarks.state_probe",
}

RUN = ["--env", "gym:CartPole-v1", "--size", "1m"]

# (tool, argv, a substring the error line must hold). {tmp} is a scratch folder holding
# `bad.yaml` (not YAML), `list.yaml` (a list), `empty/` (no run) and `broken/` (a run dir
# whose checkpoint is garbage).
CASES = [
    ("dreamer-run", ["--env", "nosuch:task"], "unknown env suite"),
    ("dreamer-run", ["--env", "dmc:walker-run2"], "walker-run"),
    ("dreamer-run", ["--env", "gym:cartpole"], "CartPole-v1"),
    ("dreamer-run", [*RUN, "--agent", "nosuch"], "unknown agent"),
    ("dreamer-run", [*RUN[:2], "--size", "7m"], "unknown size"),
    ("dreamer-run", [*RUN, "--set", "run.train_ratio=-1"], "run.train_ratio"),
    ("dreamer-run", [*RUN, "--set", "run.train_ratio=0"], "run.train_ratio"),
    ("dreamer-run", [*RUN, "--set", "replay.batch_length=0"], "replay.batch_length"),
    ("dreamer-run", [*RUN, "--set", "replay.size=2000", "--envs", "32"],
     "holds 62 steps per env (32 envs), fewer than a training sequence"),
    ("dreamer-run", [*RUN, "--set", "opt.lr=fast"], "opt.lr"),
    ("dreamer-run", [*RUN, "--set", "model.dter=512"], "model.rssm.deter"),
    ("dreamer-run", [*RUN, "--set", "run.trian_ratio=3"], "run.train_ratio"),
    ("dreamer-run", [*RUN, "--set", "noequals"], "key=value"),
    ("dreamer-run", [*RUN, "--config", "{tmp}/missing.yaml"], "cannot read"),
    ("dreamer-run", [*RUN, "--config", "{tmp}/bad.yaml"], "not valid YAML"),
    ("dreamer-run", [*RUN, "--config", "{tmp}/list.yaml"], "must hold a mapping"),
    ("dreamer-run", [*RUN, "--envs", "0"], "env.num_envs"),
    ("dreamer-run", [*RUN, "--steps", "-5"], "run.steps"),
    ("dreamer-run", [*RUN, "--device", "cuda:7"], "cuda"),
    ("dreamer-run", [*RUN, "--device", "tpu"], "device"),
    ("dreamer-run", [*RUN, "--set", "compile=fast"], "auto, on, off"),
    ("dreamer-run", [*RUN, "--set", "precision=fp16"], "auto, fp32 or bf16"),
    ("dreamer-run", [*RUN, "--set", "malloc=jemalloc"], "use keep, system"),
    ("dreamer-run", [*RUN, "--obs", "rgb"], "invalid choice"),
    ("dreamer-run", [*RUN, "--set", "run.eval_policy=greedy"], "sample, mode"),
    ("dreamer-run", [*RUN, "--set", "replay.context=-1"], "replay.context"),
    ("dreamer-run", [*RUN, "--set", "env.options.no_such=1"], "no_such"),
    ("dreamer-run", [*RUN, "--set", "replay.sampler=prio"], "allowed: uniform, recency"),
    ("dreamer-run", ["--size", "1m"], "--env is required"),
    ("dreamer-run", ["--env", "dmc:cartpole-balance", "--obs", "pixels", "--encoder",
                     "jepa:{tmp}/missing.pt"], "missing.pt"),
    ("dreamer-run", [*RUN, "--encoder", "jepa:{tmp}/missing.pt"], "image"),
    ("dreamer-eval", ["{tmp}/nothing"], "no checkpoint"),
    ("dreamer-eval", ["{tmp}/empty"], "no checkpoint"),
    ("dreamer-eval", ["{tmp}/broken"], "checkpoint"),
    ("jepa-pretrain", ["--env", "nosuch:task", "--out", "{tmp}/pre"], "unknown env suite"),
    ("jepa-pretrain", ["--preset", "huge", "--out", "{tmp}/pre"], "huge"),
    ("jepa-pretrain", ["--source", "folder:{tmp}/nothing", "--out", "{tmp}/pre"], "nothing"),
    ("jepa-pretrain", ["--objective", "simclr", "--out", "{tmp}/pre"], "allowed: jepa, mae"),
    ("jepa-pretrain", ["--reg", "barlow", "--out", "{tmp}/pre"], "allowed: sigreg, vicreg"),
    ("jepa-pretrain", ["--on-collapse", "ignore", "--out", "{tmp}/pre"], "allowed: adapt"),
    ("benchmarks.probe", ["--encoders", "jepa,simclr"], "allowed: random, autoencoder"),
    ("benchmarks.probe", ["--env", "gym:CartPole-v1"], "only dmc:DOMAIN-TASK"),
    ("benchmarks.probe", ["--seeds", "0,x"], "expected integers"),
    ("dreamer-sweep", ["--env", "gym:CartPole-v1"], "--param"),
    ("dreamer-sweep", ["--env", "gym:CartPole-v1", "--param", "opt.lr=gauss(0,1)"],
     "not a distribution"),
    ("dreamer-sweep", ["--env", "gym:CartPole-v1", "--param", "opt.lr=uniform(0,1)",
                       "--set", "run.trian_ratio=3"], "run.train_ratio"),
    ("benchmarks.plot", ["{tmp}/nothing"], "nothing"),
    ("benchmarks.dmc", ["--suite", "proprio", "--tasks", "quadruped-run"], "quadruped-run"),
    ("benchmarks.atari100k", ["--games", "tetris"], "tetris"),
    ("benchmarks.throughput", ["--rows", "nosuch"], "nosuch"),
    ("benchmarks.collapse", ["{tmp}/nothing"], "no checkpoint"),
    ("benchmarks.env_throughput", ["--envs", "0"], "--envs"),
    ("benchmarks.crash_trials", ["--trials", "0"], "--trials"),
    ("dreamer-export", ["{tmp}/nothing"], "no checkpoint"),
    ("dreamer-export", ["{tmp}/broken", "--format", "tflite"], "invalid choice"),
    ("dreamer-cost", ["--env", "nosuch:task"], "unknown env suite"),
    ("dreamer-cost", ["--vit", "--frames-per-clip", "15"], "tubelet"),
    ("benchmarks.official", ["run", "--checkout", "{tmp}/empty", "--logdir", "{tmp}/off",
                             "--env", "dmc:walker-walk"], "no dreamerv3/main.py"),
    ("benchmarks.official", ["run", "--checkout", "{tmp}/empty", "--logdir", "{tmp}/off",
                             "--env", "gym:CartPole-v1"], "allowed: dmc_proprio"),
    ("benchmarks.official", ["convert", "{tmp}/empty", "--env", "dmc:walker-walk"],
     "no scores.jsonl"),
    ("benchmarks.official", ["metrics", "{tmp}/empty", "{tmp}/empty"], "no training metrics"),
    ("benchmarks.publish", ["{tmp}/empty"], "config.yaml"),
    ("benchmarks.compare", ["--env", "dmc:cartpole-balance", "--arm", "nosuch"], "is invalid"),
    ("benchmarks.decoder_forms", ["--rows", "nosuch"], "bad --rows"),
    ("benchmarks.export_latency", ["--rows", "nosuch"], "unknown; allowed"),
    ("benchmarks.export_latency", ["--calls", "0"], "--calls and --threads must be >= 1"),
    ("benchmarks.planning", ["{tmp}/empty"], "no checkpoint"),
    ("benchmarks.ppo", ["--env", "gym:CartPole-v1", "--frames", "0"], "--frames must be >= 1"),
    ("benchmarks.replay_throughput", ["--envs", "0"], "--envs out of range"),
    ("benchmarks.state_probe", ["{tmp}/empty"], "no checkpoint"),
]


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "bad.yaml").write_text("run: {steps: [1, 2\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "empty").mkdir()
    broken = tmp / "broken"
    (broken / "checkpoint").mkdir(parents=True)
    (broken / "config.yaml").write_text("env: {spec: 'gym:CartPole-v1'}\nsize: 1m\n")
    (broken / "checkpoint" / "agent.pt").write_bytes(b"not a checkpoint")
    return tmp


def _invoke(tool: str, argv: list[str]) -> int:
    entry = ENTRY_POINTS[tool]
    if isinstance(entry, str):
        entry = importlib.import_module(entry).main
    try:
        code = entry(argv)
    except SystemExit as exit_:
        code = exit_.code
        if isinstance(code, str):  # SystemExit("message") prints it and exits 1
            import sys

            print(code, file=sys.stderr)
            code = 1
    return 0 if code is None else code


def test_every_command_line_tool_has_a_bad_input_case():
    """Each console script of pyproject.toml and each `python -m benchmarks.X` with a `main`
    is in ENTRY_POINTS, and each entry point has at least one case; no case repeats."""
    root = Path(__file__).resolve().parents[1]
    scripts = dict(re.findall(r'^([a-z-]+) = "([a-z_.]+):[a-z_]+"$',
                              (root / "pyproject.toml").read_text(), re.M))
    modules = {f"benchmarks.{p.stem}" for p in (root / "benchmarks").glob("*.py")
               if re.search(r"^def main\(", p.read_text(), re.M)}
    assert set(scripts) | (modules - set(scripts.values())) == set(ENTRY_POINTS)
    assert {t for t, _, _ in CASES} == set(ENTRY_POINTS)
    assert len({(t, tuple(a)) for t, a, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("tool", "argv", "expected"), CASES,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(CASES)])
def test_bad_input_is_one_line(tool, argv, expected, scratch, capsys, monkeypatch):
    monkeypatch.chdir(scratch / "empty")  # a default run directory would land here
    before = _tree_digest(scratch)
    argv = [a.replace("{tmp}", str(scratch)) for a in argv]
    code = _invoke(tool, argv)
    err = capsys.readouterr().err.strip()
    assert code not in (0, None), f"{tool} {argv} exited 0"
    assert "Traceback" not in err
    assert err and "\n" not in err, f"stderr was not one line:\n{err}"
    assert expected in err, err
    assert _tree_digest(scratch) == before, "a bad input changed files on disk"
