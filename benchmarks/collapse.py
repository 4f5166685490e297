"""Collapse diagnostics of trained agents, compared on equal footing: RankMe and std score of
the encoder's embeddings and of the RSSM features, on fresh evaluation episodes of each
run's own env (distractors included), for any agent (`dreamerv3` logs no diagnostics while
training; `jepa` logs them only on replay batches).

    python -m benchmarks.collapse RUN [RUN ...] [--steps 1000] [--seed 1000] [--out FILE.md]

Prints one markdown row per run: agent, env, mean eval return of the episodes played, and
the diagnostics of `world_models.diagnostics` (embedding size D in brackets).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import envs
from agents.inference import load_agent
from world_models.diagnostics import collapse_metrics


@torch.no_grad()
def rollout_latents(agent, cfg, steps: int, seed: int) -> tuple[dict[str, torch.Tensor], list]:
    """Play `steps` eval-mode steps in the run's env; the embeddings, RSSM features and
    returns of the episodes that finished."""
    env = envs.make(cfg.env.spec, seed=seed, **cfg.env.options.to_dict())
    try:
        discrete = not hasattr(env.action_space, "low")
        obs, _ = env.reset(seed=seed)
        carry, first, ret, returns = None, True, 0.0, []
        embeds, feats = [], []
        for _ in range(steps):
            batch = {k: v[None] for k, v in obs.items()} | {"is_first": np.array([first])}
            data = agent._to_torch({k: batch[k] for k in agent.shapes})
            with agent._amp():
                embeds.append(agent.wm.encode(data).float())
            action, carry = agent.policy(batch, carry, mode="eval")
            feats.append(agent.wm.rssm.feat(carry[0]).float())
            act = int(action[0].argmax()) if discrete else action[0]
            obs, reward, terminated, truncated, _ = env.step(act)
            ret += float(reward)
            first = terminated or truncated
            if first:
                returns.append(ret)
                ret = 0.0
                obs, _ = env.reset()
    finally:
        env.close()
    return {"embed": torch.cat(embeds), "feat": torch.cat(feats)}, returns


def measure(path: str | Path, steps: int, seed: int, device: str = "cpu") -> dict[str, object]:
    agent, cfg = load_agent(path, device=device)
    latents, returns = rollout_latents(agent, cfg, steps, seed)
    row: dict[str, object] = {"run": str(path), "agent": cfg.agent, "env": cfg.env.spec,
                              "distractor": cfg.env.options.to_dict().get("distractor"),
                              "episodes": len(returns),
                              "return": float(np.mean(returns)) if returns else float("nan")}
    for name, z in latents.items():
        m = collapse_metrics(z, prefix="")
        row[name] = {"dim": z.shape[-1], "rankme": m["rankme"], "std_score": m["std_score"],
                     "top1": m["eig_top1_frac"]}
    return row


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| run | agent | distractor | eval return (episodes) | embed RankMe [D] | "
             "embed std score | feat RankMe [D] | feat std score |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        e, f = r["embed"], r["feat"]
        lines.append(
            f"| {Path(str(r['run'])).name} | {r['agent']} | {r['distractor'] or '-'} | "
            f"{r['return']:.1f} ({r['episodes']}) | {e['rankme']:.1f} [{e['dim']}] | "
            f"{e['std_score']:.2f} | {f['rankme']:.1f} [{f['dim']}] | {f['std_score']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (or checkpoint files)")
    parser.add_argument("--steps", type=int, default=1000, help="env steps per run")
    parser.add_argument("--seed", type=int, default=1000, help="env seed of the episodes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (RankMe needs several embeddings)")
    torch.set_num_threads(args.threads)
    rows = [measure(run, args.steps, args.seed, args.device) for run in args.runs]
    text = table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return rows


if __name__ == "__main__":
    main()
