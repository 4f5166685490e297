"""MiniGrid suite: full and partial RGB views, the mission option."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.minigrid import MISSION_DIM, encode_mission

# check_env is run on the wrapped env on purpose: the wrappers are what we ship.
pytestmark = pytest.mark.filterwarnings("ignore:.*different from the unwrapped:UserWarning")


@pytest.mark.parametrize("view", ["full", "partial"])
def test_check_env_and_views(view):
    env = envs.make("minigrid:MiniGrid-DoorKey-5x5-v0", seed=0, view=view)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset()
    assert set(obs) == {"image"}
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["image"].std() > 0
    assert env.action_space == gym.spaces.Discrete(7)
    assert env.metadata["action_repeat"] == 1


def test_mission_vector_and_render():
    env = envs.make(
        "minigrid:MiniGrid-GoToObject-6x6-N2-v0", seed=0, mission=True, render_mode="rgb_array"
    )
    obs, info = env.reset()
    assert obs["vector"].shape == (MISSION_DIM,) and obs["vector"].dtype == np.float32
    np.testing.assert_array_equal(obs["vector"], encode_mission(info["mission"]))
    assert obs["vector"].sum() == len(info["mission"].split())
    assert env.render().ndim == 3


def test_views_differ_and_seed_repeats():
    full = envs.make("minigrid:MiniGrid-DoorKey-5x5-v0", seed=1).reset()[0]["image"]
    again = envs.make("minigrid:MiniGrid-DoorKey-5x5-v0", seed=1).reset()[0]["image"]
    part = envs.make("minigrid:MiniGrid-DoorKey-5x5-v0", seed=1, view="partial").reset()[0]
    np.testing.assert_array_equal(full, again)
    assert not np.array_equal(full, part["image"])
