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
                       tmp_path / "ref.json.gz")
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
