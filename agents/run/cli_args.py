"""Command-line arguments of `dreamer-run` and how they map onto the config, and the
argument blocks and table output every entry point shares."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from agents.run.config import Config, absolute_encoder, load_config


class ArgParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`prog: error: ...`), not usage plus error, so
    every entry point fails the same way; `--help` still shows the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        first = message.strip().splitlines()[0] if message.strip() else "bad arguments"
        self.exit(2, f"{self.prog}: error: {first} (see --help)\n")


def doc_summary(doc: str | None) -> str:
    """A module docstring's first paragraph on one line: what `--help` shows as the
    description (its first line alone is often cut mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def add_set_arg(parser: argparse.ArgumentParser, help: str, dest: str = "sets") -> None:
    """The repeatable `--set KEY=VALUE` config override every entry point takes."""
    parser.add_argument("--set", action="append", default=[], dest=dest, metavar="KEY=VALUE",
                        help=help)


def add_reference_arg(parser: argparse.ArgumentParser, help: str,
                      metavar: str = "FILE_OR_DIR") -> None:
    """`--reference FILE...`: published score files (or folders of them) laid beside ours."""
    parser.add_argument("--reference", nargs="+", default=[], metavar=metavar, help=help)


def emit_table(text: str, out: str | None) -> None:
    """Print a result table and, when `out` names a file, write it there too."""
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def run_parser() -> argparse.ArgumentParser:
    p = ArgParser(
        prog="dreamer-run",
        description="Train a model-based agent on an environment given by a spec string. "
        "Rerunning the same command with the same --logdir resumes.")
    p.add_argument("--env", default=None,
                   help="env spec: dmc:walker-walk, atari100k:pong, gym:CartPole-v1, "
                        "minigrid:MiniGrid-DoorKey-5x5-v0, gym:pkg.module:Class")
    p.add_argument("--agent", default=None, help="agent name: dreamerv3 (default) or jepa")
    p.add_argument("--size", default=None, help="model size: 1m 12m 25m 50m 100m 200m 400m")
    p.add_argument("--steps", type=float, default=None, help="agent steps (policy decisions)")
    p.add_argument("--envs", type=int, default=None, help="parallel environments")
    p.add_argument("--logdir", default=None, help="run directory (default: runs/<env>/...)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--obs", default=None, choices=["state", "pixels", "both"],
                   help="observation kind for suites that offer several (dmc)")
    p.add_argument("--encoder", default=None,
                   help="cnn (default) | jepa:PATH/encoder.pt | hf:HUB_ID_OR_DIR (V-JEPA 2); "
                        "sets model.encoder.kind")
    p.add_argument("--encoder-mode", default=None, choices=["frozen", "finetune"],
                   help="a pretrained encoder frozen (default) or fine-tuned; "
                        "sets model.encoder.mode")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="YAML file of config overrides (repeatable, applied in order)")
    add_set_arg(p, "dotted config override, e.g. --set run.train_ratio=64 (repeatable)")
    p.add_argument("--check", action="store_true",
                   help="check the env (Gymnasium's checker and our contract), print one line "
                        "per problem, exit")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and the run directory, build nothing, exit")
    p.add_argument("--list-envs", nargs="?", const="", default=None, metavar="SUITE",
                   help="list the env specs (of one suite: dmc, atari100k, ...) and exit")
    return p


def parse_run_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return run_parser().parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    """Layer defaults, presets, files, flags and --set overrides into one config."""
    key = "model.encoder.kind="
    sets = [key + absolute_encoder(s[len(key):]) if s.startswith(key) else s
            for s in args.sets or []]
    flags = {
        "run.steps": int(args.steps) if args.steps is not None else None,
        "env.num_envs": args.envs,
        "logdir": args.logdir,
        "seed": args.seed,
        "env.options.obs": args.obs,
        # `default` was the CNN's name before `cnn`; old command lines keep working.
        "model.encoder.kind": "cnn" if args.encoder == "default" else absolute_encoder(
            args.encoder),
        "model.encoder.mode": args.encoder_mode,
        "device": args.device,
    }
    return load_config(args.env, size=args.size, agent=args.agent, files=args.config,
                       flags=flags, sets=sets)
