import math

from agents.run.cli import run_main
from benchmarks.collapse import main

# Eager fp32: the fast path's compile would cost more than this wiring check's whole run.
TINY = ["--size", "1m", "--envs", "1", "--steps", "120", "--set", "threads=1",
        "--set", "compile=off", "--set", "precision=fp32",
        "--set", "replay.size=20000",
        "--set", "replay.batch_size=2", "--set", "replay.batch_length=8",
        "--set", "run.prefill=32", "--set", "run.train_ratio=8", "--set", "run.log_every=0",
        "--set", "run.eval_every=1000000", "--set", "run.report_every=1000000",
        "--set", "run.video=false"]


def test_collapse_table_for_a_trained_run(tmp_path, capsys):
    logdir = tmp_path / "run"
    assert run_main(["--env", "gym:CartPole-v1", "--logdir", str(logdir), *TINY]) == 0
    capsys.readouterr()
    out_md = tmp_path / "collapse.md"
    (row,) = main([str(logdir), "--steps", "60", "--out", str(out_md)])
    assert row["agent"] == "dreamerv3" and row["env"] == "gym:CartPole-v1"
    assert row["episodes"] >= 1 and math.isfinite(row["return"])
    for name in ("embed", "feat"):
        assert 1.0 <= row[name]["rankme"] <= row[name]["dim"]
        assert 0.0 < row[name]["std_score"] <= 1.5
    printed = capsys.readouterr().out
    assert "| run | agent |" in printed and "| dreamerv3 |" in out_md.read_text()
