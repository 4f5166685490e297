"""`dreamer-sweep`: Ray Tune hyperparameter sweeps over `dreamer-run`.

    dreamer-sweep --env dmc:walker-walk --param opt.lr=loguniform(1e-5,1e-3) \
        --param run.train_ratio=choice(128,256,512) --samples 8 --scheduler asha

Every trial is one `agents.run.train.train(cfg)`, its config resolved from the same flags as
`dreamer-run` plus the sampled values; its metric reports are forwarded to `tune.report`.
ASHA stops weak trials early on agent steps. Distributions: `choice(a,b,...)`,
`uniform(lo,hi)`, `loguniform(lo,hi)` and `randint(lo,hi)` (hi exclusive, as in Tune).
At the end a table of trials is printed and the best trial's overrides are written to
`OUT/best.yaml`, usable as `dreamer-run --config OUT/best.yaml`. Each trial's run directory
is `OUT/runs/<trial id>`; rerunning the same command resumes a stopped sweep (Tune's
experiment in `OUT/trials` is restored, and its unfinished or failed trials resume their
own checkpoints); `OUT` of another sweep is refused. Embedded local Ray by default; `--address
auto` (or host:port) runs the same sweep on a cluster (`--out` then on a filesystem every
node shares).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.run.cli_args import ArgParser, add_set_arg, doc_summary
from agents.run.config import load_config, nest, parse_override, parse_value
from benchmarks.ray_launch import add_ray_args, gpus_per_task, init_ray
from benchmarks.scores import read_status

__all__ = [
    "DISTRIBUTIONS",
    "Dist",
    "SweepSpecError",
    "main",
    "parse_param",
    "trials_table",
    "write_best",
]

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
_DIST_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.DOTALL)
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SweepSpecError(ValueError):
    """A bad `--param` (unknown distribution, wrong arguments) or sweep option."""


@dataclass(frozen=True)
class Dist:
    """A search distribution parsed from `name(args)`; `to_tune()` gives Tune's domain."""

    kind: str
    args: tuple[Any, ...]

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        if self.kind == "uniform":
            return tune.uniform(*self.args)
        if self.kind == "loguniform":
            return tune.loguniform(*self.args)
        return tune.randint(*self.args)

    def extremes(self) -> tuple[Any, ...]:
        """The values a trial can take that are furthest apart (every choice; the bounds of
        a range, randint's high one exclusive), to check against the config schema."""
        if self.kind == "choice":
            return self.args
        lo, hi = self.args
        return (lo, hi - 1) if self.kind == "randint" else (lo, hi)


