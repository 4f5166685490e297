"""Run a policy on a Gymnasium vector env (NEXT_STEP autoreset) and feed the replay.

Rows follow the replay convention: each row is an observation plus the model-format
`action` that led to it, the `reward` received on arriving there and the flags
`is_first`/`is_last`/`is_terminal`. The reset row that NEXT_STEP autoreset returns after
an episode end is stored as `is_first` with zero action and reward, never as a transition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from replay import SequenceReplay

Policy = Callable[[dict[str, np.ndarray], Any], tuple[Any, Any]]
FLAG_KEYS = ("is_first", "is_last", "is_terminal")


class CollectorError(ValueError):
    """Unsupported env or policy output given to the Collector."""


def action_size(space: gym.Space) -> int:
    """Width A of the model-format action: one-hot size for Discrete, flat size for Box."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise CollectorError(f"action space {space} is not supported; expected Discrete or Box")


def random_policy(action_space: gym.Space, seed: int | None = None) -> Policy:
    """A policy returning uniform random model-format actions (one-hot or [-1, 1])."""
    rng = np.random.default_rng(seed)
    size = action_size(action_space)
    discrete = isinstance(action_space, gym.spaces.Discrete)

    def policy(obs: dict[str, np.ndarray], carry: Any) -> tuple[np.ndarray, Any]:
        n = len(obs["is_first"])
        if discrete:
            return np.eye(size, dtype=np.float32)[rng.integers(0, size, n)], carry
        return rng.uniform(-1.0, 1.0, (n, size)).astype(np.float32), carry

    return policy


class ActingClock:
    """A policy that times its calls: milliseconds per acting step (one call steps every env
    of the batch), leaving out the first call of each batch size (compile warm-up)."""

    def __init__(self, policy: Policy):
        self.policy, self.seconds, self.calls = policy, 0.0, 0
        self.warmup_s = 0.0  # the longest first call of a batch size
        self._seen: set[int] = set()

    def __call__(self, obs: dict[str, np.ndarray], carry: Any) -> tuple[np.ndarray, Any]:
        start = time.perf_counter()
        out = self.policy(obs, carry)
        n, elapsed = len(obs["is_first"]), time.perf_counter() - start
        if n in self._seen:
            self.seconds += elapsed
            self.calls += 1
        else:
            self.warmup_s = max(self.warmup_s, elapsed)
        self._seen.add(n)
        return out

    def ms_per_step(self) -> float:
        return 1000 * self.seconds / max(self.calls, 1)


