"""Paired comparisons: arm and condition parsing, the run layout and configs, the stratified
bootstrap, and the table of a comparison whose runs wrote known scores."""

import gzip
import json

import numpy as np
import pytest
import yaml

from benchmarks.compare import (
    final_scores,
    main,
    mean_score,
    parse_arm,
    plan_comparison,
    prediction_table,
    stratified_bootstrap,
)
from benchmarks.scores import score_files
from benchmarks.study_publish import adopt_published, publish_run
from benchmarks.suite import SuiteError, is_finished

ENV = "dmc:cartpole-balance-pixels"


def test_arms_and_their_bad_forms():
    arm = parse_arm("no-predict=jepa,jepa.predict=false,jepa.vicreg=false")
    assert (arm.name, arm.agent, arm.sets) == ("no-predict", "jepa",
                                               ("jepa.predict=false", "jepa.vicreg=false"))
    for bad in ("jepa", "=jepa", "a=jepa,jepa.predict", "a/b=jepa"):
        with pytest.raises(SuiteError, match="expected NAME=AGENT"):
            parse_arm(bad)


def test_plan_lays_out_every_arm_condition_and_seed(tmp_path):
    arms = [parse_arm("dreamerv3=dreamerv3"), parse_arm("no-predict=jepa,jepa.predict=false")]
    cells = plan_comparison([ENV], arms, ["clean", "atari"], 2, 1000, tmp_path)
    assert [(c.arm, c.condition) for c in cells] == [
        ("dreamerv3", "clean"), ("dreamerv3", "atari"), ("no-predict", "clean"),
        ("no-predict", "atari")]
    names = [s.name for c in cells for s in c.specs]
    assert len(names) == 8 == len(set(names))
    spec = cells[3].specs[1]
    assert spec.logdir == tmp_path / "no-predict" / "atari" / "dmc_cartpole_balance" / "seed_1"
    cfg = spec.config
    assert cfg.agent == "jepa" and cfg.jepa.predict is False and cfg.seed == 1
    assert cfg.env.options.to_dict()["distractor"] == "atari" and cfg.run.steps == 500
    assert cells[0].specs[0].config.env.options.to_dict()["distractor"] is None
    with pytest.raises(SuiteError, match="arm names must differ"):
        plan_comparison([ENV], arms[:1] * 2, ["clean"], 1, 1000, tmp_path)
    with pytest.raises(SuiteError):  # a bad override fails before anything runs
        plan_comparison([ENV], [parse_arm("x=jepa,jepa.nosuchkey=1")], ["clean"], 1, 1000,
                        tmp_path)


def test_stratified_bootstrap_resamples_runs_within_each_task():
    # Task 0's runs are 0 and 10, task 1's are both 4: means over tasks can only be
    # (0|5|10 + 4) / 2 = 2, 4.5 or 7, and a constant array has no spread at all.
    scores = np.array([[0.0, 4.0], [10.0, 4.0]])
    point, low, high = stratified_bootstrap(mean_score, [scores], reps=4000)
    assert point == 4.5 and low == 2.0 and high == 7.0
    assert stratified_bootstrap(mean_score, [np.full((3, 2), 7.0)]) == (7.0, 7.0, 7.0)
    # Paired: the same indices in both arrays, so a constant ratio has no spread.
    clean = np.array([[100.0], [200.0], [300.0]])
    assert stratified_bootstrap(lambda a, b: mean_score(b) / mean_score(a),
                                [clean, 0.8 * clean]) == pytest.approx((0.8, 0.8, 0.8))


