"""The README's results table is what `benchmarks.plot` prints for the committed scores/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.plot import report
from benchmarks.scores import read_scores

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- scores-table: python -m benchmarks.plot scores/ --budget (\d+) -->"
                   r"\n(.*?)<!-- /scores-table -->", re.S)


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_table_is_rebuilt_from_scores(tmp_path):
    blocks = BLOCK.findall((ROOT / "README.md").read_text())
    assert blocks, "README.md has no scores-table block"
    if not (ROOT / "scores").is_dir():
        pytest.fail("scores/ is missing: the README table cannot be rebuilt")
    runs = read_scores(ROOT / "scores")
    for budget, shown in blocks:
        text, _ = report(runs, [], tmp_path / budget, budget=float(budget), plots=False)
        assert _table(shown) == _table(text), (
            f"README table at {budget} frames differs from `python -m benchmarks.plot scores/ "
            f"--budget {budget}`:\n{text}")
