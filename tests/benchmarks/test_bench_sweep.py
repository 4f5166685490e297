"""dreamer-sweep: distribution parsing and the best-config preset (no Ray trials)."""

from __future__ import annotations

import re

import pytest
import yaml

from agents.run.config import ConfigError, load_config, nest
from benchmarks.sweep import (
    Dist,
    SweepSpecError,
    asha,
    best_result,
    build_parser,
    parse_param,
    same_sweep,
    trials_table,
    write_best,
)
from benchmarks.sweep import main as sweep_main


def test_parse_distributions():
    assert parse_param("opt.lr=loguniform(1e-5, 1e-3)") == (
        "opt.lr", Dist("loguniform", (1e-5, 1e-3)))
    assert parse_param("run.train_ratio=choice(128,256,512)") == (
        "run.train_ratio", Dist("choice", (128, 256, 512)))
    assert parse_param("actor_critic.actent=uniform(0,0.01)")[1] == Dist("uniform", (0, 0.01))
    assert parse_param("replay.batch_size=randint(8,33)")[1] == Dist("randint", (8, 33))
    assert parse_param("size=choice(1m, 12m)")[1].args == ("1m", "12m")


def test_distributions_become_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    assert isinstance(Dist("choice", (1, 2)).to_tune(), Categorical)
    log = Dist("loguniform", (1e-5, 1e-3)).to_tune()
    assert isinstance(log, Float) and log.lower == 1e-5 and log.upper == 1e-3
    assert isinstance(Dist("randint", (1, 4)).to_tune(), Integer)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("opt.lr", "KEY=DIST"),
        ("opt lr=uniform(0,1)", "KEY=DIST"),
        ("opt.lr=gauss(0,1)", "allowed: choice"),
        ("opt.lr=0.1", "not a distribution"),
        ("opt.lr=uniform(1)", "two numbers"),
        ("opt.lr=uniform(1,0)", "lo < hi"),
        ("opt.lr=loguniform(0,1)", "0 < lo"),
        ("replay.batch_size=randint(1,2.5)", "two integers"),
        ("opt.lr=choice()", "at least one"),
    ],
)
def test_bad_params(text, message):
    with pytest.raises(SweepSpecError, match=message):
        parse_param(text)


def test_best_yaml_is_a_nested_preset(tmp_path):
    path = write_best(tmp_path / "best.yaml",
                      {"opt.lr": 1e-05, "run.train_ratio": 64, "size": "1m"},
                      header="best trial")
    text = path.read_text()
    assert text.startswith("# best trial\n")
    assert yaml.safe_load(text) == {"opt": {"lr": 1e-05}, "run": {"train_ratio": 64},
                                    "size": "1m"}
    with pytest.raises(ConfigError, match="clashes"):
        nest({"opt": 1, "opt.lr": 2})


def test_best_yaml_loads_as_dreamer_run_config(tmp_path):
    path = write_best(tmp_path / "best.yaml", {"opt.lr": 2.5e-4, "run.train_ratio": 32})
    cfg = load_config("gym:CartPole-v1", files=[str(path)])
    assert cfg.opt.lr == pytest.approx(2.5e-4) and cfg.run.train_ratio == 32


def test_trials_table():
    rows = [{"trial": "a_00000", "status": "ok", "opt.lr": 1.23456e-4, "step": 300.0,
             "episode/return": 21.5}]
    lines = trials_table(rows, ["opt.lr"], "episode/return").splitlines()
    assert lines[0].split() == ["trial", "status", "opt.lr", "step", "episode/return"]
    assert lines[1].split() == ["a_00000", "ok", "0.0001235", "300", "21.5"]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("opt.lrr=loguniform(1e-5,1e-3)", "--param opt.lrr: .*did you mean 'opt.lr'"),
        ("opt.lr=uniform(-1,1e-3)", "--param opt.lr: "),
        ("run.train_ratio=choice(128,0)", "--param run.train_ratio: "),
    ],
)
def test_a_param_the_config_refuses_fails_before_ray_starts(param, message, capsys):
    with pytest.raises(SystemExit):
        sweep_main(["--env", "gym:CartPole-v1", "--param", param, "--samples", "1"])
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Ray" not in err


def test_the_best_trial_is_one_that_ended_well():
    # A trial that reported a high return and then failed (diverged) is not the best.
    from types import SimpleNamespace as Result

    results = [Result(error=RuntimeError("diverged"), config={"lr": 1}, metrics={"r": 100.0}),
               Result(error=None, config={"lr": 2}, metrics={"r": 50.0}),
               Result(error=None, config={"lr": 3}, metrics={"r": 20.0}),
               Result(error=None, config={"lr": 4}, metrics={"r": float("nan")}),
               Result(error=None, config={"lr": 5}, metrics={})]
    assert best_result(results, "r", "max").config == {"lr": 2}
    assert best_result(results, "r", "min").config == {"lr": 3}
    assert best_result(results[:1], "r", "max") is None


def test_a_sweep_folder_resumes_its_own_sweep_and_refuses_another(tmp_path):
    argv = ["--env", "gym:CartPole-v1", "--param", "opt.lr=loguniform(1e-5,1e-3)",
            "--out", str(tmp_path)]
    args = build_parser().parse_args(argv)
    assert not same_sweep(tmp_path, args)  # a new sweep: its settings are written
    assert same_sweep(tmp_path, build_parser().parse_args(argv))  # the same: resume it
    other = build_parser().parse_args([*argv, "--samples", "3"])
    with pytest.raises(SweepSpecError, match=r"other settings \(samples\)"):
        same_sweep(tmp_path, other)


def test_asha_never_stops_a_trial_at_its_budget():
    # Ray puts a rung at max_t and stops trials that reach it: either would cut a trial
    # short of its last evaluation and checkpoint.
    for budget, grace in [(150, 75), (100_000, None), (50_000, 1000), (10, 20)]:
        scheduler = asha(budget, grace)
        rungs = [r for bracket in scheduler._brackets for r, _ in bracket._rungs]
        assert all(r < budget for r in rungs), (budget, rungs)
        assert not scheduler._stop_last_trials