def _write(logdir, rows, name):
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_of_runs_with_known_scores(tmp_path, capsys):
    out = tmp_path / "cmp"
    arms = ["a=dreamerv3", "b=jepa"]
    cells = plan_comparison([ENV], [parse_arm(a) for a in arms], ["clean", "shapes"], 2, 1000,
                            out.resolve())
    # Train returns: clean 100 (a) / 200 (b) in the last 10% of the budget, distracted half
    # (a) and 90% (b); evals the same numbers x 2; seed 1 adds 10 everywhere.
    for cell in cells:
        for spec in cell.specs:
            base = {"a": 100.0, "b": 200.0}[cell.arm] * (
                1.0 if cell.condition == "clean" else {"a": 0.5, "b": 0.9}[cell.arm])
            y = base + 10 * spec.seed
            _write(spec.logdir, [{"frames": 100, "return": -1.0}, {"frames": 950, "return": y},
                                 {"frames": 1000, "return": y}], "scores.jsonl")
            _write(spec.logdir, [{"frames": 1000, "return": 2 * y}], "eval_scores.jsonl")
            (spec.logdir / "status.json").write_text(json.dumps({"finished": True}))
    with pytest.raises(SystemExit) as done:
        main(["--env", ENV, "--arm", arms[0], "--arm", arms[1], "--conditions", "clean,shapes",
              "--seeds", "2", "--frames", "1000", "--out", str(out), "--report-only"])
    assert done.value.code == 0
    text = (out / "compare.md").read_text()
    assert "| a | clean | 2/2 | 210.0 [200.0, 220.0] | - | 105.0 [100.0, 110.0] | - |" in text
    # kept = mean distracted / mean clean: a (50 + 60) / (100 + 110), b (180 + 190) / 410,
    # from 2 paired seeds.
    a_kept, b_kept = 110 / 210, 370 / 410
    assert f"| a | shapes | 2/2 | 110.0 [100.0, 120.0] | {a_kept:.2f} [" in text
    assert f"| b | shapes | 2/2 | 370.0 [360.0, 380.0] | {b_kept:.2f} [" in text
    assert text.count("] (2p) |") == 4
    assert (out / "compare.png").stat().st_size > 0
    with gzip.open(out / "scores.json.gz", "rt") as f:
        methods = {r["method"] for r in json.load(f)}
    assert methods == {"a/clean", "a/shapes", "b/clean", "b/shapes"}
    assert "| b | clean |" in capsys.readouterr().out


