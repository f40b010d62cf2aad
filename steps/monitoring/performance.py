"""Realised and estimated performance of a batch, with bounds that account for its size.

* ``assess_performance`` (matured labels): ROC-AUC with its DeLong standard error and calibration
  in the large (observed / expected positives, relative to the baseline's); ``flagged_share``
  (no labels needed): the share the model flags at its alert threshold against the alert budget.
  Each alerts when it is outside its tolerance by more than ``z`` standard errors, so a small
  batch needs a larger change.
* ``assess_estimated`` (no labels yet): CBPE (``steps.monitoring.cbpe``) on the new batch's scores
  after Platt recalibration on the newest matured batch, compared with the ROC-AUC realised there.
  CBPE trusts calibration and the model's calibration decays (``docs/monitoring.md``), so it is
  never run on the raw scores.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logit
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression

from steps.monitoring import cbpe

# Scores are clipped away from 0 and 1 before Platt scaling (their logit must be finite).
EPSILON = 1e-6


def delong_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC-AUC of ``scores`` for 0/1 ``labels`` and its DeLong standard error."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives, negatives = scores[labels], scores[~labels]
    m, n = positives.size, negatives.size
    if m < 2 or n < 2:
        raise ValueError("ROC-AUC needs at least two rows of each class")
    all_ranks = rankdata(np.r_[positives, negatives])
    auc = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (all_ranks[:m] - rankdata(positives)) / n  # placement of each positive
    v01 = 1 - (all_ranks[m:] - rankdata(negatives)) / m  # placement of each negative
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(math.sqrt(variance))


def _excess(distance: float, se: float, tolerance: float, z: float) -> bool:
    """True when ``distance`` exceeds ``tolerance`` by more than ``z`` standard errors."""
    return distance - tolerance > z * se


def assess_performance(
    batch: dict[str, np.ndarray], baseline: dict[str, np.ndarray], thresholds
) -> dict:
    """The performance section: ``batch`` and ``baseline`` hold ``target`` (0/1),
    ``probability_score`` and ``prediction`` (0/1 at the model's threshold) arrays.

    ``thresholds`` (a ``decision.Thresholds``) gives ``auc_tolerance``, ``calibration_tolerance``
    (a factor) and ``z``. The flagged share (:func:`flagged_share`) is judged on the new batch.
    """
    z = thresholds.z
    figures, reasons = {}, []
    auc, auc_se = delong_auc(batch["target"], batch["probability_score"])
    base_auc, base_se = delong_auc(baseline["target"], baseline["probability_score"])
    drop_se = math.hypot(auc_se, base_se)
    figures["roc_auc"] = {
        "batch": round(auc, 4), "batch_ci95": _ci(auc, auc_se),
        "baseline": round(base_auc, 4), "drop": round(base_auc - auc, 4),
        "drop_se": round(drop_se, 4),
    }  # fmt: skip
    if _excess(base_auc - auc, drop_se, thresholds.auc_tolerance, z):
        reasons.append(
            f"ROC-AUC {auc:.3f} below the baseline's {base_auc:.3f} by {base_auc - auc:.3f} "
            f"(tolerance {thresholds.auc_tolerance} + {z} x se {drop_se:.3f})"
        )

    ratio, ratio_se = _observed_over_expected(batch)
    base_ratio, base_ratio_se = _observed_over_expected(baseline)
    log_shift = math.log(ratio / base_ratio) if ratio > 0 else -math.inf
    shift_se = math.hypot(ratio_se, base_ratio_se)
    figures["calibration"] = {
        "observed_over_expected": round(ratio, 4),
        "ci95": [round(ratio * math.exp(s * 1.96 * ratio_se), 4) for s in (-1, 1)],
        "baseline_observed_over_expected": round(base_ratio, 4),
        "mean_predicted": round(float(np.mean(batch["probability_score"])), 4),
        "observed_rate": round(float(np.mean(batch["target"])), 4),
    }
    if _excess(abs(log_shift), shift_se, math.log(thresholds.calibration_tolerance), z):
        reasons.append(
            f"calibration: observed / expected {ratio:.2f} against the baseline's {base_ratio:.2f} "
            f"(tolerance x{thresholds.calibration_tolerance}, {z} se)"
        )

    figures["rows"] = len(batch["target"])
    figures["positives"] = int(np.sum(batch["target"]))
    return {"alert": bool(reasons), "reasons": reasons, **figures}


def flagged_share(prediction: np.ndarray, budget: float, thresholds) -> dict:
    """Share of rows flagged at the model's threshold, its binomial standard error at the
    ``budget``, and whether it is outside ``budget +- flag_tolerance`` by more than ``z`` se."""
    if len(prediction) == 0:
        return {"share": None, "budget": budget, "se": None, "alert": False}
    share = float(np.mean(prediction))
    se = math.sqrt(budget * (1 - budget) / len(prediction))
    alert = _excess(abs(share - budget), se, thresholds.flag_tolerance, thresholds.z)
    return {"share": round(share, 4), "budget": budget, "se": round(se, 4), "alert": alert}


def _observed_over_expected(frame: dict[str, np.ndarray]) -> tuple[float, float]:
    """Observed over expected positives and the standard error of its log (Poisson: 1/sqrt(O))."""
    observed = float(np.sum(frame["target"]))
    expected = float(np.sum(frame["probability_score"]))
    return observed / expected, 1 / math.sqrt(max(observed, 1.0))


def _ci(value: float, se: float) -> list[float]:
    return [round(value - 1.96 * se, 4), round(value + 1.96 * se, 4)]


def recalibrated(matured: dict[str, np.ndarray], scores: np.ndarray) -> np.ndarray:
    """``scores`` after Platt scaling fitted on the ``matured`` batch's scores and labels."""
    fitted = LogisticRegression(C=1e6).fit(_logit(matured["probability_score"]), matured["target"])
    return fitted.predict_proba(_logit(scores))[:, 1]


def _logit(scores: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(scores, dtype=np.float64), EPSILON, 1 - EPSILON))[:, None]


def assess_estimated(matured: dict[str, np.ndarray], scores: np.ndarray, thresholds) -> dict:
    """The estimated-performance section: CBPE of the new batch's recalibrated ``scores``
    against the ROC-AUC realised on the ``matured`` batch (its size accounted for)."""
    estimate = cbpe.estimate(recalibrated(matured, scores))
    realised, realised_se = delong_auc(matured["target"], matured["probability_score"])
    expected_positives = max(round(estimate["observed_rate"] * estimate["rows"]), 2)
    estimate_se = cbpe.hanley_mcneil_se(
        estimate["roc_auc"], expected_positives, max(estimate["rows"] - expected_positives, 2)
    )
    drop, drop_se = realised - estimate["roc_auc"], math.hypot(realised_se, estimate_se)
    alert = _excess(drop, drop_se, thresholds.auc_tolerance, thresholds.z)
    reasons = (
        [f"estimated ROC-AUC {estimate['roc_auc']:.3f} (CBPE, recalibrated) below the "
         f"{realised:.3f} realised on the newest matured batch by {drop:.3f}"]
        if alert else []
    )  # fmt: skip
    return {
        "alert": alert,
        "reasons": reasons,
        "roc_auc": round(estimate["roc_auc"], 4),
        "observed_rate": round(estimate["observed_rate"], 4),
        "matured_roc_auc": round(realised, 4),
        "drop": round(drop, 4),
        "drop_se": round(drop_se, 4),
        "rows": estimate["rows"],
    }
