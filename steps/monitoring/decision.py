"""The retraining decision: DRIFT_DETECTED when the drift matters to the model, else NO_DRIFT.

Labels arrive weeks after the inputs (``steps.orchestration.loop`` models the lag), so a decision
combines two sources. On matured labels (a batch whose 30-day outcomes are known, with enough rows
of each class) it looks at what retraining would fix: ROC-AUC decay or calibration decay relative
to the model's held-out baseline. On the newest, unlabelled inputs it looks at drift the model
feels: the distribution of its scores (PSI), drift in the input columns it relies on, and the
ROC-AUC estimated without labels (CBPE, ``steps.monitoring.cbpe``) against the same estimate on
the baseline. Any reason from either source means DRIFT_DETECTED.

Evidently's own dataset rule (share of drifted columns >= 0.5) is reported as ``dataset_drift``
but is not part of the decision: on this data it never fires (the share is 0.2-0.4 on batches
where the model visibly decays) and it weighs an unused column like a key one.
The defaults and the measurements behind them are in ``docs/monitoring.md``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DRIFT_DETECTED = "DRIFT_DETECTED"
NO_DRIFT = "NO_DRIFT"
# Below this many labelled positives (or negatives) a batch's ROC-AUC and observed rate are too
# noisy to act on, and the unlabelled rules apply instead.
MIN_LABELLED_PER_CLASS = 100


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds (declared with the same names and defaults in ``MLproject``)."""

    auc_drop: float = 0.05
    calibration_ratio: float = 1.3
    prediction_drift_psi: float = 0.05
    important_drift_share: float = 0.15

    def as_dict(self) -> dict[str, float]:
        """The thresholds by name."""
        return asdict(self)


def labels_usable(positives: int, negatives: int) -> bool:
    """True when a batch has enough labelled rows of each class for the performance rules."""
    return min(positives, negatives) >= MIN_LABELLED_PER_CLASS


def performance_reasons(batch: dict, baseline: dict, thresholds: Thresholds) -> list[str]:
    """Why the labelled batch shows decay: ROC-AUC drop or calibration shift (empty if none)."""
    reasons = []
    drop = baseline["roc_auc"] - batch["roc_auc"]
    if drop >= thresholds.auc_drop:
        reasons.append(
            f"ROC-AUC fell by {drop:.3f} (batch {batch['roc_auc']:.3f}, baseline "
            f"{baseline['roc_auc']:.3f}; threshold {thresholds.auc_drop})"
        )
    shift = batch["calibration_ratio"] / baseline["calibration_ratio"]
    if max(shift, 1 / shift) >= thresholds.calibration_ratio:
        direction = "over" if shift > 1 else "under"
        factor = max(shift, 1 / shift)
        reasons.append(
            f"calibration shifted: the model {direction}-predicts by a factor {factor:.2f} "
            f"relative to its baseline (mean predicted {batch['mean_predicted']:.3f} vs observed "
            f"{batch['observed_rate']:.3f}; threshold {thresholds.calibration_ratio})"
        )
    return reasons


def drift_reasons(
    prediction_drift: dict, important_drift_share: float, thresholds: Thresholds
) -> list[str]:
    """Why the unlabelled batch matters: score distribution drift or drift in relied-on columns."""
    reasons = []
    if prediction_drift["score"] >= thresholds.prediction_drift_psi:
        reasons.append(
            f"prediction drift: PSI of probability_score {prediction_drift['score']:.3f} "
            f"(threshold {thresholds.prediction_drift_psi})"
        )
    if important_drift_share >= thresholds.important_drift_share:
        reasons.append(
            f"drift in the columns the model relies on: {important_drift_share:.2f} of its "
            f"reliance (threshold {thresholds.important_drift_share})"
        )
    return reasons


def estimated_reasons(
    estimated: dict, baseline_estimated: dict, thresholds: Thresholds
) -> list[str]:
    """Why the unlabelled batch's CBPE ROC-AUC says the model got worse (empty if it does not)."""
    drop = baseline_estimated["roc_auc"] - estimated["roc_auc"]
    if drop >= thresholds.auc_drop:
        return [
            f"estimated ROC-AUC (CBPE, no labels) fell by {drop:.3f} (batch "
            f"{estimated['roc_auc']:.3f}, baseline {baseline_estimated['roc_auc']:.3f}; "
            f"threshold {thresholds.auc_drop})"
        ]
    return []


def all_reasons(summary: dict, thresholds: Thresholds) -> list[str]:
    """Every reason a monitoring summary gives under ``thresholds``.

    ``summary`` holds ``performance`` (realised, on matured labels; None when unusable),
    ``prediction_drift``, ``important_drift_share`` and ``estimated_performance`` (CBPE).
    """
    reasons = []
    if summary.get("performance"):
        performance = summary["performance"]
        reasons += performance_reasons(performance["batch"], performance["baseline"], thresholds)
    reasons += drift_reasons(
        summary["prediction_drift"], summary["important_drift_share"], thresholds
    )
    estimated = summary["estimated_performance"]
    reasons += estimated_reasons(estimated["batch"], estimated["baseline"], thresholds)
    return reasons


def decision(reasons: list[str]) -> str:
    """DRIFT_DETECTED when there is any reason, else NO_DRIFT."""
    return DRIFT_DETECTED if reasons else NO_DRIFT
