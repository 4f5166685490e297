"""Run the official DreamerV3 (danijar/dreamerv3, JAX) beside ours, at our config's settings.

    python -m benchmarks.official run --checkout PATH --env dmc:walker-walk --logdir DIR
        [--python PY] [--size 1m] [--steps N] [--seed S] [--set key=value ...]
        [--threads 1] [--precision auto|fp32|bf16] [--dry-run]
    python -m benchmarks.official convert LOGDIR --env dmc:walker-walk [--out RUNDIR]
    python -m benchmarks.official metrics OUR_RUN OFFICIAL_LOGDIR [--updates 100,1000]

`run` resolves our config for the env spec (the same presets and `--set` keys as
`dreamer-run`) and starts `PY CHECKOUT/dreamerv3/main.py` with the official flags that give
the same task, size, train ratio, action repeat, learning rate, batch, replay context,
parallel envs, steps and seed; rerunning it resumes from the official checkpoint. The
checkout is not part of this repository: clone it yourself, and install its requirements
into the interpreter `--python` names (jax, jaxlib, ninjax, elements, portal, granular and
optax are on PyPI; CPU-only jax works). When it stops, `<logdir>/ours/` holds the run in our
run-directory format, which `benchmarks.plot` lays beside our runs.

`convert` does only that last step: the official `scores.jsonl` (training episodes, `step`
in env frames) becomes our `scores.jsonl`, with a `config.yaml` naming the env spec and a
`run.json` naming the method and the official loop's seconds per update.

`metrics` lays our run's loss terms, policy entropy, imagined return and advantage spread
beside the official run's at the same update counts: where two curves part, this is where
to look for the component that differs.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agents.run.cli_args import ArgParser, add_set_arg, doc_summary
from agents.run.config import Config, ConfigError, load_config

__all__ = [
    "OfficialError",
    "convert",
    "loop_seconds_per_update",
    "metrics_table",
    "official_command",
    "official_env",
    "main",
]

METHOD = "official:dreamerv3"
# Our domain presets that the official configs.yaml has under the same name (it has no
# MiniGrid or Gymnasium suite).
DOMAINS = ("dmc_proprio", "dmc_vision", "atari", "atari100k")
SIZES = ("1m", "12m", "25m", "50m", "100m", "200m", "400m")


class OfficialError(ValueError):
    """The checkout, the config or an official log directory cannot be used."""


def _task(spec: str, domain: str) -> str:
    """The official task id of an env spec: `dmc:walker-walk-pixels` -> `dmc_walker_walk`."""
    from benchmarks.scores import task_id

    task = task_id(spec)
    if domain == "atari100k" and task.startswith("atari_"):
        task = "atari100k_" + task[len("atari_"):]
    return task


def _on_cuda(config: Config) -> bool:
    device = str(config.device)
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def official_command(config: Config, checkout: str | Path, logdir: str | Path,
                     python: str = sys.executable, precision: str = "fp32") -> list[str]:
    """argv that runs the official agent at `config`'s settings (see the module doc)."""
    domain, size = config.domain, str(config.size)
    if domain not in DOMAINS:
        raise OfficialError(f"domain {domain!r} has no official config; allowed: "
                            + ", ".join(DOMAINS))
    if size not in SIZES:
        raise OfficialError(f"size {size!r} has no official config; allowed: {', '.join(SIZES)}")
    if precision not in ("fp32", "bf16"):
        raise OfficialError(f"precision {precision!r} unknown; allowed: fp32, bf16")
    main_py = Path(checkout) / "dreamerv3" / "main.py"
    if not main_py.is_file():
        raise OfficialError(f"{checkout}: no dreamerv3/main.py (is this a checkout of "
                            "danijar/dreamerv3?)")
    suite = domain.split("_")[0]  # the env section: dmc, atari, atari100k
    flags: dict[str, Any] = {
        "logdir": Path(logdir).resolve(),
        "configs": f"{domain} size{size}",
        "task": _task(config.env.spec, domain),
        "seed": config.seed,
        "batch_size": config.replay.batch_size,
        "batch_length": config.replay.batch_length,
        "replay_context": config.replay.context,
        "replay.size": int(config.replay.size),
        "run.steps": int(config.run.steps),
        "run.train_ratio": config.run.train_ratio,
        "run.envs": config.env.num_envs,
        "agent.opt.lr": config.opt.lr,
        "jax.platform": "cuda" if _on_cuda(config) else "cpu",
        "jax.compute_dtype": "bfloat16" if precision == "bf16" else "float32",
        "jax.prealloc": False,
        "logger.outputs": "jsonl",
    }
    repeat = config.env.options.get("repeat")
    if repeat is not None:
        flags[f"env.{suite}.repeat"] = int(repeat)
    argv = [python, str(main_py)]
    for key, value in flags.items():
        argv += [f"--{key}", *str(value).split(" ")] if key == "configs" else [
            f"--{key}", str(value)]
    return argv


