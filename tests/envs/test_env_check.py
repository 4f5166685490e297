"""`dreamer-run --check`: a user's env class without a `render_mode` keyword works; a
broken one gets one line per problem."""

from __future__ import annotations

import textwrap

import pytest

import envs
from agents.run.cli import run_main

USER_ENVS = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np


    class NoRenderMode(gym.Env):
        def __init__(self, length=5):  # no render_mode keyword, as in many users' envs
            self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
            self.action_space = gym.spaces.Discrete(2)
            self.length = length

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return np.zeros(3, np.float32), {}

        def step(self, action):
            self.t += 1
            return np.zeros(3, np.float32), 1.0, self.t >= self.length, False, {}


    class WrongShape(NoRenderMode):
        def step(self, action):
            self.t += 1
            return np.zeros(5, np.float64), 1.0, False, False, {}
''')


@pytest.fixture
def user_envs(tmp_path, monkeypatch):
    (tmp_path / "user_envs.py").write_text(USER_ENVS)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_env_class_without_render_mode_builds(user_envs):
    env = envs.make("gym:user_envs:NoRenderMode", seed=0)
    obs, _ = env.reset()
    assert obs["vector"].shape == (3,)
    env.close()


def test_check_passes_a_good_env(user_envs, capsys):
    assert run_main(["--env", "gym:user_envs:NoRenderMode", "--check"]) == 0
    assert capsys.readouterr().out.startswith("ok: gym:user_envs:NoRenderMode passes")


def test_check_names_each_problem_on_one_line(user_envs, capsys):
    assert run_main(["--env", "gym:user_envs:WrongShape", "--check"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    problems = [line for line in lines if line.startswith("problem: ")]
    assert problems == ["problem: observation at step 1 is outside the observation space: "
                        "{'vector': (dtype('float32'), (5,))}"]
    assert any("float64" in line for line in lines if line.startswith("warning: "))


def test_check_reports_an_env_that_cannot_be_built(capsys):
    assert run_main(["--env", "gym:user_envs_missing:Env", "--check"]) == 1
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("problem: cannot build gym:user_envs_missing:Env")
