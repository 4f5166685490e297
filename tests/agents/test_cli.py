"""Smoke runs of `dreamer-run` / `dreamer-eval` on every suite, interrupt + resume."""

import json
import os
import signal

import pytest

from agents.run.cli import eval_main, run_main
from agents.run.train import train


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "spec,extra",
    [
        ("dmc:cartpole-balance", ["--set", "env.options.time_limit=200"]),
        ("dmc:cartpole-balance", ["--obs", "pixels", "--set", "env.options.time_limit=200",
                                  "--set", "env.options.fast_render=true"]),
        ("atari100k:pong", ["--set", "env.options.max_frames=400"]),
        ("minigrid:MiniGrid-Empty-5x5-v0", []),
    ],
    ids=["dmc-state", "dmc-pixels", "atari100k", "minigrid"],
)
def test_smoke_run_and_eval(tmp_path, spec, extra, capsys, smoke_argv):
    logdir = tmp_path / "run"
    assert run_main(["--env", spec, "--steps", "200", "--logdir", str(logdir), *smoke_argv,
                     *extra]) == 0
    status = json.loads((logdir / "status.json").read_text())
    assert status["finished"] and status["step"] >= 200 and status["updates"] > 0
    assert status["frames"] == status["step"] * (2 if spec.startswith("dmc") else
                                                 4 if spec.startswith("atari") else 1)
    metrics = _lines(logdir / "metrics.jsonl")
    assert any("loss/dyn" in m for m in metrics)
    assert (logdir / "config.yaml").exists() and (logdir / "checkpoint" / "agent.pt").exists()
    assert _lines(logdir / "eval_scores.jsonl")  # the final evaluation ran
    assert any(p.suffix == ".mp4" for p in (logdir / "videos").iterdir())
    capsys.readouterr()
    assert eval_main([str(logdir), "--episodes", "1", "--video"]) == 0
    out = capsys.readouterr().out
    assert "mean return" in out
    evaluated = json.loads((logdir / "eval" / "eval.json").read_text())
    assert evaluated["episodes"] == 1
    assert evaluated["policy"] == "sample"  # the run's run.eval_policy, as its evaluations


def test_interrupt_then_resume(tmp_path, tiny_config):
    logdir = tmp_path / "run"
    cfg = tiny_config("gym:CartPole-v1", logdir, 400)
    stopped = []

    def interrupt(metrics):  # Ctrl-C once training has started
        if metrics.get("perf/updates", 0) > 0 and not stopped:
            stopped.append(metrics["step"])
            os.kill(os.getpid(), signal.SIGINT)

    train(cfg, report=interrupt)
    first = json.loads((logdir / "status.json").read_text())
    assert stopped and not first["finished"] and first["step"] < 400
    train(cfg)  # the same command again resumes
    final = json.loads((logdir / "status.json").read_text())
    assert final["finished"] and final["step"] >= 400
    assert final["updates"] > first["updates"]
    steps = [m["step"] for m in _lines(logdir / "metrics.jsonl")]
    assert steps == sorted(steps)  # nothing replayed twice after the resume


def test_user_errors_are_one_line(tmp_path, capsys):
    assert run_main(["--env", "nosuch:task", "--logdir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown env suite") and "\n" not in err
    assert run_main(["--env", "gym:CartPole-v1", "--logdir", str(tmp_path / "b"),
                     "--set", "run.trian_ratio=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "did you mean 'run.train_ratio'" in err and "\n" not in err
    assert eval_main([str(tmp_path / "missing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_help_description_is_the_docstrings_whole_first_paragraph():
    """`--help` shows a module's first paragraph, not its first line cut mid-sentence."""
    import benchmarks.throughput
    from agents.run.cli_args import doc_summary

    doc = """Agent throughput: seconds per update, eager beside the
    fast path, against this machine's arithmetic.

    Details that stay out of the description."""
    assert doc_summary(doc) == ("Agent throughput: seconds per update, eager beside the fast "
                                "path, against this machine's arithmetic.")
    assert doc_summary(None) == ""
    summary = doc_summary(benchmarks.throughput.__doc__)
    assert summary.endswith(".") and "\n" not in summary
