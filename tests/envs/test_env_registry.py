"""The README's "Add an environment" recipe, followed to the letter with a throwaway suite
module, plus spec spellings, listing and suggestions for unknown names."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import envs
from envs import EnvSpecError

# The module the README shows (kept identical: test_readme_shows_this_recipe checks it).
RECIPE = textwrap.dedent('''
    import gymnasium as gym

    from envs.core import rescale_actions, unknown_name, with_metadata
    from envs.gym_suite import DictObservation

    TASKS = {"swing": "Pendulum-v1", "balance": "CartPole-v1"}
    DOMAIN_PRESET = "gym"  # the config preset its runs start from (agents/run/configs/domains.yaml)


    def task_names():
        return sorted(TASKS)


    def make_env(task, *, suite, **options):
        if task not in TASKS:
            raise unknown_name(f"{suite} task", task, task_names(),
                               f"dreamer-run --list-envs {suite}")
        env = gym.make(TASKS[task], **options)
        env = rescale_actions(DictObservation(env, (64, 64)))
        return with_metadata(env, 1)  # 1: no action repeat
''')


@pytest.fixture
def mysuite(tmp_path, monkeypatch):
    (tmp_path / "my_suite.py").write_text(RECIPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(envs.SUITES, "mysuite", "my_suite")  # undone after the test
    envs.register_suite("mysuite", "my_suite")
    yield
    sys.modules.pop("my_suite", None)


def test_readme_shows_this_recipe():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert RECIPE.strip() in readme
    assert 'envs.register_suite("mysuite", "my_suite")' in readme


def test_recipe_suite_makes_envs_and_vector_envs(mysuite):
    env = envs.make("mysuite:swing", seed=0)
    obs, _ = env.reset()
    assert set(obs) == {"vector"} and obs["vector"].dtype == np.float32
    assert env.metadata["action_repeat"] == 1
    env.close()
    vec = envs.make_vector("mysuite:balance", 2, seed=0)
    obs, _ = vec.reset()
    assert obs["vector"].shape == (2, 4)
    vec.close()
    assert envs.list_envs("mysuite") == ["mysuite:balance", "mysuite:swing"]
    with pytest.raises(EnvSpecError, match="did you mean swing"):
        envs.make("mysuite:swin")


@pytest.fixture
def plugin_suite(tmp_path, monkeypatch):
    """The recipe's module installed as the entry point `plug` of `dreamjepa.suites`."""
    from importlib.metadata import EntryPoint

    (tmp_path / "plug_suite.py").write_text(RECIPE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(envs, "SUITES", dict(envs.SUITES))
    eps = [EntryPoint("plug", "plug_suite", "dreamjepa.suites")]
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: eps if group == "dreamjepa.suites" else [])


def test_plugin_suites_from_entry_points(plugin_suite):
    env = envs.make("plug:swing")
    assert env.metadata["action_repeat"] == 1
    env.close()


@pytest.mark.parametrize(("spec", "hint"), [
    ("dmc:walker-run2", "did you mean walker-run"),
    ("gym:cartpole", "did you mean CartPole-v1"),
    ("cartpole", "did you mean gym:CartPole-v1"),
    ("dmcc:walker-walk", "did you mean dmc?"),
    ("atari100k:pongg", "did you mean pong"),
])
def test_unknown_names_suggest_the_closest_in_one_short_line(spec, hint):
    with pytest.raises(EnvSpecError) as err:
        envs.make(spec)
    message = str(err.value)
    assert hint in message and "\n" not in message and len(message) < 400


def test_dreamerv3_spelling_is_accepted():
    assert envs.parse_spec("dmc_walker_walk") == ("dmc", "walker_walk")
    assert envs.parse_spec("atari100k_pong") == ("atari100k", "pong")
    env = envs.make("dmc_walker_walk")
    assert env.observation_space["vector"].shape == (24,)
    env.close()


def test_list_envs():
    dmc = envs.list_envs("dmc")
    assert "dmc:walker-walk" in dmc and "dmc:cartpole-balance" in dmc
    assert "atari100k:pong" in envs.list_envs("atari100k")
    with pytest.raises(EnvSpecError, match="unknown env suite"):
        envs.list_envs("nosuch")


