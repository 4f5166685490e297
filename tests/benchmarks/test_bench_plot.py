"""Plots: the series handed to matplotlib, the PNG files and the summary table."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.plot import aggregate_panels, budgets_for, draw, main, task_panels
from benchmarks.scores import Run, read_scores, write_scores


def _ours(tmp_path, make_run_dir):
    make_run_dir(tmp_path / "runs" / "atari100k_pong" / "seed_0", "atari100k:pong", 0,
                 [(100_000, -21.0), (200_000, -10.0), (300_000, 0.0)], repeat=4)
    make_run_dir(tmp_path / "runs" / "atari100k_pong" / "seed_1", "atari100k:pong", 1,
                 [(100_000, -19.0), (200_000, -6.0), (300_000, 4.0)], repeat=4)
    return read_scores(tmp_path / "runs")


def test_series_data(tmp_path, make_run_dir):
    ours = _ours(tmp_path, make_run_dir)
    refs = [Run("atari100k_pong", "dreamerv3", 0, [150_000, 250_000], [-15.0, -5.0]),
            Run("atari100k_boxing", "dreamerv3", 0, [100_000], [5.0])]
    budgets = budgets_for(ours, refs, None)
    assert budgets == {"atari100k": 300_000}  # ours stop before 90% of 400k
    (panel,) = task_panels(ours, refs, budgets, bins=3)
    assert panel.name == "atari100k_pong"
    first, ref = panel.series
    assert first.ours and first.label == "ours:dreamerv3" and first.runs == 2
    np.testing.assert_allclose(first.x, [100_000, 200_000, 300_000])
    np.testing.assert_allclose(first.mean, [-20.0, -8.0, 2.0])
    np.testing.assert_allclose(first.low, [-21.0, -10.0, 0.0])
    np.testing.assert_allclose(first.high, [-19.0, -6.0, 4.0])
    assert ref.label == "dreamerv3" and not ref.ours
    np.testing.assert_allclose(ref.mean, [np.nan, -15.0, -5.0])
    (agg,) = aggregate_panels(ours, refs, budgets, bins=3)
    # Only pong (the game of ours) enters every method's aggregate.
    hns = (np.array([-20.0, -8.0, 2.0]) + 20.7) / 35.3
    np.testing.assert_allclose(agg.series[0].mean, hns)
    assert agg.series[1].label == "dreamerv3 (1 tasks)"


def test_std_spread_and_png(tmp_path, make_run_dir):
    ours = _ours(tmp_path, make_run_dir)
    (panel,) = task_panels(ours, [], {"atari100k": 300_000}, bins=3, spread="std")
    np.testing.assert_allclose(panel.series[0].high - panel.series[0].mean, [1.0, 2.0, 2.0])
    path = draw(panel, tmp_path / "out" / "pong.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_cli_with_reference(tmp_path, make_run_dir, capsys):
    _ours(tmp_path, make_run_dir)
    ref = write_scores([Run("atari_pong", "dreamerv3", 0, [295_000, 300_000], [1.0, 3.0])],
                       tmp_path / "atari100k-dreamerv3.json.gz")
    main([str(tmp_path / "runs"), "--reference", str(ref), "--out", str(tmp_path / "plots")])
    printed = capsys.readouterr().out
    assert "## atari100k at 300,000 env frames" in printed
    assert "| atari100k_pong | 2.000 (2) | 2.000 (1) |" in printed
    assert "mean_hns" in printed
    assert (tmp_path / "plots" / "summary.md").read_text() in printed
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["aggregate_atari100k.png", "atari100k_pong.png"]


def test_reference_only(curves, tmp_path, capsys):
    main(["--reference", str(curves / "dmc_proprio-dreamerv3.json.gz"), "--out",
          str(tmp_path), "--bins", "10"])
    printed = capsys.readouterr().out
    assert "## dmc at 500,000 env frames" in printed
    assert "| **mean** | 741.4 |" in printed and "| **median** | 842.6 |" in printed
    assert len(list(tmp_path.glob("*.png"))) == 18 + 1


def test_fixture_reference_only(fake_curves, tmp_path, capsys):
    main(["--reference", str(fake_curves / "dmc_proprio-dreamerv3.json.gz"), "--out",
          str(tmp_path), "--bins", "10", "--budget", "500000"])
    printed = capsys.readouterr().out
    assert "## dmc at 500,000 env frames" in printed
    assert "| **mean** | 915.0 |" in printed and "| **median** | 915.0 |" in printed
    assert len(list(tmp_path.glob("*.png"))) == 2 + 1  # one per task and the aggregate


def test_plot_of_a_missing_or_empty_folder_is_one_line(tmp_path, capsys):
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises(SystemExit) as exit_:
            main([str(path)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(path) in err


def _scores_folder(root):
    """A folder laid out like DreamerV3's `scores/` plus TD-MPC2 CSVs, with values that tell
    the files apart: proprio 900, vision 100, Atari 1, CSVs 700 (state) and 50 (pixels)."""
    folder = root / "scores"
    xs = [440_000, 460_000, 480_000, 500_000]
    for bench, value, tasks in [("dmc_proprio", 900.0, ["dmc_walker_walk", "dmc_hopper_hop"]),
                                ("dmc_vision", 100.0, ["dmc_walker_walk"]),
                                ("atari100k", 1.0, ["atari_pong"])]:
        write_scores([Run(t, "dreamerv3", 0, xs, [value] * 4) for t in tasks],
                     folder / f"{bench}-dreamerv3.json.gz")
    for method, value in [("tdmpc2", 700), ("tdmpc2-pixels", 50)]:
        (folder / method).mkdir()
        for task in ("walker-walk", "hopper-hop"):
            (folder / method / f"{task}.csv").write_text(
                f"step,reward,seed\n0,0,1\n200000,{value},1\n300000,{value},1\n")
    return folder


def test_reference_folder_picks_the_files_of_our_runs(tmp_path, make_run_dir, capsys):
    runs = tmp_path / "runs" / "dmc_proprio"
    for seed in (0, 1):
        make_run_dir(runs / "dmc_walker_walk" / f"seed_{seed}", "dmc:walker-walk", seed,
                     [(400_000, 300.0), (480_000, 400.0 + seed)])
    main([str(runs), "--reference", str(_scores_folder(tmp_path)), "--out", str(tmp_path / "p"),
          "--budget", "500000"])
    printed = capsys.readouterr().out
    # Proprio DreamerV3 (900) and state TD-MPC2 (700), walker only: no vision, no Atari.
    assert "| dmc_walker_walk | 400.5 (2) | 900.0 (1) | 700.0 (1) |" in printed
    assert "tdmpc2-pixels" not in printed and "atari" not in printed
    assert "hopper" not in printed


def test_reference_folder_alone_labels_each_benchmark(tmp_path, capsys):
    main(["--reference", str(_scores_folder(tmp_path)), "--out", str(tmp_path / "p"),
          "--budget", "500000"])
    printed = capsys.readouterr().out
    assert "dreamerv3 (dmc_proprio)" in printed and "dreamerv3 (dmc_vision)" in printed
    assert "## atari100k" in printed


@pytest.mark.parametrize(("runs_dir", "reference", "expected"), [
    ("runs/dmc", None, "did you mean"),
    ("runs/dmc_proprio", "nosuch", "danijar/dreamerv3, folder scores/"),
    ("runs/dmc_proprio", "empty", "holds no reference score file (e.g. dmc_proprio-"),
])
def test_plot_errors_are_one_line(tmp_path, make_run_dir, runs_dir, reference, expected):
    import os
    import subprocess
    import sys
    from pathlib import Path

    make_run_dir(tmp_path / "runs" / "dmc_proprio" / "dmc_walker_walk" / "seed_0",
                 "dmc:walker-walk", 0, [(1000, 1.0)])
    (tmp_path / "empty").mkdir()
    argv = [runs_dir] + (["--reference", reference] if reference else [])
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "benchmarks.plot", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and "Traceback" not in err, err
    assert expected in err
    if runs_dir == "runs/dmc":
        assert "runs/dmc_proprio" in err


def test_dmc_state_and_pixel_runs_stay_apart(tmp_path, make_run_dir, capsys):
    # Their method labels do not say the observation: one report of both would average a
    # state seed with a pixel seed. Each alone gets its own benchmark's published line.
    episodes = [(250_000, 100.0), (500_000, 300.0)]
    make_run_dir(tmp_path / "state" / "seed_0", "dmc:walker-walk", 0, episodes)
    pixels = make_run_dir(tmp_path / "pixels" / "seed_0", "dmc:walker-walk", 0, episodes)
    with (pixels / "config.yaml").open("a") as f:
        f.write("  options: {obs: pixels}\n")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "state"), str(tmp_path / "pixels"), "--out", str(tmp_path / "p")])
    assert "dmc_proprio and dmc_vision" in capsys.readouterr().err
    main([str(tmp_path / "state"), "--out", str(tmp_path / "p1"), "--budget", "500000"])
    assert "Published" in capsys.readouterr().out  # the proprio 500k aggregates
    main([str(tmp_path / "pixels"), "--out", str(tmp_path / "p2"), "--budget", "500000"])
    assert "Published" not in capsys.readouterr().out  # vision's are at 1M frames, not these
