"""Spec parsing and error messages: each names what was wrong and what is allowed."""

import sys

import pytest

import envs
from envs import EnvSpecError
from envs.core import check_options


@pytest.mark.parametrize(
    ("spec", "options", "fragment"),
    [
        ("nosuch:task", {}, "suites: atari, atari100k, dmc, gym, minigrid"),
        ("walker-walk", {}, "not of the form 'suite:task'"),
        ("dmc:", {}, "has no task"),
        ("dmc:walker-fly", {}, "walker-walk"),
        ("dmc:walker-walk", {"colour": 1}, "valid options: ['camera', 'distractor', 'fast_render'"),
        ("dmc:walker-walk", {"obs": "rgb"}, "allowed: ['pixels', 'state', 'both']"),
        ("dmc:walker-walk-pixels", {"obs": "state"}, "conflicts"),
        ("dmc:walker-walk-both", {"obs": "state"}, "conflicts"),
        ("dmc:walker-walk-pixels", {"obs": "both"}, "conflicts"),
        ("dmc:walker-walk", {"repeat": 0}, "integer >= 1"),
        ("dmc:walker-walk", {"size": "big"}, "expected (height, width)"),
        ("dmc:walker-walk", {"camera": 9}, "allowed: -1 (free) to 1"),
        ("atari100k:notagame", {}, "`dreamer-run --list-envs atari100k` lists them all"),
        ("atari:pong", {"sticky": 2.0}, "0 <= p <= 1"),
        ("atari100k:pong", {"frameskip": 4}, "valid options: ["),
        ("gym:NoSuchEnv-v9", {}, "`dreamer-run --list-envs gym` lists them all"),
        ("gym:CartPol-v1", {}, "did you mean CartPole-v1"),
        ("gym:no_such_module:Env", {}, "package.module:Class"),
        ("minigrid:MiniGrid-Nope-v0", {}, "`dreamer-run --list-envs minigrid` lists them all"),
        ("minigrid:MiniGrid-Empty-5x5-v0", {"view": "top"}, "allowed: ['full', 'partial']"),
    ],
)
def test_bad_spec_errors_name_the_choices(spec, options, fragment):
    with pytest.raises(EnvSpecError) as info:
        envs.make(spec, **options)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_bad_num_envs():
    with pytest.raises(EnvSpecError, match="num_envs"):
        envs.make_vector("gym:CartPole-v1", 0)


def test_check_options_merges_defaults():
    merged = check_options("x", {"b": 3}, {"a": 1, "b": 2})
    assert merged == {"a": 1, "b": 3}


def test_suites_listed():
    assert set(envs.SUITES) == {"dmc", "atari", "atari100k", "gym", "minigrid"}
    assert envs.parse_spec("gym:pkg.mod:Cls") == ("gym", "pkg.mod:Cls")


def test_missing_dependency_breaks_only_its_suite(monkeypatch):
    monkeypatch.setitem(sys.modules, "minigrid", None)  # makes `import minigrid` fail
    monkeypatch.delitem(sys.modules, "envs.minigrid", raising=False)
    with pytest.raises(EnvSpecError, match="suite 'minigrid' is unavailable"):
        envs.make("minigrid:MiniGrid-Empty-5x5-v0")
    assert envs.make("gym:CartPole-v1").reset(seed=0)[0]["vector"].shape == (4,)