class Collector:
    """Steps a vector env with a policy, stores every real step in a SequenceReplay.

    With `latent_spec` (what an agent stores per step: its replay context's latents, a
    frozen encoder's embeddings) every stored step also holds those keys: zeros when
    stored, then the `latent_entries(carry)` of the policy's carry for it."""

    def __init__(self, env: gym.vector.VectorEnv, replay: SequenceReplay | None = None,
                 latent_spec: dict | None = None,
                 latent_entries: Callable[[Any], dict[str, np.ndarray]] | None = None) -> None:
        mode = env.metadata.get("autoreset_mode")
        if mode is not None and mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise CollectorError(f"Collector needs autoreset_mode NEXT_STEP, the env uses {mode}")
        self.env = env
        self.replay = replay
        self.num_envs = int(env.num_envs)
        if replay is not None and replay.num_envs != self.num_envs:
            raise CollectorError(
                f"replay has num_envs={replay.num_envs}, the env has {self.num_envs}"
            )
        self.latent_spec = dict(latent_spec or {})
        self.latent_entries = latent_entries
        self.action_space = env.single_action_space
        self.action_dim = action_size(self.action_space)
        self.vector_steps = 0  # env.step calls
        self.agent_steps = 0  # vector_steps * num_envs
        self.episodes = 0
        self._obs: dict[str, np.ndarray] | None = None
        self._carry: Any = None
        # The seed of the first reset (None: the env's own, its construction seed). A
        # resumed run sets one of its own so its envs do not replay the opening episodes.
        self.reset_seed: int | None = None
        self._returns = np.zeros(self.num_envs, np.float64)
        self._lengths = np.zeros(self.num_envs, np.int64)

    # ----------------------------------------------------------- conversions
    def _split_obs(self, obs: Any) -> dict[str, np.ndarray]:
        if isinstance(obs, dict):
            return {k: np.asarray(v) for k, v in obs.items()}
        obs = np.asarray(obs)
        if obs.dtype == np.uint8 and obs.ndim == 4:
            return {"image": obs}
        return {"vector": obs.reshape(self.num_envs, -1).astype(np.float32)}

    def _model_action(self, action: Any) -> np.ndarray:
        if isinstance(action, torch.Tensor):
            action = action.detach().float().cpu().numpy()
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.num_envs, self.action_dim):
            raise CollectorError(
                f"policy returned an action of shape {action.shape}; expected "
                f"({self.num_envs}, {self.action_dim}) in model format"
            )
        return action

    def _env_action(self, action: np.ndarray) -> np.ndarray:
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            return (action.argmax(-1) + int(space.start)).astype(space.dtype)
        clipped = np.clip(action, -1.0, 1.0).reshape((self.num_envs, *space.shape))
        return clipped.astype(space.dtype)

    def _row(
        self,
        obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        first: np.ndarray,
        last: np.ndarray,
        terminal: np.ndarray,
    ) -> dict[str, np.ndarray]:
        return {
            **obs,
            "action": action.astype(np.float32),
            "reward": reward.astype(np.float32),
            "is_first": first.astype(bool),
            "is_last": last.astype(bool),
            "is_terminal": terminal.astype(bool),
        }

    def _store(self, row: dict[str, np.ndarray]) -> None:
        if self.replay is not None:
            data = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in row.items()}
            for key, (shape, dtype) in self.latent_spec.items():
                data[key] = torch.zeros(self.num_envs, *shape, dtype=dtype)
            self.replay.add(TensorDict(data, batch_size=[self.num_envs]))

    def _store_latents(self, carry: Any) -> None:
        """The policy's latent state for the step stored last (the one it just saw)."""
        if self.replay is None or not self.latent_spec or self.latent_entries is None:
            return
        entries = self.latent_entries(carry)
        if entries:
            self.replay.write_last(entries)

    def _reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=seed)
        n = self.num_envs
        zeros = np.zeros(n, bool)
        return self._row(
            self._split_obs(obs),
            np.zeros((n, self.action_dim), np.float32),
            np.zeros(n, np.float32),
            np.ones(n, bool),
            zeros,
            zeros,
        )

    def _step(self, row: dict[str, np.ndarray], action: np.ndarray) -> dict[str, np.ndarray]:
        """Advance one vector step from ``row``; NEXT_STEP resets become is_first rows."""
        obs, reward, terminated, truncated, _ = self.env.step(self._env_action(action))
        # Envs that ended on the previous row were reset by this step; their action was
        # ignored and their reward/flags belong to no transition.
        reset = row["is_last"]
        keep = ~reset
        return self._row(
            self._split_obs(obs),
            np.where(keep[:, None], action, 0.0),
            np.where(keep, np.asarray(reward, np.float32), 0.0),
            reset,
            keep & (np.asarray(terminated) | np.asarray(truncated)),
            keep & np.asarray(terminated),
        )

    # ----------------------------------------------------------------- public
    def collect(self, policy: Policy, steps: int) -> list[dict[str, Any]]:
        """Advance ``steps`` vector steps (state kept across calls); return finished episodes."""
        if steps < 0:
            raise CollectorError(f"steps must be >= 0, got {steps}")
        if self._obs is None:
            if self.replay is not None and len(self.replay):
                # A restart (a resumed run) cuts the episodes in flight: their last stored
                # step ends them, as the official replay marks a step followed by an
                # episode start, so no value target bootstraps across into the new one.
                self.replay.write_last({"is_last": np.ones(self.num_envs, bool)})
            self._obs = self._reset(self.reset_seed)
            self._carry = None
            self._returns[:] = 0
            self._lengths[:] = 0
            self._store(self._obs)
        finished: list[dict[str, Any]] = []
        for _ in range(steps):
            action, self._carry = policy(self._obs, self._carry)
            self._store_latents(self._carry)
            self._obs = self._step(self._obs, self._model_action(action))
            self._store(self._obs)
            self.vector_steps += 1
            self.agent_steps += self.num_envs
            records = self._tally(self._obs, self._returns, self._lengths)
            self.episodes += len(records)
            finished += records
        return finished

    @staticmethod
    def _tally(
        row: dict[str, np.ndarray], returns: np.ndarray, lengths: np.ndarray
    ) -> list[dict[str, Any]]:
        """Update per-env running return/length with ``row``; return finished episodes."""
        first = row["is_first"]
        returns[first], lengths[first] = 0.0, 0
        returns[~first] += row["reward"][~first]
        lengths[~first] += 1
        return [
            {"env": int(i), "return": float(returns[i]), "length": int(lengths[i])}
            for i in np.flatnonzero(row["is_last"])
        ]

    def run_episodes(
        self,
        policy: Policy,
        episodes: int,
        render: bool = False,
        seed: int | None = None,
    ) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """Evaluate: run fresh episodes until ``episodes`` finish; nothing is stored.

        Each env runs its share of the episodes (``episodes`` split as evenly as the envs
        allow) and only those count: keeping whichever finish first would favour short
        episodes, since an env that fails fast finishes two before a long one finishes one.
        Returns the episode records and, with ``render``, the frames (obs ``image`` or
        ``env.render()``) of env 0's first episode. The next ``collect`` starts fresh.
        """
        if episodes < 1:
            raise CollectorError(f"episodes must be >= 1, got {episodes}")
        self._obs = None  # collection restarts from a reset afterwards
        row = self._reset(seed=seed)
        returns = np.zeros(self.num_envs, np.float64)
        lengths = np.zeros(self.num_envs, np.int64)
        quota = np.full(self.num_envs, episodes // self.num_envs)
        quota[: episodes % self.num_envs] += 1
        done = np.zeros(self.num_envs, np.int64)
        records: list[dict[str, Any]] = []
        frames: list[np.ndarray] = []
        recording = render
        carry: Any = None
        while True:
            if recording:
                frames.append(self._frame(row))
                recording = not bool(row["is_last"][0])
            if (done >= quota).all() and not recording:
                return records, frames
            action, carry = policy(row, carry)
            row = self._step(row, self._model_action(action))
            for record in self._tally(row, returns, lengths):
                if done[record["env"]] < quota[record["env"]]:
                    records.append(record)
                done[record["env"]] += 1

    def _frame(self, row: dict[str, np.ndarray]) -> np.ndarray:
        if "image" in row:
            return np.array(row["image"][0])
        rgb = getattr(self.env, "render_mode", None) == "rgb_array"
        rendered = self.env.render() if rgb else None
        if rendered is None or rendered[0] is None:
            raise CollectorError(
                "render=True needs an `image` observation or an env with render_mode='rgb_array'"
            )
        return np.array(rendered[0])
