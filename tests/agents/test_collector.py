"""Collector on a tiny deterministic env: autoreset rows, action alignment, records."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.run.collector import Collector, CollectorError, random_policy
from replay import SequenceReplay


class CountEnv(gym.Env):
    """obs vector = (step in episode, env id, episodes started); reward = action index.

    Episodes last `length` steps; they terminate when `terminate` else truncate.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, env_id: int, length: int, terminate: bool, continuous: bool = False):
        self.env_id, self.length, self.terminate = env_id, length, terminate
        self.observation_space = gym.spaces.Dict(
            {
                "vector": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                "image": gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
            }
        )
        if continuous:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            self.action_space = gym.spaces.Discrete(3)
        self.render_mode = "rgb_array"
        self.t, self.episode = 0, -1

    def _obs(self):
        image = np.full((4, 4, 3), self.t, np.uint8)
        vector = np.array([self.t, self.env_id, self.episode], np.float32)
        return {"vector": vector, "image": image}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        reward = float(np.sum(action)) if np.ndim(action) else float(action)
        done = self.t >= self.length
        return self._obs(), reward, done and self.terminate, done and not self.terminate, {}

    def render(self):
        return np.full((8, 8, 3), self.t, np.uint8)


def make_vec(lengths=(3, 5), continuous=False) -> gym.vector.SyncVectorEnv:
    fns = [
        (lambda i=i, n=n: CountEnv(i, n, terminate=i % 2 == 0, continuous=continuous))
        for i, n in enumerate(lengths)
    ]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def cycling_policy(obs, carry):
    """Discrete action (step + 1) % 3 as one-hot; carry counts calls and sees is_first."""
    index = (obs["vector"][:, 0].astype(int) + 1) % 3
    carry = (0 if carry is None else carry[0]) + 1, obs["is_first"].copy()
    return np.eye(3, dtype=np.float32)[index], carry


def stored(replay: SequenceReplay):
    data = replay._buffer.storage[:]  # [time, env], not wrapped in these tests
    return {k: v.numpy() for k, v in data.items()}


def test_rows_follow_the_replay_convention():
    env = make_vec()
    replay = SequenceReplay(capacity=1000, num_envs=2, seed=0)
    collector = Collector(env, replay)
    records = collector.collect(cycling_policy, 20)
    assert len(replay) == 2 * 21  # initial reset row + one row per vector step
    assert collector.vector_steps == 20 and collector.agent_steps == 40
    rows = stored(replay)
    t, env_id, episode = (rows["vector"][..., k] for k in range(3))
    assert (env_id == np.arange(2)).all()
    first = rows["is_first"]
    assert first[0].all()
    # No fake transition: every is_first row is a reset obs, every other row follows its
    # predecessor in the same episode by exactly one env step.
    assert (t[first] == 0).all()
    assert (t[1:][~first[1:]] == t[:-1][~first[1:]] + 1).all()
    assert (episode[1:][~first[1:]] == episode[:-1][~first[1:]]).all()
    assert (rows["action"][first] == 0).all() and (rows["reward"][first] == 0).all()
    assert not (rows["is_last"][first].any() or rows["is_terminal"][first].any())
    # The stored action is the one taken at the previous row, and led to this reward.
    action_index = rows["action"].argmax(-1)
    assert (action_index[1:][~first[1:]] == ((t[:-1] + 1) % 3)[~first[1:]]).all()
    assert (rows["reward"][~first] == action_index[~first]).all()
    assert np.allclose(rows["action"][~first].sum(-1), 1.0)
    # Episode ends: lengths 3 (terminated) and 5 (truncated), reset on the next row.
    last = rows["is_last"]
    assert (t[last] == np.array([3, 5])[np.nonzero(last)[1]]).all()
    assert (rows["is_terminal"] == (last & (env_id == 0))).all()
    assert (first[1:] == last[:-1]).all()
    # Records: env 0 finishes every 4 vector steps, env 1 every 6.
    assert [r["env"] for r in records].count(0) == 5
    assert [r["env"] for r in records].count(1) == 3
    for r in records:
        length = 3 if r["env"] == 0 else 5
        assert r["length"] == length
        assert r["return"] == sum((s + 1) % 3 for s in range(length))
    assert collector.episodes == 8


