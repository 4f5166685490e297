"""Tiny environments with known optimal returns, for learning tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MatchCueEnv(gym.Env):
    """Shows a one-hot cue; the action that matches it earns 1.

    With `hold`, the cue is drawn once per episode; otherwise it changes every step,
    so the agent must carry it in its recurrent state until the reward arrives with
    the next observation. Optimum: `length`; random: length / k."""

    metadata = {"render_modes": []}

    def __init__(self, k: int = 3, length: int = 10, hold: bool = False,
                 render_mode: str | None = None):
        self.k, self.length, self.hold, self.render_mode = k, length, hold, render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, (k,), np.float32)
        self.action_space = gym.spaces.Discrete(k)

    def _obs(self) -> np.ndarray:
        return np.eye(self.k, dtype=np.float32)[self.cue]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.cue = int(self.np_random.integers(self.k))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.t += 1
        if not self.hold:
            self.cue = int(self.np_random.integers(self.k))
        return self._obs(), reward, False, self.t >= self.length, {}


class ReachCueEnv(gym.Env):
    """Continuous twin of MatchCueEnv: a held cue in {-0.5, 0.5}; reward 1 - |a - cue|.

    Optimum: `length`; uniform random actions in [-1, 1] score 0.375 * length."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 10, render_mode: str | None = None):
        self.length, self.render_mode = length, render_mode
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.cue = float(self.np_random.choice([-0.5, 0.5]))
        return np.array([self.cue], np.float32), {}

    def step(self, action):
        reward = 1.0 - abs(float(np.clip(action[0], -1, 1)) - self.cue)
        self.t += 1
        return np.array([self.cue], np.float32), reward, False, self.t >= self.length, {}


class NaNRewardEnv(MatchCueEnv):
    """MatchCue whose rewards are NaN: every update sees a non-finite loss."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan"), terminated, truncated, info
