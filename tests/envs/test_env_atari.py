"""Atari suites: presets, contract, seeding, and ale-py's native vector env."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.atari import PRESETS

# check_env is run on the wrapped env on purpose: the wrappers are what we ship.
pytestmark = pytest.mark.filterwarnings("ignore:.*different from the unwrapped:UserWarning")


@pytest.mark.parametrize("spec", ["atari100k:pong", "atari:ms_pacman"])
def test_check_env_and_contract(spec):
    env = envs.make(spec, seed=0)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset()
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert isinstance(env.action_space, gym.spaces.Discrete)
    assert env.metadata["action_repeat"] == 4
    env.close()


def test_presets_follow_protocols():
    assert PRESETS["atari100k"]["sticky"] == 0.0 and PRESETS["atari100k"]["noops"] == 30
    assert PRESETS["atari"]["sticky"] == 0.25
    for preset in PRESETS.values():
        assert preset["max_frames"] == 108_000 and not preset["life_loss"]
        assert not preset["full_actions"] and preset["repeat"] == 4


def test_seed_determinism_and_gray():
    traces = []
    for _ in range(2):
        env = envs.make("atari100k:breakout", seed=3, gray=True)
        frames = [env.reset()[0]["image"]]
        frames += [env.step(a % 4)[0]["image"] for a in range(30)]
        traces.append(np.stack(frames))
        env.close()
    assert traces[0].shape[1:] == (64, 64, 1)
    np.testing.assert_array_equal(traces[0], traces[1])


def test_render_full_frame():
    env = envs.make("atari100k:pong", render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (210, 160, 3)
    env.close()


def test_native_vector_next_step_autoreset():
    vec = envs.make_vector("atari100k:pong", 2, seed=0, max_frames=40)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.metadata["action_repeat"] == 4
    assert vec.single_observation_space["image"].shape == (64, 64, 3)
    obs, _ = vec.reset()
    assert obs["image"].shape == (2, 64, 64, 3)
    done_at = None
    for step in range(20):
        obs, reward, terminated, truncated, _ = vec.step(np.ones(2, np.int64))
        assert obs["image"].shape == (2, 64, 64, 3) and reward.dtype == np.float64
        if done_at is not None:
            # The step after an episode end is the reset: reward 0, not done.
            assert step == done_at + 1
            assert np.all(reward == 0) and not terminated.any() and not truncated.any()
            break
        if truncated.all():
            done_at = step
    assert done_at == 9  # 40 frames / repeat 4 = 10 agent steps
    vec.close()
