"""Calibration of risk scores: the quantile-bin table, its expected calibration error, and the
logistic recalibration slope and intercept."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression


def calibration_table(y_true: np.ndarray, probability: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Calibration per quantile bin (``bins`` bins of equal row counts, so the sparse high-risk
    tail is not judged on a handful of rows; tied scores share a bin, empty bins are dropped):
    range, rows, mean predicted probability and observed rate. The curve is scikit-learn's
    ``calibration_curve(strategy="quantile")``; rows and ranges come from its bin edges."""
    probability = np.asarray(probability, dtype=np.float64)
    observed, predicted = calibration_curve(y_true, probability, n_bins=bins, strategy="quantile")
    edges = np.percentile(probability, np.linspace(0, 100, bins + 1))
    # The bin of each row as calibration_curve assigns it.
    rows = np.bincount(np.searchsorted(edges[1:-1], probability), minlength=bins)
    kept = np.flatnonzero(rows)
    return pd.DataFrame(
        {
            "range": [f"{edges[i]:.3f}-{edges[i + 1]:.3f}" for i in kept],
            "rows": rows[kept],
            "mean_predicted": predicted,
            "observed_rate": observed,
        }
    )


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
