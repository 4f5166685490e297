"""Console entry points: `dreamer-run` and `dreamer-eval`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.run.cli_args import ArgParser, add_set_arg

# Errors a user can cause get one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def _fail(err: BaseException) -> int:
    print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
          file=sys.stderr)
    return 2


def run_main(argv: Sequence[str] | None = None) -> int:
    from agents.run.cli_args import build_config, parse_run_args

    args = parse_run_args(argv)
    try:
        if getattr(args, "list_envs", None) is not None:
            import envs

            print("\n".join(envs.list_envs(args.list_envs or None)))
            return 0
        if not args.env:
            raise ValueError("--env is required (e.g. --env dmc:walker-walk); "
                             "--list-envs shows the specs")
        cfg = build_config(args)
        from agents.run.train import RunError, run_dir, train

        if getattr(args, "check", False):
            return _check_env(cfg)
        if getattr(args, "print_config", False):
            print(cfg.to_yaml(), end="")
            print(f"# run directory: {run_dir(cfg).path}")
            return 0
        try:
            logdir = train(cfg)
        except RunError as err:
            return _fail(err)
    except USER_ERRORS as err:
        return _fail(err)
    print(f"run directory: {logdir}")
    return 0


def _check_env(cfg) -> int:
    from envs.check import check

    problems, notes = check(cfg.env.spec, cfg.env.options.to_dict())
    for note in notes:
        print(f"warning: {note}")
    for problem in problems:
        print(f"problem: {problem}")
    if not problems:
        print(f"ok: {cfg.env.spec} passes Gymnasium's env checker and the dreamjepa contract "
              "(dict observations, actions, metadata, an episode that ends, a vector env)")
    return 1 if problems else 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(prog="dreamer-eval",
                                description="Evaluate a trained agent from its run directory.")
    p.add_argument("path", help="run directory (or its checkpoint) written by dreamer-run")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--video", action="store_true", help="write the first episode as mp4")
    p.add_argument("--envs", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="where to write results (default: <run>/eval)")
    p.add_argument("--behavior", default=None,
                   help="how the agent acts: actor | mppi (planning; settings from the run's "
                        "config, changed with --set mppi.KEY=VALUE); default: the run's "
                        "run.behavior")
    p.add_argument("--policy", choices=("mode", "sample"), default=None,
                   help="mode: the actor's most likely action, and no action noise from "
                        "the planner (whose pick among its elites stays a draw); sample: "
                        "act as in training; default: the run's run.eval_policy (sample "
                        "unless set), so the numbers compare with its eval_scores.jsonl")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="off",
                   help="the compiled acting path: pays its warm-up (seconds to a minute) "
                        "back over long evaluations, planning ones above all (default off)")
    add_set_arg(p, "override a setting of the loaded run's config for evaluation (mppi.*)")
    args = p.parse_args(argv)
    try:
        return _evaluate(args)
    except USER_ERRORS as err:
        return _fail(err)


def _evaluate(args: argparse.Namespace) -> int:
    from agents.behaviors import check_behavior
    from agents.run.collector import ActingClock, Collector
    from agents.run.inference import find_run, load_agent
    from agents.run.logger import RunLogger
    from agents.run.seeding import CHECKPOINT_EVAL_ENVS, env_seed
    from agents.run.train import make_eval_env

    logdir, _ = find_run(args.path)
    agent, cfg = load_agent(args.path, device=args.device, overrides=args.sets,
                            compile=args.compile)
    behavior = args.behavior or cfg.run.behavior
    check_behavior(behavior, cfg)
    agent.set_behavior(behavior)
    # The same episodes for the same checkpoint; none of another run's (seed + i would share).
    seed = env_seed(cfg.seed, getattr(agent, "step", 0), CHECKPOINT_EVAL_ENVS)
    env = make_eval_env(cfg, args.envs, seed, args.video, agent.obs_space)
    args.policy = args.policy or cfg.run.eval_policy
    mode = "eval" if args.policy == "mode" else "train"
    clock = ActingClock(lambda obs, carry: agent.policy(obs, carry, mode=mode))
    try:
        records, frames = Collector(env).run_episodes(clock, args.episodes, render=args.video)
    finally:
        env.close()
    returns = [r["return"] for r in records]
    out = Path(args.out) if args.out else logdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"episodes": len(returns), "mean_return": float(np.mean(returns)),
               "std_return": float(np.std(returns)), "returns": returns,
               "behavior": behavior, "policy": args.policy, "envs": args.envs,
               "act_ms": clock.ms_per_step(), "updates": agent.step}
    (out / "eval.json").write_text(json.dumps(summary, indent=1))
    if args.video and frames:
        with RunLogger(out, tensorboard=False) as logger:
            path = logger.video("eval", np.stack(frames), 0)
        print(f"video: {path}")
    print(f"{len(returns)} episodes ({behavior}, {args.policy}): mean return "
          f"{summary['mean_return']:.1f} +- {summary['std_return']:.1f}; acting "
          f"{summary['act_ms']:.1f} ms per step at batch {args.envs}")
    return 0
