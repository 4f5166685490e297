"""Collapse diagnostics of trained agents, compared on equal footing: RankMe and std score of
the encoder's embeddings and of the latent features, on fresh evaluation episodes of each
run's own env (distractors included), for any agent (the `collapse/*` training metrics of
both agents are measured on replay batches instead).

    python -m benchmarks.collapse RUN [RUN ...] [--steps 1000] [--seed 1000] [--out FILE.md]

Episodes are played whole, until at least `--steps` env steps.

Prints one markdown row per run: agent, env, mean eval return of the episodes played, and
the diagnostics of `world_models.diagnostics` (embedding size D in brackets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agents.run.cli_args import ArgParser, doc_summary, emit_table
from agents.run.collector import Collector
from agents.run.inference import load_agent
from agents.run.train import make_eval_env
from world_models.diagnostics import collapse_metrics


@torch.no_grad()
def rollout_latents(agent, cfg, steps: int, seed: int) -> tuple[dict[str, torch.Tensor], list]:
    """Whole eval-mode episodes in the run's env until at least `steps` steps; the encoder
    embeddings and latent features (`Agent.features`) of every step and the episode returns."""
    embeds, feats = [], []

    def policy(obs, carry):
        action, carry = agent.policy(obs, carry, mode="eval")
        embed, feat = agent.features(obs, carry)
        embeds.append(embed.cpu())
        feats.append(feat.cpu())
        return action, carry

    env = make_eval_env(cfg, 1, seed, False, agent.obs_space)
    returns: list[float] = []
    try:
        collector = Collector(env)
        while len(feats) < steps:
            records, _ = collector.run_episodes(policy, 1, seed=seed + len(returns))
            returns += [r["return"] for r in records]
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
    parser = ArgParser(description=doc_summary(__doc__))
    parser.add_argument("runs", nargs="+", help="run directories (or checkpoint files)")
    parser.add_argument("--steps", type=int, default=1000,
                        help="at least this many env steps per run (whole episodes)")
    parser.add_argument("--seed", type=int, default=1000, help="env seed of the episodes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (RankMe needs several embeddings)")
    torch.set_num_threads(args.threads)
    try:
        rows = [measure(run, args.steps, args.seed, args.device) for run in args.runs]
    except (ValueError, FileNotFoundError) as err:  # a missing or broken run: one line
        parser.exit(2, f"{parser.prog}: error: {str(err).splitlines()[0]}\n")
    emit_table(table(rows), args.out)
    return rows


if __name__ == "__main__":
    main()