@pytest.mark.parametrize(("spec", "canonical"), [
    ("dmc_walker_walk", "dmc:walker-walk"),
    ("dmc:walker_walk", "dmc:walker-walk"),
    ("dmc_ball_in_cup_catch", "dmc:ball_in_cup-catch"),
    ("dmc_point_mass_easy", "dmc:point_mass-easy"),
    ("dmc:walker_walk-pixels", "dmc:walker-walk-pixels"),
    ("atari_pong", "atari:pong"),
    ("atari100k_pong", "atari100k:pong"),
    ("gym:CartPole-v1", "gym:CartPole-v1"),
])
def test_canonical_spec(spec, canonical):
    assert envs.canonical_spec(spec) == canonical


def test_dreamerv3_spelling_builds_the_same_env():
    env = envs.make("dmc_ball_in_cup_catch", seed=0)
    assert env.spec.id == "dmc:ball_in_cup-catch"
    assert env.observation_space["vector"].shape == (8,)
    env.close()


def test_list_envs_unknown_suite_suggests_and_skips_broken_suites(monkeypatch):
    with pytest.raises(EnvSpecError, match="did you mean dmc") as err:
        envs.list_envs("dmcc")
    assert "\n" not in str(err.value)
    monkeypatch.setitem(sys.modules, "minigrid", None)  # `import minigrid` fails
    monkeypatch.delitem(sys.modules, "envs.minigrid", raising=False)
    every = envs.list_envs()
    assert "dmc:walker-walk" in every and "gym:CartPole-v1" in every
    assert not any(spec.startswith("minigrid:") for spec in every)
    with pytest.raises(EnvSpecError, match="unavailable"):
        envs.list_envs("minigrid")


def test_list_envs_finds_plugin_suites(plugin_suite):
    assert envs.list_envs("plug") == ["plug:balance", "plug:swing"]


def test_suites_declare_their_domain_preset(mysuite, monkeypatch):
    from agents.run.config import ConfigError, load_config

    monkeypatch.setattr(envs, "SUITE_PRESETS", dict(envs.SUITE_PRESETS))
    monkeypatch.setattr(envs, "SHIPPED_PRESETS", {})
    # The module's DOMAIN_PRESET ("gym").
    assert load_config("mysuite:swing").domain == "gym"
    # Declared at registration instead: the minigrid preset's train ratio follows.
    envs.register_suite("mysuite", "my_suite", preset="minigrid")
    config = load_config("mysuite:swing")
    assert config.domain == "minigrid" and config.run.train_ratio == 256
    # A preset of its own.
    envs.register_suite("mysuite", "my_suite", preset="mine",
                        presets={"mine": {"size": "1m", "run": {"train_ratio": 8}}})
    assert load_config("mysuite:swing").run.train_ratio == 8
    envs.register_suite("mysuite", "my_suite", preset="nosuch")
    with pytest.raises(ConfigError, match="unknown domain 'nosuch'; valid domains: dmc_proprio"):
        load_config("mysuite:swing")
    envs.register_suite("mysuite", "my_suite", presets={"gym": {}})
    with pytest.raises(ConfigError, match="reuse built-in preset names"):
        load_config("mysuite:swing")


def test_a_plugin_without_a_preset_is_an_error(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from agents.run.config import ConfigError, load_config

    (tmp_path / "bare_suite.py").write_text(RECIPE.replace("DOMAIN_PRESET", "_UNUSED"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(envs, "SUITES", dict(envs.SUITES))
    monkeypatch.setattr(envs, "SUITE_PRESETS", dict(envs.SUITE_PRESETS))
    eps = [EntryPoint("bare", "bare_suite", "dreamjepa.suites")]
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: eps if group == "dreamjepa.suites" else [])
    with pytest.raises(ConfigError, match="suite 'bare' .*declares no domain preset"):
        load_config("bare:swing")
    sys.modules.pop("bare_suite", None)
