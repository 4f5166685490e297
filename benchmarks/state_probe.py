"""What a trained world model kept: a ridge probe from its latent features to the simulator's
physics state, on fresh evaluation episodes, clean and under distractors.

    python -m benchmarks.state_probe RUN [RUN ...] [--backgrounds clean,run] [--steps 4000]
        [--seed 1000] [--out FILE.md]

For every run (a `dmc:` run of any agent) and every background, whole episodes are played
with the run's evaluation policy (`run.eval_policy`) until at least `--steps` env steps;
each step gives the agent's latent feature (`Agent.features`: the RSSM feature after
observing it) and the physics state (`physics_info`: qpos, qvel). A ridge regression,
cross-validated over whole episodes (each held out with everything else of its episode:
its distractor game and start state are never seen in training), predicts each state
dimension from the feature; the table gives held-out R^2 per dimension (positions as a
frame shows them: hinge angles as sine and cosine, camera-followed x dropped), their means,
and the return of the episodes played.

Backgrounds: `clean` (no distractor), `run` (the run's own, as its evaluation shows it:
`atari` runs get the held-out `atari:eval` games) or any `distractor` value (`shapes`,
`noise`, `atari:eval`, `video:DIR`). A model that kept the pole and dropped the background
scores the same on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from agents.run.cli_args import ArgParser, doc_summary, emit_table
from agents.run.collector import Collector
from agents.run.inference import load_agent
from agents.run.train import eval_act_mode, eval_options
from benchmarks.probe import position_targets
from benchmarks.ridge_probe import ridge_probe


class InfoRecorder(gym.vector.VectorWrapper):
    """Keeps the info of the last reset or step: the physics state of the observation that
    the policy is about to see (NEXT_STEP autoreset gives the reset's info with its obs)."""

    def reset(self, **kwargs):
        obs, self.info = self.env.reset(**kwargs)
        return obs, self.info

    def step(self, actions):
        obs, reward, terminated, truncated, self.info = self.env.step(actions)
        return obs, reward, terminated, truncated, self.info


def physics_spec(env_spec: str) -> str:
    """`dmc:DOMAIN-TASK` without an observation suffix (-pixels, -state, -both)."""
    for suffix in ("-pixels", "-state", "-both"):
        env_spec = env_spec.removesuffix(suffix)
    return env_spec


def background_options(cfg, background: str) -> dict[str, Any]:
    """Env options of the probe episodes: the run's eval options with physics info on and
    the background asked for."""
    if not cfg.env.spec.startswith("dmc:"):
        raise ValueError(f"state_probe needs a dmc: run (physics state); got {cfg.env.spec!r}")
    options = {**eval_options(cfg), "physics_info": True}
    if background == "clean":
        options["distractor"] = None
    elif background != "run":
        options["distractor"] = background
    obs = cfg.env.spec.rsplit("-", 1)[-1] if physics_spec(cfg.env.spec) != cfg.env.spec \
        else str(options.get("obs", "state"))
    if options.get("distractor") and obs == "state":
        raise ValueError(f"background {background!r} needs a pixel run; {cfg.env.spec} is "
                         f"state-only: use --backgrounds clean")
    return options


@torch.no_grad()
def rollout(agent, cfg, options: dict, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Features, qpos, qvel and episode index of every step of whole episodes played with
    the run's evaluation policy."""
    env = InfoRecorder(envs.make_vector(cfg.env.spec, 1, seed=seed, **options))
    feats, qpos, qvel, episode, returns = [], [], [], [], []
    mode = eval_act_mode(cfg)

    def policy(obs, carry):
        action, carry = agent.policy(obs, carry, mode=mode)
        feats.append(agent.features(obs, carry)[1].float().cpu().numpy())
        qpos.append(np.asarray(env.info["qpos"], np.float64))
        qvel.append(np.asarray(env.info["qvel"], np.float64))
        episode.append(np.full(1, len(returns)))
        return action, carry

    try:
        collector = Collector(env)
        while len(feats) < steps:
            records, _ = collector.run_episodes(policy, 1, seed=seed + len(returns))
            returns += [r["return"] for r in records]  # (the last obs is not acted on)
    finally:
        env.close()
    return {"feat": np.concatenate(feats).astype(np.float64), "qpos": np.concatenate(qpos),
            "qvel": np.concatenate(qvel), "episode": np.concatenate(episode),
            "returns": np.asarray(returns)}


def velocity_names(env_spec: str) -> list[str]:
    """A name per qvel entry: its joint's name (with an index for multi-dof joints)."""
    from envs.dmc import suite  # imported after the GL backend is chosen

    domain, _, task = env_spec.split(":", 1)[1].partition("-")
    model = suite.load(domain, task).physics.model
    names = [f"v_{model.id2name(int(j), 'joint')}" for j in model.dof_jntid]
    return [n if names.count(n) == 1 else f"{n}{names[:i].count(n)}"
            for i, n in enumerate(names)]


# Whole episodes are the probe's folds: the outer split holds one out at least, and the
# inner split that picks the ridge penalty needs two of the rest.
MIN_EPISODES = 3


def probe(data: dict[str, np.ndarray], env_spec: str) -> dict[str, Any]:
    """Held-out R^2 of positions and velocities from the features, over whole episodes."""
    env_spec = physics_spec(env_spec)
    groups = data["episode"]
    episodes = len(np.unique(groups))
    if episodes < MIN_EPISODES:
        raise ValueError(f"the state probe holds out whole episodes and needs at least "
                         f"{MIN_EPISODES}; these rollouts have {episodes}: raise --steps")
    pos, pos_names = position_targets(env_spec, data["qpos"])
    pos_r2, pos_dims = ridge_probe(data["feat"], pos, groups)
    vel_r2, vel_dims = ridge_probe(data["feat"], data["qvel"], groups)
    return {"pos_r2": pos_r2, "vel_r2": vel_r2,
            "dims": dict(zip(pos_names + velocity_names(env_spec), pos_dims + vel_dims))}


def measure(path: str | Path, backgrounds: Sequence[str], steps: int, seed: int,
            device: str = "cpu") -> list[dict[str, Any]]:
    agent, cfg = load_agent(path, device=device)
    rows = []
    for background in backgrounds:
        options = background_options(cfg, background)
        data = rollout(agent, cfg, options, steps, seed)
        rows.append({"run": str(path), "agent": cfg.agent, "env": cfg.env.spec,
                     "background": background, "distractor": options.get("distractor"),
                     "steps": len(data["feat"]), "episodes": len(data["returns"]),
                     "return": float(data["returns"].mean()), **probe(data, cfg.env.spec)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    dims = list(dict.fromkeys(d for r in rows for d in r["dims"]))
    lines = ["| run | agent | background | eval return (episodes) | position R^2 | "
             "velocity R^2 | " + " | ".join(dims) + " |",
             "|---|---|---|---:|---:|---:|" + "---:|" * len(dims)]
    for r in rows:
        cells = [f"{r['dims'][d]:.3f}" if d in r["dims"] else "-" for d in dims]
        lines.append(f"| {Path(r['run']).name} | {r['agent']} | {r['distractor'] or 'clean'} | "
                     f"{r['return']:.1f} ({r['episodes']}) | {r['pos_r2']:.3f} | "
                     f"{r['vel_r2']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = ArgParser(prog="python -m benchmarks.state_probe", description=doc_summary(__doc__))
    parser.add_argument("runs", nargs="+", help="run directories (dmc: envs)")
    parser.add_argument("--backgrounds", default="clean,run",
                        help="comma-separated: clean, run (the run's own eval background) "
                             "or a distractor value (default: clean,run)")
    parser.add_argument("--steps", type=int, default=4000,
                        help="env steps per run and background, whole episodes (default "
                             "4000: 8 cartpole episodes)")
    parser.add_argument("--seed", type=int, default=1000, help="first episode seed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    backgrounds = [b for b in args.backgrounds.split(",") if b]
    rows = []
    for run in args.runs:
        try:
            run_rows = measure(run, backgrounds, args.steps, args.seed, args.device)
        except (ValueError, FileNotFoundError) as err:
            parser.error(f"{run}: {err}")
        # A clean run's `run` background is `clean` again: keep one row.
        seen: set = set()
        rows += [r for r in run_rows if not (r["distractor"] in seen or seen.add(r["distractor"]))]
    emit_table(table(rows), args.out)
    return rows


if __name__ == "__main__":
    main()