def official_env(threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the official process: `threads` XLA CPU threads, headless MuJoCo."""
    env = dict(os.environ if base is None else base)
    env.setdefault("MUJOCO_GL", "egl")
    if threads > 0:
        eigen = "false" if threads == 1 else "true"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={eigen}"
                            f" intra_op_parallelism_threads={threads}").strip()
    return env


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a stop; the next run appends whole ones
    return rows


def loop_seconds_per_update(metrics: Path, batch_steps: int) -> float | None:
    """Median wall seconds per update of the official training loop (env steps included):
    `batch_steps` replayed steps per update over its logged `fps/train`."""
    if not metrics.is_file():
        return None
    rates = [r["fps/train"] for r in _jsonl(metrics) if r.get("fps/train", 0) > 0]
    return batch_steps / statistics.median(rates) if rates else None


def convert(logdir: str | Path, config: Config, out: str | Path | None = None,
            extra: Mapping[str, Any] | None = None) -> Path:
    """Write the official run in `logdir` as our run directory (default `logdir/ours`)."""
    logdir = Path(logdir)
    scores = logdir / "scores.jsonl"
    if not scores.is_file():
        raise OfficialError(f"{logdir}: no scores.jsonl (not an official run directory, or "
                            "no episode has ended yet)")
    out = Path(out) if out is not None else logdir / "ours"
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in _jsonl(scores) if "episode/score" in r]
    with (out / "scores.jsonl").open("w") as f:
        for r in rows:
            line = {"frames": r["step"], "return": r["episode/score"]}
            if "episode/length" in r:
                line["length"] = r["episode/length"]
            f.write(json.dumps(line) + "\n")
    batch_steps = int(config.replay.batch_size) * int(config.replay.batch_length)
    settings = {
        "agent": "official", "size": str(config.size), "seed": config.seed,
        "domain": config.domain,
        "env": {"spec": config.env.spec, "num_envs": config.env.num_envs,
                "options": dict(config.env.options)},
        "run": {"steps": int(config.run.steps), "train_ratio": config.run.train_ratio},
        "opt": {"lr": config.opt.lr},
        "replay": {"batch_size": config.replay.batch_size,
                   "batch_length": config.replay.batch_length,
                   "context": config.replay.context},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    info = {"method": METHOD, "source": str(logdir.resolve()),
            "loop_s_per_update": loop_seconds_per_update(logdir / "metrics.jsonl", batch_steps),
            **(extra or {})}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


# Our metric and the official one that measures the same thing (means over the batch).
PAIRS = (
    ("loss/dyn", "train/loss/dyn"), ("loss/rep", "train/loss/rep"),
    ("loss/rew", "train/loss/rew"), ("loss/con", "train/loss/con"),
    ("loss/rec", "train/loss/rec"), ("loss/policy", "train/loss/policy"),
    ("loss/value", "train/loss/value"), ("loss/repval", "train/loss/repval"),
    ("train/policy_entropy", "train/ent/action"), ("train/imag_reward", "train/rew"),
    ("train/adv_std", "train/adv_std"),
)
# Not paired: our `train/imag_return` is the raw lambda return, the official `train/ret` is
# normalised by the return scale; and the official continue target is 1 - 1/horizon
# (contdisc), so its `loss/con` floor is ~0.02 where ours (target 1, discount applied in
# the return) is 0.
_OFFICIAL_NON_OBS = {"dyn", "rep", "rew", "con", "policy", "value", "repval"}


def _official_row(row: Mapping[str, Any]) -> dict[str, float]:
    """An official metrics row with `train/loss/rec`: its per-observation-key decoder losses
    (`train/loss/image`, `train/loss/velocity`, ...) summed, as our `loss/rec_*` are."""
    out = dict(row)
    rec = [v for k, v in row.items() if k.startswith("train/loss/")
           and k.split("/")[-1] not in _OFFICIAL_NON_OBS]
    if rec:
        out["train/loss/rec"] = float(sum(rec))
    out["updates"] = row.get("train/opt/updates")
    return out


def _our_row(row: Mapping[str, Any]) -> dict[str, float]:
    out = dict(row)
    rec = [v for k, v in row.items() if k.startswith("loss/rec_")]
    if rec:
        out["loss/rec"] = float(sum(rec))
    out["updates"] = row.get("perf/updates")
    return out


def _nearest(rows: Sequence[Mapping[str, Any]], updates: float) -> Mapping[str, Any] | None:
    rows = [r for r in rows if isinstance(r.get("updates"), (int, float))]
    return min(rows, key=lambda r: abs(r["updates"] - updates)) if rows else None


def metrics_table(ours: str | Path, theirs: str | Path, at: Sequence[float]) -> str:
    """Markdown table of our run's metrics beside the official run's, at the logged rows
    nearest to each update count in `at` (the row's own update count in the header)."""
    our_rows = [_our_row(r) for r in _jsonl(Path(ours) / "metrics.jsonl")
                if any(k.startswith("loss/") for k in r)]
    their_rows = [_official_row(r) for r in _jsonl(Path(theirs) / "metrics.jsonl")
                  if "train/opt/updates" in r]
    if not our_rows or not their_rows:
        raise OfficialError(f"no training metrics in {ours if not our_rows else theirs}"
                            "/metrics.jsonl")
    picked = [(_nearest(our_rows, u), _nearest(their_rows, u)) for u in at]
    head = " | ".join(f"ours @{a['updates']:.0f} | official @{b['updates']:.0f}"
                      for a, b in picked)
    lines = [f"| metric (ours / official key) | {head} |",
             "|---|" + "---:|---:|" * len(picked)]
    for mine, official_key in PAIRS:
        cells = []
        for a, b in picked:
            cells += [f"{a[k]:.4g}" if isinstance(a.get(k), (int, float)) else "-"
                      for a, k in ((a, mine), (b, official_key))]
        lines.append(f"| {mine} / {official_key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _commit(checkout: Path) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def _config(args) -> Config:
    try:
        return load_config(args.env, size=args.size, flags={"seed": args.seed,
                           "run.steps": args.steps}, sets=args.set)
    except (ConfigError, ValueError) as exc:
        raise OfficialError(str(exc)) from None


def _parser() -> ArgParser:
    p = ArgParser(prog="python -m benchmarks.official", description=doc_summary(__doc__))
    sub = p.add_subparsers(dest="command", required=True)
    table = sub.add_parser("metrics", help="our run's losses beside the official run's")
    table.error = p.error
    table.add_argument("ours", help="our run directory")
    table.add_argument("official", help="the official run's log directory")
    table.add_argument("--updates", default="100,500,1000,2000",
                       help="comma-separated update counts to compare at")
    for name in ("run", "convert"):
        s = sub.add_parser(name)
        s.error = p.error  # one-line errors in subcommands too
        if name == "run":
            s.add_argument("--checkout", required=True, help="a danijar/dreamerv3 checkout")
            s.add_argument("--logdir", required=True, help="the official run's directory")
            s.add_argument("--python", default=sys.executable,
                           help="interpreter with the official requirements installed")
            s.add_argument("--threads", type=int, default=1, help="XLA CPU threads (0: all)")
            s.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
            s.add_argument("--dry-run", action="store_true", help="print the command only")
        else:
            s.add_argument("logdir", help="an official run's directory")
            s.add_argument("--out", default=None, help="our run directory (default LOGDIR/ours)")
        s.add_argument("--env", required=True, help="env spec, as for dreamer-run")
        s.add_argument("--size", default=None)
        s.add_argument("--steps", type=float, default=None, help="agent steps")
        s.add_argument("--seed", type=int, default=None)
        add_set_arg(s, "our config keys, as for dreamer-run", dest="set")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "metrics":
        try:
            at = [float(u) for u in args.updates.split(",") if u.strip()]
        except ValueError:
            parser.error(f"--updates {args.updates!r}: expected comma-separated numbers")
        try:
            print(metrics_table(args.ours, args.official, at))
        except OfficialError as exc:
            parser.error(str(exc))
        return 0
    try:
        config = _config(args)
        if args.command == "convert":
            print(f"wrote {convert(args.logdir, config, args.out)}")
            return 0
        from agents.runtime import cpu_has_bf16

        precision = args.precision
        if precision == "auto":
            precision = "bf16" if cpu_has_bf16() or _on_cuda(config) else "fp32"
        command = official_command(config, args.checkout, args.logdir, args.python, precision)
    except OfficialError as exc:
        parser.error(str(exc))
    print(shlex.join(command), flush=True)
    if args.dry_run:
        return 0
    Path(args.logdir).mkdir(parents=True, exist_ok=True)
    code = subprocess.call(command, cwd=args.checkout, env=official_env(args.threads))
    if (Path(args.logdir) / "scores.jsonl").is_file():
        extra = {"commit": _commit(Path(args.checkout)), "precision": precision,
                 "threads": args.threads, "exit_code": code}
        print(f"wrote {convert(args.logdir, config, extra=extra)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
