"""Score files: the official format, run directories and TD-MPC2 CSVs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from benchmarks.scores import (
    Run,
    ScoreFileError,
    canonical_task,
    domain_of,
    read_run_dir,
    read_scores,
    read_tdmpc2_csv,
    task_id,
    write_scores,
)


def test_task_ids():
    assert task_id("dmc:walker-walk") == "dmc_walker_walk"
    assert task_id("dmc:ball_in_cup-catch-pixels") == "dmc_ball_in_cup_catch"
    assert task_id("atari100k:up_n_down") == "atari100k_up_n_down"
    assert task_id("gym:CartPole-v1") == "gym_cartpole_v1"
    # The 2024 Atari-100k curve file names its games atari_<game>; long-run Atari keeps it.
    assert canonical_task("atari_bank_heist", atari100k=True) == "atari100k_bank_heist"
    assert canonical_task("atari_bank_heist") == "atari_bank_heist"
    assert canonical_task("atari100k_pong") == "atari100k_pong"
    assert domain_of("atari_pong") == "atari" and domain_of("dmc_walker_walk") == "dmc"
    assert domain_of(task_id("atari100k:pong")) == "atari100k"
    with pytest.raises(ScoreFileError, match="suite:task"):
        task_id("walker-walk")


def test_official_round_trip(tmp_path):
    runs = [Run("dmc_walker_walk", "ours:dreamerv3", 3, [2000, 1000], [20.5, 10.0])]
    path = write_scores(runs, tmp_path / "scores.json.gz")
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    assert raw == [{"task": "dmc_walker_walk", "method": "ours:dreamerv3", "seed": 3,
                    "xs": [1000, 2000], "ys": [10.0, 20.5]}]
    (back,) = read_scores(path)
    assert (back.task, back.method, back.seed) == ("dmc_walker_walk", "ours:dreamerv3", 3)
    np.testing.assert_array_equal(back.xs, [1000, 2000])
    np.testing.assert_array_equal(back.ys, [10.0, 20.5])
    # Rewriting the same scores gives the same bytes (no time stamp), so republishing runs
    # leaves untouched score files unchanged in git.
    first = path.read_bytes()
    assert write_scores(runs, tmp_path / "again.json.gz").read_bytes() == first


def test_nan_bins_dropped_and_string_seeds(tmp_path):
    path = tmp_path / "atari100k-old.json"
    path.write_text('[{"task": "atari_pong", "method": "dreamerv3", "seed": "1", '
                    '"xs": [5000, 15000, 25000], "ys": [1.0, NaN, 3.0]}]')
    (run,) = read_scores(path)
    assert run.task == "atari100k_pong" and run.seed == 1
    np.testing.assert_array_equal(run.xs, [5000, 25000])


def test_reference_curve_file(curves):
    runs = read_scores(curves / "atari100k-dreamerv3.json.gz")
    assert len(runs) == 130
    assert {r.task for r in runs} == {r.task for r in runs if r.task.startswith("atari100k_")}
    assert max(r.xs[-1] for r in runs) <= 400_000


def test_tdmpc2_csv_frames_are_twice_the_logged_step(tmp_path):
    folder = tmp_path / "tdmpc2"
    folder.mkdir()
    (folder / "cup-catch.csv").write_text("step,reward,seed\n0,1.0,1\n100000,900.0,1\n"
                                          "0,2.0,2\n100000,950.0,2\n")
    runs = read_tdmpc2_csv(folder / "cup-catch.csv")
    assert [r.seed for r in runs] == [1, 2]
    assert runs[0].task == "dmc_ball_in_cup_catch" and runs[0].kind == "evals"
    np.testing.assert_array_equal(runs[0].xs, [0, 200_000])
    assert read_scores(folder)[1].ys.tolist() == [2.0, 950.0]


def test_run_dir(tmp_path, make_run_dir):
    path = make_run_dir(tmp_path / "x" / "seed_4", "dmc:walker-walk", 4,
                        [(1000, 10.0), (2000, 30.0)])
    run = read_run_dir(path)
    assert (run.task, run.method, run.seed) == ("dmc_walker_walk", "ours:dreamerv3", 4)
    np.testing.assert_array_equal(run.xs, [1000, 2000])
    # A half-written last line (crash) is ignored; the folder form finds nested runs.
    with (path / "scores.jsonl").open("a") as f:
        f.write('{"step": 1500, "fra')
    assert len(read_scores(tmp_path)[0].xs) == 2


def test_bad_inputs(tmp_path):
    with pytest.raises(ScoreFileError, match="no such file"):
        read_scores(tmp_path / "missing.json.gz")
    (tmp_path / "bad.json").write_text('{"task": 1}')
    with pytest.raises(ScoreFileError, match="JSON list"):
        read_scores(tmp_path / "bad.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScoreFileError, match="no run directory"):
        read_scores(tmp_path / "empty")


def test_fixture_reference_file(fake_curves):
    runs = read_scores(fake_curves / "atari100k-dreamerv3.json.gz")
    assert len(runs) == 3 and {r.task for r in runs} == {"atari100k_pong", "atari100k_boxing"}
    assert max(r.xs[-1] for r in runs) <= 400_000
    folder = read_scores(fake_curves)  # a folder of score files reads them all
    assert len(folder) == 3 + 4  # both score files whole; the TD-MPC2 CSVs are not score files


def test_long_run_atari_is_not_scored_as_atari100k(tmp_path):
    # DreamerV3's atari57 and atari100k files both say atari_<game>: only the Atari-100k
    # file's runs are Atari-100k runs, and `atari:` runs take no Atari-100k reference.
    from benchmarks.references import reference_files

    for name in ("atari100k-dreamerv3.json.gz", "atari57-dreamerv3.json.gz"):
        write_scores([Run("atari_pong", "dreamerv3", 0, [1], [1.0])], tmp_path / name)
    assert read_scores(tmp_path / "atari100k-dreamerv3.json.gz")[0].task == "atari100k_pong"
    assert read_scores(tmp_path / "atari57-dreamerv3.json.gz")[0].task == "atari_pong"
    assert [p.name for p in reference_files([tmp_path], ["atari"])] == [
        "atari57-dreamerv3.json.gz"]
    assert [p.name for p in reference_files([tmp_path], ["atari100k"])] == [
        "atari100k-dreamerv3.json.gz"]


def test_reference_files_of_a_folder(tmp_path, make_run_dir):
    from benchmarks.references import benchmark_of, file_benchmark, reference_files

    assert file_benchmark("scores/dmc_proprio-dreamerv3.json.gz") == "dmc_proprio"
    assert file_benchmark("data/dmcvision_drqv2.json.gz") == "dmcvision"
    assert file_benchmark("results/tdmpc2-pixels/walker-walk.csv") == "dmc_vision"
    assert file_benchmark("results/tdmpc2/cup-catch.csv") == "dmc_proprio"
    names = ["atari100k-dreamerv3.json.gz", "dmc_proprio-dreamerv3.json.gz",
             "dmc_proprio-d4pg.json.gz", "dmc_vision-dreamerv3.json.gz"]
    for name in names:
        write_scores([Run("dmc_walker_walk", "m", 0, [1], [1.0])], tmp_path / "scores" / name)
    (tmp_path / "scores" / "tdmpc2").mkdir()
    for task in ("walker-walk", "cup-catch"):
        (tmp_path / "scores" / "tdmpc2" / f"{task}.csv").write_text("step,reward,seed\n")
    picked = reference_files([tmp_path / "scores"], ["dmc_proprio"], {"dmc_walker_walk"})
    assert [p.name for p in picked] == [
        "dmc_proprio-d4pg.json.gz", "dmc_proprio-dreamerv3.json.gz", "walker-walk.csv"]
    assert len(reference_files([tmp_path / "scores"])) == 6  # no runs of ours: everything
    assert len(reference_files([tmp_path / "scores"], ["dmc"])) == 5  # a domain: a prefix
    with pytest.raises(ScoreFileError, match="no reference score file for minigrid"):
        reference_files([tmp_path / "scores"], ["minigrid"])
    with pytest.raises(ScoreFileError, match=r"danijar/dreamerv3, folder scores/"):
        reference_files([tmp_path / "missing"])
    vision = make_run_dir(tmp_path / "v" / "seed_0", "dmc:walker-walk-pixels", 0, [(10, 1.0)])
    assert benchmark_of(read_run_dir(vision)) == "dmc_vision"
    assert benchmark_of(Run("dmc_walker_walk", "m", 0, [1], [1.0])) is None


def test_suite_checks_references_before_running(tmp_path, capsys):
    from benchmarks.atari100k import main as atari_main
    from benchmarks.dmc import main as dmc_main

    for main, argv in [(dmc_main, ["--suite", "proprio", "--tasks", "walker-walk"]),
                       (atari_main, ["--games", "pong"])]:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--reference", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "danijar/dreamerv3" in err
    assert not (tmp_path / "o").exists()
