import json

import numpy as np
import pytest

from benchmarks.probe import main, ridge_probe, split_groups


def test_ridge_probe_recovers_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10))
    y = x @ rng.normal(size=(10, 3)) + 0.01 * rng.normal(size=(400, 3))
    groups, test = split_groups(np.repeat(np.arange(8), 50))
    score, _, dims = ridge_probe(x, y, groups, test)
    assert len(dims) == 3 and min(dims) > 0.98
    assert score > 0.99
    noise_score, _, _ = ridge_probe(rng.normal(size=(400, 10)), y, groups, test)
    assert noise_score < 0.2


def test_tiny_probe_run(tmp_path):
    pytest.importorskip("dm_control")
    results = main(["--frames", "120", "--time-limit", "60", "--steps", "2", "--batch", "4",
                    "--fast-render", "--threads", "1", "--out", str(tmp_path)])
    assert set(results) == {"jepa", "autoencoder", "random"}
    saved = json.loads((tmp_path / "probe.json").read_text())["results"]
    assert all(np.isfinite(saved[k]["qvel_r2"]) for k in saved)
    assert "| jepa |" in (tmp_path / "probe.md").read_text()
