"""The probe's results files: per-seed rows summarised into a table, written after every
encoder, read back to resume a run, and merged across runs made on separate cores."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (over seeds) of each scalar per encoder."""
    out = {}
    for name, rows in per_seed.items():
        s = {}
        for key in ("pos_r2", "vel_r2", "rankme", "cpu_s", "steps", "var_positional",
                    "var_frame", "var_local"):
            vals = np.array([r[key] for r in rows], dtype=float)
            s[key] = float(vals.mean())
            s[key + "_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        s["seeds"] = len(rows)
        out[name] = s
    return out


def markdown_table(summary: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"### {title}", "",
             "| encoder | steps | CPU-s | position R^2 | velocity R^2 | RankMe "
             "| token variance: positional / frame / local | seeds |",
             "|---|---:|---:|---|---|---:|---|---:|"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['steps']:.0f} | {s['cpu_s']:.0f} | {s['pos_r2']:.3f} ± "
            f"{s['pos_r2_sd']:.3f} | {s['vel_r2']:.3f} ± {s['vel_r2_sd']:.3f} | "
            f"{s['rankme']:.1f} | {s['var_positional']:.2f} / {s['var_frame']:.2f} / "
            f"{s['var_local']:.2f} | {s['seeds']} |")
    return "\n".join(lines) + "\n\n(mean ± standard deviation over seeds; R^2 on held-out " \
        "episodes; token variance: shares of the layer-normed tokens' variance that their " \
        "position alone, the frame alone, and neither explain)\n"


# What makes two probe runs' rows comparable: the same frames, budget and probe.
SETTINGS = ("env", "frames", "steps", "budget", "batch", "lr", "patch", "input_norm", "stack",
             "time_limit", "fast_render", "data_seed")
# What a setting was in files written before it existed.
OLD_DEFAULTS = {"input_norm": "center"}


def title(config: dict, per_seed: dict[str, list[dict]]) -> str:
    seeds = sorted({r["seed"] for rows in per_seed.values() for r in rows})
    pools = sorted({row.split(" ", 1)[1] if " " in row else "mean" for row in per_seed},
                   key=lambda p: (p != "mean", p))
    norm = config.get("input_norm", "center")
    inputs = "" if norm == "center" else f"inputs standardised per {norm}, "
    return (f"{config['env']}: {config['frames']} random-policy frames, batch "
            f"{config['batch']}, {config['budget']} (JEPA {config['steps']} steps), tiny ViT, "
            f"patch {config['patch']}, {inputs}seeds {','.join(map(str, seeds))}, "
            f"pool {','.join(pools)}")


def _read(path: Path) -> dict:
    saved = json.loads(path.read_text())
    listed = [int(s) for s in str(saved["config"]["seeds"]).split(",")]
    for rows in saved["per_seed"].values():  # files written before rows carried their seed
        for i, r in enumerate(rows):
            if "seed" not in r:
                r["seed"] = listed[i]
    return saved


def _mismatch(a: dict, b: dict) -> str | None:
    for key in SETTINGS:
        if a.get(key, OLD_DEFAULTS.get(key)) != b.get(key, OLD_DEFAULTS.get(key)):
            return f"--{key.replace('_', '-')} {a.get(key)!r} vs {b.get(key)!r}"
    return None


def load_results(out: Path, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows an earlier run with the same settings wrote to `out` (rerunning resumes)."""
    if not (out / "probe.json").exists():
        return {}
    saved = _read(out / "probe.json")
    differs = _mismatch(saved["config"], vars(args))
    if differs:
        raise SystemExit(f"probe: error: {out}/probe.json was made with other settings "
                         f"({differs}); rerun with the same ones or another --out")
    return saved["per_seed"]


def write_results(out: Path, config: dict, pos_names: list[str],
                  per_seed: dict[str, list[dict]]) -> dict:
    per_seed = {row: sorted(rs, key=lambda r: r["seed"]) for row, rs in per_seed.items() if rs}
    summary = summarise(per_seed)
    table = markdown_table(summary, title(config, per_seed))
    print(table, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.md").write_text(table)
    (out / "probe.json").write_text(json.dumps(
        {"config": config, "positions": pos_names, "summary": summary,
         "per_seed": per_seed}, indent=2))
    return summary


def merge(dirs: Sequence[str], out: str) -> dict:
    """One table from probe runs with the same settings (e.g. seeds run on separate cores)."""
    saved = [_read(Path(d) / "probe.json") for d in dirs]
    per_seed: dict[str, list[dict]] = {}
    for d, s in zip(dirs, saved):
        differs = _mismatch(saved[0]["config"], s["config"])
        if differs:
            raise SystemExit(f"probe: error: cannot merge {dirs[0]} and {d}: {differs}")
        for row, rs in s["per_seed"].items():
            have = {r["seed"] for r in per_seed.get(row, [])}
            dup = sorted(have & {r["seed"] for r in rs})
            if dup:
                raise SystemExit(f"probe: error: {row!r} seed {dup[0]} is in more than one of "
                                 f"{', '.join(dirs)}; keep it in one")
            per_seed.setdefault(row, []).extend(rs)
    config = {**saved[0]["config"], "merged": list(dirs)}
    return write_results(Path(out), config, saved[0]["positions"], per_seed)
