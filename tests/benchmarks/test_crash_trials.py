"""Crash trials: kill -9 a training run at random points and during a checkpoint write,
rerun it, and check it resumes from the last complete checkpoint and ends consistent."""

from __future__ import annotations

import pytest

from benchmarks.crash_trials import main, run_trial


def test_two_kills_then_resume(tmp_path):
    # One kill at a random time, one while a checkpoint is being written. Eager: each
    # restart would compile again, minutes on a cold inductor cache; the 20 trials below
    # run the default fast path, kills during compilation included.
    trial = run_trial(0, tmp_path, "gym:CartPole-v1", steps=1200, kills=2, seed=1, timeout=300,
                      sets=["compile=off", "precision=fp32"])
    assert trial.ok, trial.problems
    assert trial.final_step == 1200
    assert len(trial.kills) == 2 and not any(k["finished"] for k in trial.kills)
    assert trial.kills[1]["in_save"]  # the second kill landed while checkpoint.tmp existed


@pytest.mark.slow
def test_twenty_trials(tmp_path, capsys):
    assert main(["--trials", "20", "--out", str(tmp_path / "trials")]) == 0
    assert "20 of 20 trials resumed and finished consistently" in capsys.readouterr().out