def test_collect_is_persistent_and_carry_kept():
    env = make_vec()
    replay = SequenceReplay(capacity=1000, num_envs=2, seed=0)
    collector = Collector(env, replay)
    records = collector.collect(cycling_policy, 7) + collector.collect(cycling_policy, 13)
    assert len(replay) == 2 * 21 and len(records) == 8
    assert collector._carry[0] == 20
    rows = stored(replay)
    # Only autoresets (one per finished episode), no extra reset between the calls.
    assert rows["is_first"][1:].sum() == rows["is_last"].sum() == 8
    batch = replay.sample(4, 10)
    assert (batch["vector"][..., 1] == batch["vector"][:, :1, 1]).all()


def test_a_restart_ends_the_episodes_it_cuts():
    # A resumed run (or an evaluation on the same collector) resets the envs: the last row
    # stored before the new episode starts must end the cut one (is_last, not terminal),
    # as every other is_first row follows an is_last one.
    env = make_vec()
    replay = SequenceReplay(capacity=1000, num_envs=2, seed=0)
    collector = Collector(env, replay)
    collector.collect(cycling_policy, 2)  # both envs mid-episode
    collector._obs = None  # what a new collector on the resumed replay starts from
    collector.collect(cycling_policy, 3)
    rows = stored(replay)
    assert rows["is_first"][3].all() and rows["is_last"][2].all()
    assert not rows["is_terminal"][2].any()
    assert (rows["is_first"][1:] == rows["is_last"][:-1]).all()


def test_continuous_actions_are_clipped_for_the_env_only():
    env = make_vec(continuous=True)
    replay = SequenceReplay(capacity=200, num_envs=2, seed=0)
    collector = Collector(env, replay)

    def policy(obs, carry):
        return torch.full((2, 2), 3.0), carry  # torch output and out of range

    collector.collect(policy, 4)
    rows = stored(replay)
    real = ~rows["is_first"]
    assert (rows["action"][real] == 3.0).all()  # model format kept
    assert (rows["reward"][real] == 2.0).all()  # env saw [1, 1]
    assert rows["action"].dtype == np.float32


def test_bad_policy_output_and_replay_mismatch():
    env = make_vec()
    with pytest.raises(CollectorError, match="num_envs"):
        Collector(env, SequenceReplay(capacity=100, num_envs=3))
    collector = Collector(env)
    with pytest.raises(CollectorError, match="shape"):
        collector.collect(lambda obs, carry: (np.zeros((2, 2), np.float32), carry), 1)


def test_random_policy_and_run_episodes_with_frames():
    env = make_vec(lengths=(4, 2))
    collector = Collector(env)
    policy = random_policy(env.single_action_space, seed=0)
    action, _ = policy({"is_first": np.ones(2, bool)}, None)
    assert action.shape == (2, 3) and (action.sum(-1) == 1).all()
    records, frames = collector.run_episodes(policy, episodes=3, render=True)
    assert len(records) == 3
    assert all(r["length"] == (4 if r["env"] == 0 else 2) for r in records)
    # Each env its share (2 + 1), not the first three to finish: env 1's 2-step episodes
    # end at steps 2, 4 and 6, env 0's 4-step ones at 4 and 8, so those would be two of
    # env 1's and one of env 0's, a mean biased to the short episodes.
    assert sorted(r["env"] for r in records) == [0, 0, 1]
    records, _ = collector.run_episodes(policy, episodes=4)
    assert sorted(r["env"] for r in records) == [0, 0, 1, 1]
    assert [int(f[0, 0, 0]) for f in frames] == [0, 1, 2, 3, 4]  # env 0's whole episode
    box = random_policy(gym.spaces.Box(-1, 1, (5,), np.float32), seed=1)
    action, _ = box({"is_first": np.ones(3, bool)}, None)
    assert action.shape == (3, 5) and np.abs(action).max() <= 1


def test_collector_on_a_project_env():
    import envs

    vec = envs.make_vector("gym:CartPole-v1", num_envs=2, seed=0)
    replay = SequenceReplay(capacity=400, num_envs=2, seed=0)
    collector = Collector(vec, replay)
    policy = random_policy(vec.single_action_space, seed=0)
    records = collector.collect(policy, 60)
    assert records and all(r["return"] == r["length"] for r in records)  # reward 1 per step
    batch = replay.sample(4, 16)
    assert batch["vector"].shape == (4, 16, 4) and batch["action"].shape == (4, 16, 2)
    with pytest.raises(CollectorError, match="render"):
        collector.run_episodes(policy, 1, render=True)  # no image, no rgb_array render
    vec.close()
