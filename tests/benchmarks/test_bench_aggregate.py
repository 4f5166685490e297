"""Aggregation reproduces the numbers REFERENCE.md computes from the published curves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.aggregate import (
    AggregateError,
    aggregate_curve,
    bin_run,
    final_value,
    hns,
    iqm,
    summarize,
)
from benchmarks.reference_tables import DMC_PROPRIO_TASKS
from benchmarks.scores import Run, read_scores


def test_atari100k_dreamerv3_window_rule(curves):
    runs = read_scores(curves / "atari100k-dreamerv3.json.gz")
    (summary,) = summarize(runs)  # default: 400k frames, episodes ending in [390k, 400k]
    assert summary.domain == "atari100k" and summary.budget == 400_000
    assert summary.window == 10_000
    assert len(summary.per_task) == 26
    assert summary.aggregates["mean_hns"] == pytest.approx(1.247, abs=5e-4)
    assert summary.aggregates["median_hns"] == pytest.approx(0.494, abs=5e-4)
    assert summary.aggregates["superhuman"] == 7
    # Only one UpNDown seed has an episode ending inside the window.
    assert len(summary.per_task_seeds["atari100k_up_n_down"]) == 1


def test_atari100k_dreamerv3_last_episode_rule(curves):
    runs = read_scores(curves / "atari100k-dreamerv3.json.gz")
    (summary,) = summarize(runs, rule="last")
    assert summary.aggregates["mean_hns"] == pytest.approx(1.282, abs=5e-4)
    assert summary.aggregates["median_hns"] == pytest.approx(0.487, abs=5e-4)
    assert summary.aggregates["iqm_hns"] == pytest.approx(0.541, abs=5e-4)
    assert summary.per_task["atari100k_pong"] == pytest.approx(-5.0)


def test_dmc_proprio_dreamerv3_500k(curves):
    (summary,) = summarize(read_scores(curves / "dmc_proprio-dreamerv3.json.gz"), budget=500_000)
    assert summary.window == 50_000  # [450k, 500k]
    assert summary.aggregates["mean"] == pytest.approx(741.4, abs=0.05)
    assert summary.aggregates["median"] == pytest.approx(842.6, abs=0.05)
    assert summary.per_task["dmc_walker_walk"] == pytest.approx(940.8, abs=0.05)


def test_dmc_vision_dreamerv3_1m(curves):
    (summary,) = summarize(read_scores(curves / "dmc_vision-dreamerv3.json.gz"), budget=1e6)
    assert summary.aggregates["mean"] == pytest.approx(785.6, abs=0.05)
    assert summary.aggregates["median"] == pytest.approx(857.6, abs=0.05)


def test_tdmpc2_csv_interpolated_at_logged_250k(curves):
    ids = {f"dmc_{d}_{t}" for d, t in DMC_PROPRIO_TASKS}
    runs = [r for r in read_scores(curves / "tdmpc2_results" / "tdmpc2") if r.task in ids]
    # Logged step 250k is 500k env frames (TD-MPC2 repeats actions twice).
    (summary,) = summarize(runs, budget=500_000)
    assert summary.aggregates["tasks"] == 18
    assert summary.aggregates["mean"] == pytest.approx(780.8, abs=0.05)
    assert summary.aggregates["median"] == pytest.approx(853.5, abs=0.1)


def test_iqm_hand_made():
    # 8 values: drop int(0.25 * 8) = 2 at each end, mean of the middle four.
    assert iqm([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx((2 + 3 + 4 + 5) / 4)
    # 5 values: drop one at each end.
    assert iqm([0.0, 1.0, 2.0, 3.0, 10.0]) == pytest.approx(2.0)
    assert iqm([7.0, math.nan]) == 7.0
    assert math.isnan(iqm([]))


def test_iqm_pools_runs_and_games():
    # pong HNS per seed: 0, 1 (random, human); boxing: 0.5, 2.0 -> pooled [0, 0.5, 1, 2]
    runs = [
        Run("atari100k_pong", "m", 0, [400_000], [-20.7]),
        Run("atari100k_pong", "m", 1, [400_000], [14.6]),
        Run("atari100k_boxing", "m", 0, [400_000], [6.1]),
        Run("atari100k_boxing", "m", 1, [400_000], [24.1]),
    ]
    (summary,) = summarize(runs)
    assert summary.aggregates["iqm_hns"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary.aggregates["mean_hns"] == pytest.approx((0.5 + 1.25) / 2)
    assert summary.normalized["atari100k_boxing"] == pytest.approx(1.25)


def test_final_value_rules():
    xs, ys = np.array([10.0, 50.0, 95.0, 100.0, 120.0]), np.array([1.0, 2.0, 3.0, 5.0, 9.0])
    assert final_value(xs, ys, 100, "window", 10) == pytest.approx(4.0)
    assert final_value(xs, ys, 100, "last") == 5.0
    assert final_value(xs, ys, 75, "interp") == pytest.approx(2.0 + 25 / 45)
    assert math.isnan(final_value(xs, ys, 40, "window", 5))
    with pytest.raises(AggregateError, match="allowed: window, last, interp"):
        final_value(xs, ys, 100, "median")


def test_hns_unknown_game():
    assert hns(14.6, "pong") == pytest.approx(1.0)
    with pytest.raises(AggregateError, match="no random/human"):
        hns(1.0, "tetris")


def test_binning_and_aggregate_curve():
    run = Run("dmc_walker_walk", "m", 0, [0, 5, 10, 15, 30], [1, 3, 5, 7, 100])
    edges = np.array([0.0, 10.0, 20.0, 30.0])
    # Bins (0, 10], (10, 20], (20, 30]; x = 0 joins the first bin.
    np.testing.assert_allclose(bin_run(run, edges), [3.0, 7.0, 100.0])
    other = Run("dmc_walker_walk", "m", 1, [10, 30], [7, 0])
    second = Run("dmc_cheetah_run", "m", 0, [25], [50])
    curve = aggregate_curve([run, other, second], edges)
    # walker seed-mean [5, 7, 50]; cheetah [nan, nan, 50] -> mean over tasks with data.
    np.testing.assert_allclose(curve, [5.0, 7.0, 50.0])


# The same rules on small files a fresh clone builds itself (`fake_curves`), worked by hand.
def test_fixture_atari100k_window_rule(fake_curves):
    (summary,) = summarize(read_scores(fake_curves / "atari100k-dreamerv3.json.gz"))
    assert summary.budget == 400_000 and summary.window == 10_000
    # Episodes ending in [390k, 400k]: pong seed 0 (-10, -6, -2) -> -6, seed 1 (-9, -5, 1)
    # -> -13/3; boxing (30, 40) -> 35.
    pong = (-6 + -13 / 3) / 2
    assert summary.per_task["atari100k_pong"] == pytest.approx(pong)
    assert summary.per_task["atari100k_boxing"] == pytest.approx(35.0)
    # HNS = (score - random) / (human - random): pong (-20.7, 14.6), boxing (0.1, 12.1).
    h_pong, h_boxing = (pong + 20.7) / 35.3, (35 - 0.1) / 12.0
    assert summary.aggregates["mean_hns"] == pytest.approx((h_pong + h_boxing) / 2)
    assert summary.aggregates["median_hns"] == pytest.approx((h_pong + h_boxing) / 2)
    assert summary.aggregates["superhuman"] == 1  # boxing only


def test_fixture_atari100k_last_episode_rule(fake_curves):
    (summary,) = summarize(read_scores(fake_curves / "atari100k-dreamerv3.json.gz"),
                           rule="last")
    # The last episode at or before 400k: pong -2 and 1 -> -0.5; boxing 40.
    assert summary.per_task["atari100k_pong"] == pytest.approx(-0.5)
    assert summary.per_task["atari100k_boxing"] == pytest.approx(40.0)
    runs_hns = [(-2 + 20.7) / 35.3, (1 + 20.7) / 35.3, (40 - 0.1) / 12.0]
    assert summary.aggregates["iqm_hns"] == pytest.approx(iqm(runs_hns))


def test_fixture_dmc_proprio_500k(fake_curves):
    (summary,) = summarize(read_scores(fake_curves / "dmc_proprio-dreamerv3.json.gz"),
                           budget=500_000)
    assert summary.window == 50_000  # 10% of the budget, at most 50k: [450k, 500k]
    # walker: seed 0 (900, 910, 920) -> 910, seed 1 (700, 800, 900) -> 800: 855.
    # cartpole: (990 x 3) -> 990 and (950, 970, 960) -> 960: 975.
    assert summary.per_task["dmc_walker_walk"] == pytest.approx(855.0)
    assert summary.aggregates["mean"] == pytest.approx((855 + 975) / 2)
    assert summary.aggregates["median"] == pytest.approx((855 + 975) / 2)


def test_fixture_tdmpc2_csv_interpolated(fake_curves):
    runs = read_scores(fake_curves / "tdmpc2_results" / "tdmpc2")
    # Logged step 250k = 500k frames: halfway between the 200k and 300k evaluations.
    (summary,) = summarize(runs, budget=500_000)
    assert summary.per_task["dmc_walker_walk"] == pytest.approx((850 + 650) / 2)
    assert summary.per_task["dmc_cartpole_balance"] == pytest.approx(990.0)
    assert summary.aggregates["tasks"] == 2


def test_default_budgets_are_the_published_ones():
    from benchmarks.aggregate import default_budget
    from benchmarks.plot import budgets_for

    assert default_budget("atari100k") == 400_000
    assert default_budget("dmc") == default_budget("dmc", "dmc_proprio") == 500_000
    assert default_budget("dmc", "dmc_vision") == 1_000_000
    assert default_budget("atari") is None  # long-run Atari: no fixed budget
    ours = [Run("dmc_walker_walk", "ours", 0, [1e5, 1e6], [1.0, 2.0])]
    assert budgets_for(ours, [], None, "dmc_vision") == {"dmc": 1_000_000}
    assert budgets_for(ours, [], None, "dmc_proprio") == {"dmc": 500_000}