def test_publish_copies_finished_runs_and_the_folder_reports_alone(tmp_path, capsys):
    out, pub = tmp_path / "cmp", tmp_path / "scores" / "study"
    arms = ["a=dreamerv3", "b=jepa"]
    flags = ["--env", ENV, "--arm", arms[0], "--arm", arms[1], "--conditions", "clean,atari",
             "--seeds", "2", "--frames", "1000", "--out", str(out), "--report-only"]
    cells = plan_comparison([ENV], [parse_arm(a) for a in arms], ["clean", "atari"], 2, 1000,
                            out.resolve())
    for cell in cells:
        for spec in cell.specs:
            y = {"a": 100.0, "b": 200.0}[cell.arm] + 10 * spec.seed
            _write(spec.logdir, [{"frames": 1000, "return": y}], "scores.jsonl")
            _write(spec.logdir, [{"frames": 1000, "return": 2 * y}], "eval_scores.jsonl")
            _write(spec.logdir, [{"cpu": "test"}], "machines.jsonl")
            (spec.logdir / "config.yaml").write_text(yaml.safe_dump(spec.config.to_dict()))
            (spec.logdir / "checkpoint.pt").write_bytes(b"big")
            if cell.arm == "b":  # the latent objective logs its k-step errors
                _write(spec.logdir, [{"step": i, "jepa/pred_k1": 0.1 * i, "jepa/copy_k1": 1.0,
                                      "jepa/pred_k2": 0.2 * i, "jepa/copy_k2": 2.0}
                                     for i in range(10)], "metrics.jsonl")
            # Seed 0 finished everywhere; seed 1 only in b/atari.
            done = spec.seed == 0 or (cell.arm, cell.condition) == ("b", "atari")
            (spec.logdir / "status.json").write_text(json.dumps(
                {"finished": done, "frames": 1000 if done else 500, "updates": 7}))
    with pytest.raises(SystemExit) as exit_:
        main([*flags, "--publish", str(pub)])
    assert exit_.value.code == 0
    assert "published 5 finished runs" in capsys.readouterr().out
    copied = sorted(p.relative_to(pub).as_posix() for p in pub.glob("*/*/*/seed_*"))
    assert copied == ["a/atari/dmc_cartpole_balance/seed_0", "a/clean/dmc_cartpole_balance/seed_0",
                      "b/atari/dmc_cartpole_balance/seed_0", "b/atari/dmc_cartpole_balance/seed_1",
                      "b/clean/dmc_cartpole_balance/seed_0"]
    run = pub / "b" / "atari" / "dmc_cartpole_balance" / "seed_1"
    assert sorted(p.name for p in run.iterdir()) == [
        "config.yaml", "eval_scores.jsonl", "final_metrics.json", "machines.jsonl", "run.json",
        "scores.jsonl"]
    # The metrics log stays behind; each metric's mean over its last 5 rows is kept.
    kept = json.loads((run / "final_metrics.json").read_text())["metrics"]
    assert kept["jepa/pred_k1"] == pytest.approx(0.7) and kept["step"] == 7
    info = json.loads((run / "run.json").read_text())
    assert (info["method"], info["seed"], info["updates"], info["finished"]) == (
        "b/atari", 1, 7, True)
    # The published folder alone rebuilds the table: only the copied runs count, at the
    # budget the runs were trained for (500 steps x repeat 2) unless --frames says otherwise.
    (pub / "compare.md").unlink()
    main([str(pub), "--report-only", "--no-plots"])
    table = capsys.readouterr().out
    assert "| a | clean | 1/1 | 200.0 | - | 100.0 | - |" in table
    # kept pairs runs by seed: only seed 0 has both, 400 / 400 (not 410 / 400).
    assert "| b | atari | 2/2 | 410.0 [400.0, 420.0] | 1.00 (1p) |" in table
    assert table.index("| a | clean |") < table.index("| a | atari |") < table.index("| b |")
    assert (pub / "compare.md").read_text().strip() in table
    # k-step prediction vs copy-last: finished runs of the arm that logs them (b), each
    # run's last 5 rows (pred_k1 0.5..0.9 -> 0.7).
    assert "| arm | condition | runs | k=1 pred, copy | k=2 pred, copy |" in table
    assert "| b | clean | 1 | 0.700, 1.000 | 1.400, 2.000 |" in table
    assert "| b | atari | 2 | 0.700, 1.000 | 1.400, 2.000 |" in table
    assert "| a | clean | 1 | 0." not in table
    with gzip.open(pub / "scores.json.gz", "rt") as f:
        assert len(json.load(f)) == 5


def test_a_fresh_machine_trains_only_what_the_published_folder_lacks(tmp_path, capsys):
    # A study resumed on a fresh machine: its OUT is gone, the repository's published folder
    # holds b/clean/seed_0 finished and a/clean/seed_0 unfinished (no such run is published).
    arms = ["a=dreamerv3", "b=jepa"]
    out, pub = tmp_path / "fresh", tmp_path / "scores" / "study"
    cells = plan_comparison([ENV], [parse_arm(a) for a in arms], ["clean"], 1, 1000,
                            out.resolve())
    done_run = pub / "b" / "clean" / "dmc_cartpole_balance" / "seed_0"
    _write(done_run, [{"frames": 1000, "return": 250.0}], "scores.jsonl")
    _write(done_run, [{"frames": 1000, "return": 300.0}], "eval_scores.jsonl")
    (done_run / "run.json").write_text(json.dumps(
        {"finished": True, "frames": 1000, "updates": 7, "cpu_s": 9.0, "wall_s": 5.0}))
    half_run = pub / "a" / "clean" / "dmc_cartpole_balance" / "seed_0"
    _write(half_run, [{"frames": 500, "return": 1.0}], "scores.jsonl")
    (half_run / "run.json").write_text(json.dumps({"finished": False, "frames": 500}))
    for run, cell in ((done_run, cells[1]), (half_run, cells[0])):
        (run / "config.yaml").write_text(yaml.safe_dump(cell.specs[0].config.to_dict()))
    assert [str(p) for p in adopt_published(cells, pub)] == [
        str(out.resolve() / "b" / "clean" / "dmc_cartpole_balance" / "seed_0")]
    b_run, a_run = cells[1].specs[0].logdir, cells[0].specs[0].logdir
    assert is_finished(b_run) and not is_finished(a_run) and not a_run.exists()
    assert json.loads((b_run / "status.json").read_text())["updates"] == 7
    # Adopting twice changes nothing; the report counts the adopted run as finished.
    assert adopt_published(cells, pub) == []
    with pytest.raises(SystemExit):
        main(["--env", ENV, "--arm", arms[0], "--arm", arms[1], "--conditions", "clean",
              "--seeds", "1", "--frames", "1000", "--out", str(out), "--report-only",
              "--no-plots", "--publish", str(pub)])
    text = capsys.readouterr().out
    assert "| b | clean | 1/1 | 300.0 | - | 250.0 | - |" in text
    assert "published 1 finished runs" in text
    assert json.loads((done_run / "run.json").read_text())["wall_s"] == 5.0


