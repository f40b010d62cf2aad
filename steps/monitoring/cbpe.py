"""Performance estimated without labels: confidence-based performance estimation (CBPE).

CBPE (NannyML; Kivimäki et al., "Confidence-based performance estimation", 2024) reads a
calibrated probability ``p`` as the chance that the row is positive: each row counts as a
positive with weight ``p`` and as a negative with weight ``1 - p``. The expected ROC-AUC is the
ROC-AUC of those weighted rows (NannyML builds the same expected ROC curve from cumulative sums of
``p`` and ``1 - p``); the expected observed rate is the mean of ``p``.

NannyML itself is not used: 0.13.1 pins ``lightgbm<4.6`` (we pin 4.7) and would pull in FLAML,
kaleido 0.2 and a telemetry client, so the published estimator is computed here with scikit-learn.

What CBPE can see: changes in the score distribution (covariate shift), which move the expected
ROC-AUC. What it cannot see: a change in P(label | inputs) (concept or prior shift), because it
trusts the calibration it is given; by construction its expected calibration ratio (mean
predicted / expected observed rate) is exactly 1. Calibration decay is therefore judged on matured
labels only (``steps.monitoring.decision.performance_reasons``).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def estimated_roc_auc(probability: np.ndarray) -> float:
    """Expected ROC-AUC of a calibrated classifier on a batch, from its probabilities alone."""
    p = np.asarray(probability, dtype=np.float64)
    if p.size == 0 or not np.isfinite(p).all() or ((p < 0) | (p > 1)).any():
        raise ValueError("CBPE needs a non-empty array of finite probabilities in [0, 1]")
    if p.sum() == 0 or (1 - p).sum() == 0:
        return math.nan
    labels = np.r_[np.ones(p.size), np.zeros(p.size)]
    return float(roc_auc_score(labels, np.r_[p, p], sample_weight=np.r_[p, 1 - p]))


def estimate(probability: np.ndarray) -> dict[str, float]:
    """CBPE of a batch: expected ROC-AUC and expected observed rate (= mean probability)."""
    p = np.asarray(probability, dtype=np.float64)
    return {
        "roc_auc": estimated_roc_auc(p),
        "observed_rate": float(p.mean()),
        "rows": int(p.size),
    }


def hanley_mcneil_se(roc_auc: float, positives: int, negatives: int) -> float:
    """Standard error of a realised ROC-AUC (Hanley and McNeil, 1982)."""
    q1 = roc_auc / (2 - roc_auc)
    q2 = 2 * roc_auc**2 / (1 + roc_auc)
    variance = (
        roc_auc * (1 - roc_auc)
        + (positives - 1) * (q1 - roc_auc**2)
        + (negatives - 1) * (q2 - roc_auc**2)
    ) / (positives * negatives)
    return float(math.sqrt(variance))
