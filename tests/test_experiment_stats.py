"""examples/experiment_stats.py: the intervals the experiment docs report."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_script


@pytest.fixture(scope="module")
def stats(repo_root):
    return load_script(repo_root / "examples" / "experiment_stats.py")


def test_seed_interval_is_welchs_t_interval(stats):
    from scipy.stats import ttest_ind

    a, b = [64.1, 64.9, 63.8], [66.7, 66.2, 67.4]
    diff, lo, hi = stats.seed_interval(a, b)
    ci = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b)) and (lo, hi) == pytest.approx((ci.low, ci.high))
    assert lo < diff < hi < 0  # clearly worse
    assert stats.seed_interval([1.0, 1.0], [1.0, 1.0]) == (0.0, 0.0, 0.0)  # no spread: a point


def test_paired_bootstrap_of_identical_runs_is_zero(stats):
    rng = np.random.default_rng(0)
    item = {"kind": "sts", "pred": rng.normal(size=50).tolist(), "gold": rng.normal(size=50).tolist()}
    d, lo, hi = stats.paired_bootstrap([item], [item], resamples=200)
    assert d == lo == hi == 0.0