def test_a_published_run_trained_with_other_settings_is_not_adopted(tmp_path):
    # The same --publish folder with another learning rate: its runs are not this study's.
    out, pub = tmp_path / "fresh", tmp_path / "scores" / "study"
    plan = lambda lr: plan_comparison([ENV], [parse_arm("b=jepa")], ["clean"], 1, 1000,
                                      out.resolve(), sets=[f"opt.lr={lr}", "threads=2"])
    run = pub / "b" / "clean" / "dmc_cartpole_balance" / "seed_0"
    _write(run, [{"frames": 1000, "return": 250.0}], "scores.jsonl")
    (run / "run.json").write_text(json.dumps({"finished": True, "frames": 1000}))
    (run / "config.yaml").write_text(yaml.safe_dump(plan(1e-4)[0].specs[0].config.to_dict()))
    with pytest.raises(SuiteError, match=r"other settings .*opt\.lr: 0\.0003 here, 0\.0001"):
        adopt_published(plan(3e-4), pub)
    assert not (out / "b").exists()  # nothing adopted before the check failed
    # Where it ran (threads, its folder) is not a setting of what it trained.
    cells = plan_comparison([ENV], [parse_arm("b=jepa")], ["clean"], 1, 1000, out.resolve(),
                            sets=["opt.lr=1e-4", "threads=1"])
    assert len(adopt_published(cells, pub)) == 1


def test_a_republish_cut_short_leaves_the_published_run_whole(tmp_path, monkeypatch):
    import benchmarks.study_publish as study_publish

    cells = plan_comparison([ENV], [parse_arm("a=dreamerv3")], ["clean"], 1, 1000,
                            tmp_path / "out")
    spec = cells[0].specs[0]
    _write(spec.logdir, [{"frames": 1000, "return": 5.0}], "scores.jsonl")
    (spec.logdir / "config.yaml").write_text(yaml.safe_dump(spec.config.to_dict()))
    (spec.logdir / "status.json").write_text(json.dumps({"finished": True, "frames": 1000}))
    target = publish_run(cells[0], spec, tmp_path / "pub")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    _write(spec.logdir, [{"frames": 1000, "return": 9.0}], "scores.jsonl")

    def cut_short(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(study_publish, "final_metrics", cut_short)
    with pytest.raises(OSError):
        publish_run(cells[0], spec, tmp_path / "pub")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in target.parent.glob("seed_*")] == ["seed_0"]  # staging is hidden
    assert [p.parent.name for p in score_files(tmp_path / "pub")] == ["seed_0"]
    monkeypatch.undo()
    publish_run(cells[0], spec, tmp_path / "pub")  # the next publish replaces it whole
    assert '9.0' in (target / "scores.jsonl").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["seed_0"]


