"""Vector envs: NEXT_STEP autoreset, metadata and per-env seeding, in-process and in workers."""

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

import envs


def _check_next_step(vec, steps, expect_done_at):
    obs, _ = vec.reset()
    first = {k: v.copy() for k, v in obs.items()}
    key = next(iter(first))
    assert not np.array_equal(first[key][0], first[key][1])  # sub-envs seeded differently
    done_at, was_done = None, None
    for step in range(steps):
        obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
        done = terminated | truncated
        if done_at is not None and step == done_at + 1:
            # The autoreset step: reward 0, not done, a fresh episode's observation.
            assert np.all(reward[was_done] == 0)
            assert not done[was_done].any()
            # CartPole's reset draws every component from [-0.05, 0.05]; the episode that
            # ended had left that box (a pole past 12 degrees or a cart past 2.4).
            assert np.all(np.abs(obs[key][was_done]) <= 0.05)
            return
        if done.any() and done_at is None:
            done_at, was_done = step, done.copy()
    assert done_at == expect_done_at


def test_sync_gym_next_step():
    vec = envs.make_vector("gym:CartPole-v1", 3, seed=0, asynchronous=False)
    assert isinstance(vec.unwrapped, gym.vector.SyncVectorEnv)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.metadata["action_repeat"] == 1
    assert vec.unwrapped.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP
    _check_next_step(vec, 200, None)
    vec.close()


@pytest.mark.parametrize("asynchronous", [None, True])
def test_dmc_state_time_limit(asynchronous):
    vec = envs.make_vector("dmc:walker-walk", 2, seed=0, time_limit=6, asynchronous=asynchronous)
    expected = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    assert isinstance(vec.unwrapped, expected)
    assert vec.metadata["action_repeat"] == 2
    assert vec.single_observation_space["vector"].shape == (24,)
    obs, _ = vec.reset()
    for step in range(4):
        obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
        assert not terminated.any()
        assert truncated.all() == (step == 2)
        if step == 3:
            assert np.all(reward == 0)
    vec.close()


def test_vector_seeding_is_reproducible():
    def first_obs():
        vec = envs.make_vector("gym:CartPole-v1", 2, seed=11)
        obs = vec.reset()[0]["vector"]
        vec.close()
        return obs

    np.testing.assert_array_equal(first_obs(), first_obs())


def test_async_dmc_pixels_spawned_workers():
    vec = envs.make_vector("dmc:cartpole-swingup-pixels", 2, seed=0, time_limit=4)
    assert isinstance(vec.unwrapped, gym.vector.AsyncVectorEnv)
    # Spawned, not forked: a forked MuJoCo GL context is not safe to render in.
    assert [type(p).__name__ for p in vec.unwrapped.processes] == ["SpawnProcess"] * 2
    obs, _ = vec.reset()
    assert obs["image"].shape == (2, 64, 64, 3) and obs["image"].dtype == np.uint8
    _, reward, _, truncated, _ = vec.step(vec.action_space.sample())
    _, reward, _, truncated, _ = vec.step(vec.action_space.sample())
    assert truncated.all()
    # Ctrl-C, SIGTERM or SIGHUP reach every process of the group; the workers leave the
    # shutdown to the parent (a run saves first), so they still step and close after it.
    for process in vec.unwrapped.processes:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(process.pid, signum)
    time.sleep(0.5)
    assert all(p.is_alive() for p in vec.unwrapped.processes)
    vec.step(vec.action_space.sample())
    vec.close()
