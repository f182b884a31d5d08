"""Intervals on a mean: Student-t by default, BCa bootstrap on request, undefined for one value."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from headscope.circuits.heads.single_heads import HeadAblation
from headscope.circuits.stats import mean_interval
from headscope.probes import HeadscopeError


@pytest.mark.parametrize("n", [2, 3, 8])
def test_t_interval_equals_scipy(n):
    values = np.random.default_rng(n).normal(1.0, 2.0, size=n)
    mean, low, high = mean_interval(values, level=0.9)
    want = stats.t.interval(0.9, n - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean()) and (low, high) == pytest.approx(want)
    normal = 1.645 * stats.sem(values)
    assert high - mean > normal  # wider than the normal approximation at small n


def test_bootstrap_equals_scipy_bca_with_the_seed():
    values = np.random.default_rng(0).lognormal(size=12)  # skewed
    _, low, high = mean_interval(values, method="bootstrap", seed=3, resamples=500)
    want = stats.bootstrap((values,), np.mean, confidence_level=0.95, method="BCa", n_resamples=500,
                           rng=np.random.default_rng(3)).confidence_interval
    assert (low, high) == pytest.approx((want.low, want.high))
    assert (low, high) == mean_interval(values, method="bootstrap", seed=3, resamples=500)[1:]


def test_one_value_has_no_interval_and_bad_options_are_refused():
    mean, low, high = mean_interval(np.array([2.5]))
    assert mean == 2.5 and np.isnan(low) and np.isnan(high)
    with pytest.raises(HeadscopeError, match="unknown interval method 'normal'"):
        mean_interval([1.0, 2.0], method="normal")
    with pytest.raises(HeadscopeError, match="level 95"):
        mean_interval([1.0, 2.0], level=95)


def test_head_summaries_use_the_t_interval_over_prompts():
    effects = np.array([0.2, 0.5, 0.1, 0.9, 0.4, 0.3, 0.8, 0.6])  # 8 prompts: t with 7 dof is 2.36, not 1.96
    frame = pd.DataFrame({"prompt": range(8), "layer": 0, "head": 1, "clean": 1.0, "ablated": 1.0 - effects,
                          "effect": effects})
    row = HeadAblation(frame, {"model": "m"}).summary().iloc[0]
    want = stats.t.interval(0.95, 7, loc=effects.mean(), scale=stats.sem(effects))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(want)
    assert (row["ci_high"] - row["effect"]) / (1.96 * stats.sem(effects)) == pytest.approx(2.365 / 1.96, rel=1e-3)
