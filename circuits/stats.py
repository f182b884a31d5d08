"""Small statistics shared by the analyses: intervals on a mean, rank correlation.

Intervals are Student-t on the mean by default (``t_{n-1, (1+level)/2} * sd / sqrt(n)``), right for
the small samples analyses here have (8 solved prompts of an operation, 40 facts); ``bootstrap`` is
scipy's BCa bootstrap, seeded, for skewed distributions. With one value the interval is undefined
(NaN), never zero width. ``interval_meta`` is what a result's ``meta.json`` records of it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = ("t", "bootstrap")
_NAMES = {"t": "student-t", "bootstrap": "bootstrap-bca"}


def check_interval(method: str, level: float) -> None:
    from ..probes import HeadscopeError

    if method not in METHODS:
        raise HeadscopeError(f"unknown interval method {method!r}; use {' or '.join(METHODS)}")
    if not 0 < level < 1:
        raise HeadscopeError(f"interval level {level!r} must be between 0 and 1")


def mean_interval(values: np.ndarray, axis: int = -1, *, method: str = "t", level: float = 0.95,
                  seed: int = 0, resamples: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and its ``level`` interval along ``axis`` (module docstring)."""
    from scipy import stats

    check_interval(method, level)
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan.copy()
    if method == "t":
        half = stats.t.ppf((1 + level) / 2, n - 1) * values.std(axis, ddof=1) / np.sqrt(n)
        return mean, mean - half, mean + half
    with np.errstate(all="ignore"):  # a constant sample has no spread: scipy returns NaN
        result = stats.bootstrap((values,), np.mean, axis=axis, confidence_level=level, method="BCa",
                                 n_resamples=resamples, rng=np.random.default_rng(seed))
    return mean, result.confidence_interval.low, result.confidence_interval.high


def interval_meta(method: str, level: float, n: int) -> dict:
    """``{"method", "level", "n"}`` of the intervals a result reports."""
    return {"method": _NAMES[method], "level": level, "n": int(n)}


def spearman(a, b) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (average ranks for ties)."""
    return float(pd.Series(np.asarray(a, float)).rank().corr(pd.Series(np.asarray(b, float)).rank()))
