"""The folder layout is the architecture: envs and replay import none of the other
packages, world_models none above it, agents nothing from benchmarks (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package -> the project packages it may import (itself included).
MAY_IMPORT = {
    "envs": {"envs"},
    "replay": {"replay"},
    "world_models": {"world_models"},
    "agents": {"agents", "world_models", "envs", "replay"},
    "benchmarks": {"benchmarks", "agents", "world_models", "envs", "replay"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_no_import_runs_upward(package):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, module in _imports(path)
             if module.split(".")[0] in MAY_IMPORT
             and module.split(".")[0] not in MAY_IMPORT[package]]
    assert not wrong, "; ".join(wrong)


def test_the_agent_core_imports_neither_application():
    """agents/ is the algorithm core; agents/run (the training application) and
    agents/pretrain (encoder pretraining) build on it, never the other way round."""
    def within(module: str, package: str) -> bool:  # agents.runtime is not agents.run
        return module == package or module.startswith(package + ".")

    apps = ("agents.run", "agents.pretrain")
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in sorted((ROOT / "agents").glob("*.py"))
             for line, module in _imports(path) if any(within(module, a) for a in apps)]
    wrong += [f"{path.relative_to(ROOT)}:{line} imports {module}"
              for path in sorted((ROOT / "agents" / "run").rglob("*.py"))
              for line, module in _imports(path) if within(module, "agents.pretrain")]
    # The rule itself: a module of the core named like an application is not one.
    assert not within("agents.runtime", "agents.run") and within("agents.run.train", "agents.run")
    assert not wrong, "; ".join(wrong)


def test_observation_keys_agree_across_layers():
    """envs and world_models may not import each other, so each names the observation keys
    of the contract (DESIGN.md, Observations); they must be the same names."""
    from envs.core import IMAGE_KEY, VECTOR_KEY
    from world_models import encoders

    assert (encoders.IMAGE_KEY, encoders.VECTOR_KEY) == (IMAGE_KEY, VECTOR_KEY)
