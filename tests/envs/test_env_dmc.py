"""DeepMind Control suite: contract, seeding, time limits, rendering, physics info."""

import dm_env
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs

# check_env is run on the wrapped env on purpose: the wrappers are what we ship.
pytestmark = pytest.mark.filterwarnings("ignore:.*different from the unwrapped:UserWarning")


@pytest.fixture
def closing():
    made = []
    yield lambda env: made.append(env) or env
    for env in made:
        env.close()


@pytest.mark.parametrize(
    ("spec", "options", "keys"),
    [
        ("dmc:cartpole-balance", {}, {"vector"}),
        ("dmc:walker-walk-pixels", {}, {"image"}),
        ("dmc:ball_in_cup-catch", {"obs": "both", "fast_render": True}, {"image", "vector"}),
        # `-both` specs get the pixel preset, whose obs=pixels the suffix extends.
        ("dmc:walker-walk-both", {"obs": "pixels", "fast_render": True}, {"image", "vector"}),
    ],
)
def test_check_env_and_contract(spec, options, keys, closing):
    env = closing(envs.make(spec, seed=0, **options))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset()
    assert set(obs) == keys
    if "image" in keys:
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 0  # a real picture, not a blank buffer
    if "vector" in keys:
        assert obs["vector"].dtype == np.float32 and obs["vector"].ndim == 1
    assert env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.metadata["action_repeat"] == 2


def test_seed_determinism(closing):
    runs = []
    for _ in range(2):
        env = closing(envs.make("dmc:walker-walk", seed=7))
        obs, _ = env.reset()
        actions = np.random.default_rng(0).uniform(-1, 1, (20, 6)).astype(np.float32)
        trace = [obs["vector"]] + [env.step(a)[0]["vector"] for a in actions]
        runs.append(np.stack(trace))
    np.testing.assert_array_equal(runs[0], runs[1])
    other = closing(envs.make("dmc:walker-walk", seed=8)).reset()[0]["vector"]
    assert not np.array_equal(other, runs[0][0])


def test_default_time_limit_is_truncation(closing):
    env = closing(envs.make("dmc:cartpole-balance", seed=0))  # 1000 frames / repeat 2
    env.reset()
    for step in range(1, 501):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (step == 500)


def test_discount_zero_is_termination(closing, monkeypatch):
    env = closing(envs.make("dmc:walker-walk", seed=0))
    env.reset()
    inner = env.unwrapped._env
    real_step = inner.step
    # dm_control marks a true episode end with discount 0 (no suite task here does so early).
    monkeypatch.setattr(
        inner, "step", lambda a: dm_env.termination(0.5, real_step(a).observation)
    )
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert terminated and not truncated and reward == 0.5  # stopped after the first repeat


def test_short_time_limit_and_repeat(closing):
    env = closing(envs.make("dmc:walker-walk", seed=0, time_limit=9, repeat=3))
    env.reset()
    dones = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert dones == [False, False, True]
    assert env.metadata["action_repeat"] == 3


def test_time_limit_longer_than_dm_controls(closing):
    # 1,500 frames at repeat 2: 750 steps, not dm_control's own 1,000 frames (500 steps).
    env = closing(envs.make("dmc:cartpole-balance", seed=0, time_limit=1500))
    env.reset()
    truncated = [env.step(env.action_space.sample())[3] for _ in range(750)]
    assert not any(truncated[:-1]) and truncated[-1]


def test_render_and_physics_info(closing):
    env = closing(envs.make("dmc:walker-walk", render_mode="rgb_array", physics_info=True))
    obs, info = env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    physics = env.unwrapped._env.physics
    assert info["qpos"].shape == (physics.model.nq,)
    _, _, _, _, info = env.step(env.action_space.sample())
    np.testing.assert_allclose(info["qvel"], physics.data.qvel, rtol=1e-6)


def test_quadruped_uses_camera_two(closing):
    env = closing(envs.make("dmc:quadruped-walk-pixels", size=32))
    assert env.unwrapped._camera_id == 2
    assert env.reset(seed=0)[0]["image"].shape == (32, 32, 3)
