"""Evaluation of a readmission model: metrics, calibration error, plots and a subgroup table.

Rows whose encounter ended in death or hospice (``columns.is_label_eligible`` False) carry no
readmission outcome and are left out of every metric.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from custom_pyfunc import columns
from steps.evaluation import subgroups
from steps.evaluation.calibration import (
    calibration_slope_intercept,
    calibration_table,
    expected_calibration_error,
)


def labelled_rows(
    frame: pd.DataFrame, target: str = columns.DEFAULT_TARGET
) -> tuple[pd.DataFrame, np.ndarray]:
    """The label-eligible rows of ``frame`` and their binary labels."""
    eligible = frame[columns.is_label_eligible(frame).to_numpy()]
    return eligible, columns.make_label(eligible, target).to_numpy()


def alert_budget_threshold(probability: np.ndarray, budget: float) -> float:
    """The score threshold that flags the share ``budget`` of rows with the highest scores
    (among tied scores, the distinct score whose flagged share is closest to ``budget``)."""
    if not 0 < budget < 1:
        raise ValueError(f"alert budget must be a share between 0 and 1, got {budget}")
    values, counts = np.unique(probability, return_counts=True)
    flagged_share = np.cumsum(counts[::-1])[::-1] / len(probability)  # share >= each value
    return float(values[int(np.argmin(np.abs(flagged_share - budget)))])


def best_f1_threshold(y_true: np.ndarray, probability: np.ndarray) -> float:
    """The probability threshold with the highest F1 score (the documented decision rule)."""
    precision, recall, thresholds = precision_recall_curve(y_true, probability)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )[:-1]
    return float(thresholds[int(np.argmax(f1))])


def classification_metrics(
    y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier, ECE (quantile bins), calibration slope and intercept, and
    recall/precision/F1, share flagged and lift (precision / prevalence) at ``threshold``."""
    predicted = (probability >= threshold).astype(int)
    slope, intercept = calibration_slope_intercept(y_true, probability)
    precision = float(precision_score(y_true, predicted, zero_division=0))
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "brier": float(brier_score_loss(y_true, probability)),
        "ece": expected_calibration_error(y_true, probability),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "precision": precision,
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "flag_rate": float(predicted.mean()),
        "lift": precision / float(y_true.mean()) if y_true.any() else float("nan"),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }


def save_plots(y_true: np.ndarray, probability: np.ndarray, directory: Path, title: str) -> None:
    """``roc_curve.png``, ``pr_curve.png`` and ``calibration.png`` in ``directory``."""
    fpr, tpr, _ = roc_curve(y_true, probability)
    precision, recall, _ = precision_recall_curve(y_true, probability)
    curve = calibration_table(y_true, probability)
    plots = {
        "roc_curve.png": (fpr, tpr, "False positive rate", "True positive rate", [0, 1], [0, 1]),
        "pr_curve.png": (recall, precision, "Recall", "Precision", [0, 1], [y_true.mean()] * 2),
        "calibration.png": (
            curve["mean_predicted"],
            curve["observed_rate"],
            "Mean predicted probability",
            "Observed rate",
            [0, 1],
            [0, 1],
        ),
    }
    for filename, (x, y, x_label, y_label, ref_x, ref_y) in plots.items():
        figure, axis = plt.subplots(figsize=(5, 4))
        axis.plot(x, y, marker="." if filename == "calibration.png" else None)
        axis.plot(ref_x, ref_y, linestyle="--", color="grey")
        axis.set(xlabel=x_label, ylabel=y_label, title=title)
        figure.tight_layout()
        figure.savefig(directory / filename, dpi=80)
        plt.close(figure)


def write_evaluation(
    frame: pd.DataFrame,
    y_true: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    directory: Path,
    title: str,
) -> dict[str, float]:
    """Metrics (``metrics.json``), plots and ``subgroups.csv`` in ``directory``; returns metrics."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics = classification_metrics(y_true, probability, threshold)
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    groups = subgroups.subgroups_of(frame)
    predicted = probability >= threshold
    subgroups.subgroup_table(y_true, probability, predicted, groups).to_csv(
        directory / "subgroups.csv", index=False
    )
    save_plots(y_true, probability, directory, title)
    return metrics
