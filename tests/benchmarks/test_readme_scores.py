"""The README's results table is what `benchmarks.plot` prints for the committed scores/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.compare import discover_cells, summarize
from benchmarks.plot import report
from benchmarks.scores import read_scores

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- scores-table: python -m benchmarks.plot scores/(\w+) --budget (\d+) -->"
                   r"\n(.*?)<!-- /scores-table -->", re.S)


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_table_is_rebuilt_from_scores(tmp_path):
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert blocks, "README.md has no scores-table block"
    if not (ROOT / "scores").is_dir():
        pytest.fail("scores/ is missing: the README table cannot be rebuilt")
    for benchmark, budget, shown in blocks:
        runs = read_scores(ROOT / "scores" / benchmark)
        text, _ = report(runs, [], tmp_path / budget, budget=float(budget), plots=False)
        assert _table(shown) == _table(text), (
            f"README table at {budget} frames differs from `python -m benchmarks.plot "
            f"scores/{benchmark} --budget {budget}`:\n{text}")


STUDY = re.compile(r"<!-- study-table: python -m benchmarks.compare --report-only "
                   r"scores/([\w-]+) --frames (\d+) -->\n(.*?)<!-- /study-table -->", re.S)


def test_readme_study_table_is_rebuilt_from_scores():
    """The JEPA study's table is what `benchmarks.compare --report-only` prints for its
    published folder; every published study has a table."""
    readme = (ROOT / "README.md").read_text()
    blocks = STUDY.findall(readme)
    studies = {p.parent.name for p in (ROOT / "scores").glob("*/compare.md")}
    assert studies == {folder for folder, _, _ in blocks}, (
        f"published studies {sorted(studies)} and README study tables "
        f"{sorted(b[0] for b in blocks)} differ")
    for folder, frames, shown in blocks:
        text, _ = summarize(discover_cells(ROOT / "scores" / folder), int(frames), reps=2000)
        assert _table(shown) == _table(text), (
            f"README study table differs from `python -m benchmarks.compare --report-only "
            f"scores/{folder} --frames {frames}`:\n{text}")
