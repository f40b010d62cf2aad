"""Calibration of risk scores: the quantile-bin table, its expected calibration error, and the
logistic recalibration slope and intercept."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression


def calibration_table(y_true: np.ndarray, probability: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration per quantile bin (``bins`` bins of equal row counts, so the sparse high-risk
    tail is not judged on a handful of rows; tied scores share a bin): range, rows, mean predicted
    probability and observed rate."""
    probability = np.asarray(probability, dtype=np.float64)
    edges = np.unique(np.quantile(probability, np.linspace(0.0, 1.0, bins + 1)))
    which = np.clip(
        np.searchsorted(edges, probability, side="right") - 1, 0, max(len(edges) - 2, 0)
    )
    frame = pd.DataFrame({"bin": which, "predicted": probability, "observed": y_true})
    table = frame.groupby("bin").agg(
        rows=("predicted", "size"),
        mean_predicted=("predicted", "mean"),
        observed_rate=("observed", "mean"),
    )
    upper = np.minimum(table.index + 1, len(edges) - 1)
    ranges = [f"{edges[lo]:.3f}-{edges[hi]:.3f}" for lo, hi in zip(table.index, upper, strict=True)]
    table.insert(0, "range", ranges)
    return table.reset_index(drop=True)


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Row-weighted mean absolute gap between predicted and observed rates over the quantile bins
    of :func:`calibration_table`."""
    table = calibration_table(y_true, probability, bins)
    weights = table["rows"] / table["rows"].sum()
    return float((weights * (table["mean_predicted"] - table["observed_rate"]).abs()).sum())


def calibration_slope_intercept(y_true: np.ndarray, probability: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the logistic recalibration fit ``logit P(y=1) = a + b logit(p)``
    (perfect calibration: slope 1, intercept 0; slope < 1 means over-confident scores)."""
    clipped = np.clip(probability, 1e-6, 1 - 1e-6)
    log_odds = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(log_odds, y_true)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])
