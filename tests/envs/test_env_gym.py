"""Gymnasium suite: registered ids and a user's own env class."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

# check_env is run on the wrapped env on purpose: the wrappers are what we ship.
pytestmark = pytest.mark.filterwarnings("ignore:.*different from the unwrapped:UserWarning")


class TinyEnv(gym.Env):
    """A 3-step corridor with Box(0, 5) actions and a uint8 image + position observation."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, length: int = 3, render_mode: str | None = None):
        self.length = length
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),
                "pos": gym.spaces.Box(0, length, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.Box(0.0, 5.0, (2,), np.float32)
        self.last_action = None

    def _obs(self):
        pixels = np.full((16, 16, 3), 40 * self.pos, np.uint8)
        return {"pixels": pixels, "pos": np.array([self.pos], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = int(self.np_random.integers(0, 2))
        return self._obs(), {}

    def step(self, action):
        self.last_action = np.asarray(action)
        self.pos += 1
        return self._obs(), 1.0, self.pos >= self.length, False, {}

    def render(self):
        return self._obs()["pixels"]


def test_classic_control_contract():
    env = envs.make("gym:CartPole-v1", seed=0)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset()
    assert set(obs) == {"vector"} and obs["vector"].shape == (4,)
    assert obs["vector"].dtype == np.float32
    assert env.metadata["action_repeat"] == 1


def test_box_actions_rescaled_and_repeat():
    env = envs.make("gym:Pendulum-v1", seed=0, repeat=2, render_mode="rgb_array")
    check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Box(-1, 1, (1,), np.float32)
    env.reset(seed=3)
    assert env.metadata["action_repeat"] == 2
    # One wrapped step is two raw steps of the same action, rescaled ([-1, 1] -> [-2, 2] N m).
    raw = gym.make("Pendulum-v1")
    raw.reset(seed=3)
    rewards = [raw.step(np.full(1, 2.0, np.float32))[1] for _ in range(2)]
    reward = env.step(np.ones(1, np.float32))[1]
    np.testing.assert_allclose(reward, sum(rewards), rtol=1e-5)
    assert env.render().ndim == 3


def test_box_actions_out_of_range_are_clipped():
    # TinyEnv's Box(0, 5) does not clip: an action past [-1, 1] must reach it as a bound.
    env = envs.make(f"gym:{__name__}:TinyEnv", seed=0)
    env.reset()
    env.step(np.array([3.0, -2.0], np.float32))
    np.testing.assert_allclose(env.unwrapped.last_action, [5.0, 0.0])
    assert env.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)


def test_action_repeat_stops_at_episode_end():
    env = envs.make(f"gym:{__name__}:TinyEnv", seed=0, repeat=2, kwargs={"length": 5})
    obs, _ = env.reset(seed=1)
    inner = 5 - int(obs["vector"][0])  # raw steps until the corridor ends
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
        rewards.append(reward)
        done = terminated or truncated
    assert rewards == [2.0] * (inner // 2) + [1.0] * (inner % 2)
    assert env.unwrapped.pos == 5  # never stepped past the end


def test_user_class():
    spec = f"gym:{__name__}:TinyEnv"
    env = envs.make(spec, seed=0, kwargs={"length": 4}, render_mode="rgb_array")
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["image"].shape == (64, 64, 3) and obs["vector"].shape == (1,)
    env.step(np.array([-1.0, 1.0], np.float32))
    np.testing.assert_allclose(env.unwrapped.last_action, [0.0, 5.0])
    steps, terminated = 1, False
    while not terminated:
        terminated = env.step(env.action_space.sample())[2]
        steps += 1
    assert steps == 4 - int(obs["vector"][0])  # the time limit came from kwargs
    assert env.render().shape == (16, 16, 3)


def test_determinism():
    def trace():
        env = envs.make("gym:CartPole-v1", seed=5)
        out = [env.reset()[0]["vector"]]
        out += [env.step(env.action_space.sample())[0]["vector"] for _ in range(5)]
        return np.stack(out)

    np.testing.assert_array_equal(trace(), trace())


def test_missing_dependency_is_reported():
    try:
        import Box2D  # noqa: F401
    except ImportError:
        with pytest.raises(envs.EnvSpecError, match="missing dependency"):
            envs.make("gym:CarRacing-v3")
    else:
        pytest.skip("Box2D is installed, so CarRacing has no missing dependency to report")