def test_study_folder_bad_forms(tmp_path, capsys):
    for argv, message in (
            ([str(tmp_path)], "with --report-only and --frames only (got no --report-only)"),
            ([str(tmp_path), "--report-only", "--env", ENV, "--seeds", "2"],
             "with --report-only and --frames only (got --env, --seeds)"),
            ([str(tmp_path), "--report-only"], "holds no <arm>/<condition>/<task>/seed_<s>"),
            (["--report-only"], "--env is required")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in err


def test_a_study_folder_with_a_task_missing_from_one_cell(tmp_path, capsys):
    # Published runs arrive cell by cell: clean holds two tasks, atari only the second one.
    # Cells line up by task name; a cell without some task's run has no mean over tasks.
    # A `video:DIR` condition keeps its name (from run.json), not its folder's.
    envs = ["dmc:cartpole-balance-pixels", "dmc:walker-walk-pixels"]
    cells = plan_comparison(envs, [parse_arm("a=jepa")], ["clean", "video:/data/clips"], 1,
                            1000, tmp_path)
    for cell in cells:
        for spec in cell.specs:
            if cell.condition != "clean" and spec.task == "dmc_cartpole_balance":
                continue
            y = {"dmc_cartpole_balance": 100.0, "dmc_walker_walk": 300.0}[spec.task]
            _write(spec.logdir, [{"frames": 1000, "return": y}], "scores.jsonl")
            (spec.logdir / "config.yaml").write_text(yaml.safe_dump(spec.config.to_dict()))
            (spec.logdir / "run.json").write_text(json.dumps({"method": f"a/{cell.condition}",
                                                              "finished": True}))
    main([str(tmp_path), "--report-only", "--no-plots"])
    table = capsys.readouterr().out
    assert "| a | clean | 0/1 | - | - | 200.0 | - |" in table  # one seed: no interval
    assert "| a | video:/data/clips | 0/0 | - | - | - | - |" in table


def test_prediction_table_columns_cover_every_horizon(tmp_path):
    # Arm a predicts 3 steps ahead, arm b 2: one header for k = 1..3, `-` where b stops.
    cells = plan_comparison([ENV], [parse_arm("a=jepa"), parse_arm("b=jepa")], ["clean"], 1,
                            1000, tmp_path)
    for cell in cells:
        spec = cell.specs[0]
        horizon = 3 if cell.arm == "a" else 2
        _write(spec.logdir, [{**{f"jepa/pred_k{k}": 0.5 for k in range(1, horizon + 1)},
                              **{f"jepa/copy_k{k}": 1.0 for k in range(1, horizon + 1)}}],
               "metrics.jsonl")
        (spec.logdir / "status.json").write_text(json.dumps({"finished": True}))
    lines = prediction_table(cells)
    assert "| arm | condition | runs | k=1 pred, copy | k=2 pred, copy | k=3 pred, copy |" in lines
    assert "| a | clean | 1 | 0.500, 1.000 | 0.500, 1.000 | 0.500, 1.000 |" in lines
    assert "| b | clean | 1 | 0.500, 1.000 | 0.500, 1.000 | - |" in lines


def test_a_run_still_training_has_no_final_score(tmp_path):
    # Seed 1 stopped at 920 of 1000 frames: its evaluation and episodes there fall in the
    # last 10% of the budget, yet they are no score at the budget. Seed 0 finished; its
    # last evaluation played two episodes: its score is their mean.
    cells = plan_comparison([ENV], [parse_arm("a=dreamerv3")], ["clean"], 2, 1000,
                            tmp_path.resolve())
    for spec, last in zip(cells[0].specs, (1000, 920)):
        _write(spec.logdir, [{"frames": last, "return": 5.0}], "scores.jsonl")
        _write(spec.logdir, [{"frames": 500, "return": 1.0}, {"frames": last, "return": 6.0},
                             {"frames": last, "return": 8.0}], "eval_scores.jsonl")
        (spec.logdir / "status.json").write_text(json.dumps({"finished": last == 1000}))
    evals = final_scores(cells[0], 1000, evals=True)
    assert evals[0, 0] == 7.0 and np.isnan(evals[1, 0])
    train = final_scores(cells[0], 1000, evals=False)
    assert train[0, 0] == 5.0 and np.isnan(train[1, 0])
    # Asked at a budget beyond what the runs trained to, a finished run has no score either.
    assert np.isnan(final_scores(cells[0], 1050, evals=True)).all()
    assert np.isnan(final_scores(cells[0], 1050, evals=False)).all()
