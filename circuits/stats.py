"""Small statistics shared by the analyses (no scipy)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def mean_interval(values: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and normal-approximation 95% interval (mean +- 1.96 standard errors) along ``axis``.
    With one value the interval is NaN: there is no spread to estimate."""
    values = np.asarray(values, dtype=float)
    n = values.shape[axis]
    mean = values.mean(axis)
    half = 1.96 * values.std(axis, ddof=1) / np.sqrt(n) if n > 1 else np.full_like(mean, np.nan)
    return mean, mean - half, mean + half


def spearman(a, b) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (average ranks for ties)."""
    return float(pd.Series(np.asarray(a, float)).rank().corr(pd.Series(np.asarray(b, float)).rank()))
