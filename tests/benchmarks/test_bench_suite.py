"""Suite planning, argument checks and the skip-finished rule (no Ray needed)."""

from __future__ import annotations

import json

import pytest

from benchmarks.atari100k import games_from
from benchmarks.dmc import tasks_from
from benchmarks.suite import (
    SuiteError,
    collect,
    is_finished,
    plan,
    reached,
    submission_order,
)


def test_plan_argv_and_layout(tmp_path):
    specs = plan(["atari100k:pong", "atari100k:boxing"], 2, 400_000, 4, tmp_path,
                 size="1m", sets=["run.train_ratio=64"])
    assert [s.name for s in specs] == ["atari100k_pong/seed_0", "atari100k_pong/seed_1",
                                       "atari100k_boxing/seed_0", "atari100k_boxing/seed_1"]
    first = specs[0]
    assert first.steps == 100_000  # 400k frames / action repeat 4
    assert first.logdir == tmp_path.resolve() / "atari100k_pong" / "seed_0"
    cfg = first.config  # resolved up front, as dreamer-run would resolve those flags
    assert (cfg.env.spec, cfg.agent, cfg.run.steps, cfg.seed, cfg.logdir, cfg.size) == (
        "atari100k:pong", "dreamerv3", 100_000, 0, str(first.logdir), "1m")
    assert cfg.run.train_ratio == 64 and specs[1].config.seed == 1


def test_half_done_runs_are_submitted_before_fresh_ones(tmp_path):
    # Ray starts tasks of one shape in submission order (in practice, on one machine): a
    # suite resumed on two cores must finish the runs nearest to done first, so a machine
    # that ends mid-suite keeps the most results.
    specs = plan(["dmc:cartpole-balance"], 4, 1000, 2, tmp_path)
    for seed, step in ((1, 30), (2, 280), (3, 190)):
        specs[seed].logdir.mkdir(parents=True)
        (specs[seed].logdir / "status.json").write_text(json.dumps(
            {"step": step, "target_steps": 500, "updates": 7}))
    assert [s.config.seed for s in submission_order(specs)] == [2, 3, 1, 0]


def test_plan_rejects_bad_budget(tmp_path):
    with pytest.raises(SuiteError, match="--seeds"):
        plan(["dmc:walker-walk"], 0, 1000, 2, tmp_path)
    with pytest.raises(SuiteError, match="--frames"):
        plan(["dmc:walker-walk"], 1, 1, 2, tmp_path)
    with pytest.raises(SuiteError, match="did you mean 'run.train_ratio'"):
        plan(["dmc:walker-walk"], 1, 1000, 2, tmp_path, sets=["run.trainratio=4"])
    # Another action repeat would train on a different number of frames than --frames.
    with pytest.raises(SuiteError, match="action repeat 2"):
        plan(["dmc:walker-walk"], 1, 1000, 2, tmp_path, sets=["env.options.repeat=1"])
    assert plan(["dmc:walker-walk"], 1, 1000, 2, tmp_path,
                sets=["env.options.repeat=2"])[0].steps == 500


def test_task_lists():
    assert len(games_from("all")) == 26
    assert games_from("pong, boxing") == ["pong", "boxing"]
    with pytest.raises(SuiteError, match="unknown Atari-100k game"):
        games_from("pong,tetris")
    assert len(tasks_from("proprio", "all")) == 18 and len(tasks_from("vision", "all")) == 20
    assert tasks_from("vision", "walker-walk,ball_in_cup_catch") == [
        "dmc:walker-walk-pixels", "dmc:ball_in_cup-catch-pixels"]
    with pytest.raises(SuiteError, match="unknown proprio task"):
        tasks_from("proprio", "quadruped-run")


def test_finished_runs_are_detected_and_collected(tmp_path, make_run_dir):
    specs = plan(["dmc:walker-walk", "dmc:cheetah-run"], 1, 1000, 2, tmp_path)
    make_run_dir(specs[0].logdir, "dmc:walker-walk", 0, [(1000, 5.0)], finished=True)
    make_run_dir(specs[1].logdir, "dmc:cheetah-run", 0, [(500, 1.0)], finished=False)
    assert is_finished(specs[0].logdir) and not is_finished(specs[1].logdir)
    assert not is_finished(tmp_path / "nothing")
    # Finished at 1000 frames: done for that budget, not for a rerun at 2000 (it goes on).
    assert reached(specs[0]) and not reached(specs[1])
    assert not reached(plan(["dmc:walker-walk"], 1, 2000, 2, tmp_path)[0])
    runs = collect(specs)
    assert [(r.task, r.seed, r.method) for r in runs] == [
        ("dmc_walker_walk", 0, "ours:dreamerv3"), ("dmc_cheetah_run", 0, "ours:dreamerv3")]
