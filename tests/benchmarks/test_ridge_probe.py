"""The ridge probe both probe benchmarks use (benchmarks/ridge_probe.py)."""

import numpy as np
import pytest

from benchmarks.ridge_probe import ridge_fit, ridge_path, ridge_probe, split_groups


def test_ridge_probe_recovers_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 10))
    y = x @ rng.normal(size=(10, 3)) + 0.01 * rng.normal(size=(400, 3))
    groups = split_groups(np.repeat(np.arange(8), 50))
    score, dims = ridge_probe(x, y, groups)
    assert len(dims) == 3 and min(dims) > 0.98
    assert score > 0.99
    noise_score, _ = ridge_probe(rng.normal(size=(400, 10)), y, groups)
    assert noise_score < 0.05


@pytest.mark.parametrize("n,d", [(60, 8), (20, 50)])
def test_ridge_path_equals_one_solve_per_lambda_in_both_forms(n, d):
    rng = np.random.default_rng(1)
    x, y, x_new = rng.normal(size=(n, d)), rng.normal(size=(n, 3)), rng.normal(size=(7, d))
    x = x - x.mean(0)
    lams = np.array([1e-3, 0.1, 10.0])
    want = np.stack([x_new @ ridge_fit(x, y, lam) for lam in lams])
    np.testing.assert_allclose(ridge_path(x, y, x_new, lams), want, rtol=1e-6, atol=1e-9)


def test_few_episodes_are_cut_into_contiguous_groups():
    groups = split_groups(np.repeat([0, 1], 40))
    assert len(np.unique(groups)) == 8
    assert all(np.all(np.diff(np.nonzero(groups == g)[0]) == 1) for g in np.unique(groups))