def _bounds(kind: str, args: list[Any], text: str) -> tuple[Any, Any]:
    if len(args) != 2 or not all(isinstance(a, int | float) for a in args):
        raise SweepSpecError(f"{kind} needs two numbers (lo,hi), got {text!r}")
    lo, hi = args
    if not lo < hi:
        raise SweepSpecError(f"{kind} needs lo < hi, got {text!r}")
    if kind == "loguniform" and lo <= 0:
        raise SweepSpecError(f"loguniform needs 0 < lo < hi, got {text!r}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise SweepSpecError(f"randint needs two integers (hi exclusive), got {text!r}")
    return lo, hi


def parse_param(text: str) -> tuple[str, Dist]:
    """`key=DIST` -> (dotted config key, distribution); SweepSpecError on bad input."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not sep or not _KEY_RE.match(key):
        raise SweepSpecError(
            f"--param expects KEY=DIST with a dotted config key, e.g. opt.lr=loguniform(1e-5,1e-3);"
            f" got {text!r}"
        )
    match = _DIST_RE.match(spec)
    if not match or match.group(1) not in DISTRIBUTIONS:
        raise SweepSpecError(
            f"--param {key}: {spec.strip()!r} is not a distribution; allowed: "
            + ", ".join(f"{d}(...)" for d in DISTRIBUTIONS)
        )
    kind, body = match.groups()
    args = [parse_value(a) for a in body.split(",")] if body.strip() else []
    if kind == "choice":
        if not args:
            raise SweepSpecError(f"--param {key}: choice needs at least one value")
        return key, Dist(kind, tuple(args))
    return key, Dist(kind, _bounds(kind, args, f"{key}={spec.strip()}"))


def _plain(value: Any) -> Any:
    # Tune samples numpy scalars; YAML wants Python numbers.
    return value.item() if hasattr(value, "item") else value


def write_best(path: str | Path, overrides: dict[str, Any], header: str = "") -> Path:
    """Write the overridden keys as a nested YAML preset for `dreamer-run --config`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(nest({k: _plain(v) for k, v in overrides.items()}), sort_keys=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + body)
    return path


def _fmt(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def trials_table(rows: Sequence[dict[str, Any]], params: Sequence[str], metric: str) -> str:
    """A fixed-width text table: trial, status, each param, agent steps, metric."""
    header = ["trial", "status", *params, "step", metric]
    cells = [[_fmt(row.get(h, "")) for h in header] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


class TrialStopped(RuntimeError):
    """A trial's run stopped (and saved) before its budget: not a trial that ended well."""


def _trainable(config: dict[str, Any], request: dict[str, Any], metric: str, runs: str) -> None:
    # Runs inside a Tune trial actor. Its run directory is named by the trial's id, which a
    # restored sweep keeps: a trial restarted after a stop resumes its own checkpoint.
    from ray import tune

    from agents.run.train import train

    logdir = Path(runs) / tune.get_context().get_trial_id()
    overrides = {k: _plain(v) for k, v in config.items()}
    cfg = load_config(**request, overrides={**overrides, "logdir": str(logdir)})
    last: dict[str, float] = {}

    def report(metrics: dict[str, Any]) -> None:
        if metric in metrics:
            last[metric] = float(metrics[metric])
        # Every result must carry the metric (ASHA compares it): carry the latest one
        # forward, and report nothing before the first value exists.
        if metric not in last:
            return
        result = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        result[metric] = last[metric]
        tune.report(result)

    logdir = train(cfg, report=report)
    status = read_status(logdir) or {}
    if not status.get("finished"):  # a signal stopped it (saved): a rerun resumes it
        raise TrialStopped(f"{logdir} stopped at step {status.get('step')} of "
                           f"{cfg.run.steps}; rerun the sweep to resume it")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(
        prog="dreamer-sweep",
        description=doc_summary(__doc__),
    )
    p.add_argument("--env", required=True, help="env spec, as for dreamer-run")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=DIST",
        help="searched config key, e.g. opt.lr=loguniform(1e-5,1e-3) (repeatable)",
    )
    p.add_argument("--samples", type=int, default=8, help="number of trials")
    p.add_argument("--scheduler", default="asha", choices=["asha", "fifo"])
    p.add_argument("--metric", default="episode/return")
    p.add_argument("--mode", default="max", choices=["max", "min"])
    p.add_argument("--steps", type=int, default=None, help="agent steps per trial")
    p.add_argument(
        "--grace-steps",
        type=int,
        default=None,
        help="ASHA: agent steps before a trial may be stopped (default steps/8)",
    )
    p.add_argument("--agent", default=None)
    p.add_argument("--size", default=None)
    p.add_argument("--envs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    add_ray_args(p, unit="trial")
    p.add_argument("--out", default="runs/sweep", help="output folder")
    add_set_arg(p, "fixed config override for every trial (repeatable)")
    return p


def asha(budget: int, grace: int | None = None):
    """ASHA on agent steps for trials of `budget` steps: every rung below the budget and no
    stop at it, so a trial that survives the rungs runs its whole budget and ends as a run
    does (its last evaluation and checkpoint; Ray puts a rung at max_t itself, and stops
    trials that reach max_t unless told not to)."""
    from ray.tune.schedulers import ASHAScheduler

    max_t = max(1, budget - 1)
    return ASHAScheduler(time_attr="step", max_t=max_t,
                         grace_period=min(grace or max(1, budget // 8), max_t),
                         reduction_factor=2, stop_last_trials=False)


SETTINGS = "sweep.json"


def same_sweep(out: Path, args: argparse.Namespace) -> bool:
    """Whether `out` already holds this sweep (True: rerunning resumes it); the first run
    writes its settings there, and another sweep's folder is refused (SweepSpecError)."""
    keys = ("env", "param", "samples", "scheduler", "metric", "mode", "steps", "grace_steps",
            "agent", "size", "envs", "seed", "sets")
    settings = {key: getattr(args, key) for key in keys}
    path = out / SETTINGS
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1) + "\n")
        return False
    before = json.loads(path.read_text())
    changed = sorted(k for k in keys if before.get(k) != json.loads(json.dumps(settings[k])))
    if changed:
        raise SweepSpecError(f"{out} holds a sweep with other settings ({', '.join(changed)}); "
                             "rerun it as it was to resume it, or give another --out")
    return True


def best_result(results: Iterable[Any], metric: str, mode: str) -> Any | None:
    """The best of the trials that ended well, by the last value of `metric` each reported
    (Tune's own pick also counts a trial that reported a high return and then failed, e.g.
    diverged); None when none did."""
    finished = [r for r in results if not r.error and r.config is not None
                and isinstance((r.metrics or {}).get(metric), (int, float))
                and math.isfinite(r.metrics[metric])]
    if not finished:
        return None
    return (max if mode == "max" else min)(finished, key=lambda r: r.metrics[metric])


def _check(args: argparse.Namespace) -> tuple[dict[str, Dist], dict[str, Any]]:
    """The searched distributions and the config request every trial resolves; the base
    config is resolved once here, so a bad flag fails before Ray starts."""
    if not args.param:
        raise SweepSpecError("give at least one --param KEY=DIST to search over")
    params = dict(parse_param(p) for p in args.param)
    if args.samples < 1:
        raise SweepSpecError(f"--samples must be >= 1, got {args.samples}")
    flags = {"run.steps": args.steps, "env.num_envs": args.envs, "seed": args.seed}
    request = {"env_spec": args.env, "size": args.size, "agent": args.agent,
               "flags": flags, "sets": list(args.sets)}
    try:
        base = load_config(**request)
    except ValueError as err:  # ConfigError, or EnvSpecError for a bad --env
        raise SweepSpecError(str(err)) from None
    for key, dist in params.items():  # a mistyped key or a value out of range fails here too
        for value in dist.extremes():
            try:
                load_config(**request, overrides={key: value})
            except ValueError as err:
                raise SweepSpecError(f"--param {key}: {err}") from None
    request["steps"] = int(base.run.steps)  # every trial's budget (the preset's, or --steps)
    return params, request


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        params, request = _check(args)
    except SweepSpecError as exc:
        parser.error(str(exc))
    from ray import tune

    budget = request.pop("steps")
    out = Path(args.out).resolve()
    try:
        resume = same_sweep(out, args)
    except SweepSpecError as exc:
        parser.error(str(exc))
    init_ray(args.address, args.num_cpus)
    gpus = gpus_per_task(args.gpus_per_trial)
    scheduler = asha(budget, args.grace_steps) if args.scheduler == "asha" else None
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, request=request, metric=args.metric,
                             runs=str(out / "runs")),
        {"cpu": args.cpus_per_trial, "gpu": gpus},
    )
    trials = out / "trials"
    if resume and tune.Tuner.can_restore(str(trials)):
        # Finished trials stay as they ended; unfinished and failed ones (a stopped run
        # fails its trial on purpose) restart and resume their run directories'
        # checkpoints.
        print(f"resuming the sweep in {out}")
        tuner = tune.Tuner.restore(str(trials), trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={key: dist.to_tune() for key, dist in params.items()},
            tune_config=tune.TuneConfig(
                metric=args.metric, mode=args.mode, num_samples=args.samples,
                scheduler=scheduler
            ),
            run_config=tune.RunConfig(name="trials", storage_path=str(out), verbose=0),
        )
    results = tuner.fit()
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial = re.search(r"[0-9a-f]{5}_\d{5}", Path(result.path or "").name)
        rows.append(
            {
                "trial": trial.group(0) if trial else "?",
                "status": "error" if result.error else "ok",
                **(result.config or {}),
                "step": metrics.get("step", math.nan),
                args.metric: metrics.get(args.metric, math.nan),
            }
        )
    print(trials_table(rows, list(params), args.metric))
    errors = sum(1 for result in results if result.error)
    best = best_result(results, args.metric, args.mode)
    if best is None:
        raise SystemExit(
            f"no trial reported {args.metric!r} ({errors} trials failed); no best.yaml written"
        )
    # The preset carries every fixed choice that shapes the model, not the trial budget.
    fixed = {
        key: getattr(args, flag)
        for flag, key in (("agent", "agent"), ("size", "size"), ("envs", "env.num_envs"),
                          ("seed", "seed"))
        if getattr(args, flag) is not None
    }
    fixed.update(dict(parse_override(s) for s in args.sets))
    path = write_best(
        out / "best.yaml",
        {**fixed, **best.config},
        header=f"dreamer-sweep best trial on {args.env}: "
        f"{args.metric} = {best.metrics[args.metric]:.4g} "
        f"at step {_fmt(best.metrics.get('step', '?'))}",
    )
    print(f"\nbest {args.metric} = {best.metrics[args.metric]:.4g}; wrote {path}")
    print(f"reproduce: dreamer-run --env {args.env} --config {path}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
