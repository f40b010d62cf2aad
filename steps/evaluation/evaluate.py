"""Evaluation of a readmission model: metrics, calibration error, plots and a subgroup table.

Rows whose encounter ended in death or hospice (``columns.is_label_eligible`` False) carry no
readmission outcome and are left out of every metric.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
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

SUBGROUP_ATTRIBUTES = ("race", "gender", "age_group")
AGE_GROUPS = {
    **{f"[{lo}-{lo + 10})": "0-39" for lo in (0, 10, 20, 30)},
    **{f"[{lo}-{lo + 10})": "40-59" for lo in (40, 50)},
    **{f"[{lo}-{lo + 10})": "60-79" for lo in (60, 70)},
    **{f"[{lo}-{lo + 10})": "80+" for lo in (80, 90)},
}


def labelled_rows(frame: pd.DataFrame, target: str = "30d") -> tuple[pd.DataFrame, np.ndarray]:
    """The label-eligible rows of ``frame`` and their binary labels."""
    eligible = frame[columns.is_label_eligible(frame).to_numpy()]
    return eligible, columns.make_label(eligible, target).to_numpy()


def expected_calibration_error(
    y_true: np.ndarray, probability: np.ndarray, bins: int = 10
) -> float:
    """Expected calibration error over ``bins`` equal-width probability bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            error += in_bin.mean() * abs(probability[in_bin].mean() - y_true[in_bin].mean())
    return float(error)


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
    """ROC-AUC, PR-AUC, Brier, ECE and recall/precision/F1 at ``threshold``."""
    predicted = (probability >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y_true, probability)),
        "pr_auc": float(average_precision_score(y_true, probability)),
        "brier": float(brier_score_loss(y_true, probability)),
        "ece": expected_calibration_error(y_true, probability),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }


def subgroup_table(
    frame: pd.DataFrame, y_true: np.ndarray, probability: np.ndarray, threshold: float
) -> pd.DataFrame:
    """Per race, gender and age group: count, positives, ROC-AUC (NaN if one class) and recall."""
    groups = pd.DataFrame(
        {
            "race": frame["race"].astype(object).fillna("missing").to_numpy(),
            "gender": frame["gender"].astype(object).fillna("missing").to_numpy(),
            "age_group": frame["age"].astype(object).map(AGE_GROUPS).fillna("missing").to_numpy(),
        }
    )
    predicted = probability >= threshold
    rows = []
    for attribute in SUBGROUP_ATTRIBUTES:
        for group, index in groups.groupby(attribute).indices.items():
            labels = y_true[index]
            positives = int(labels.sum())
            both_classes = 0 < positives < len(labels)
            rows.append(
                {
                    "attribute": attribute,
                    "group": group,
                    "count": len(index),
                    "positives": positives,
                    "roc_auc": roc_auc_score(labels, probability[index])
                    if both_classes
                    else np.nan,
                    "recall": predicted[index][labels == 1].mean() if positives else np.nan,
                }
            )
    return pd.DataFrame(rows)


def save_plots(y_true: np.ndarray, probability: np.ndarray, directory: Path, title: str) -> None:
    """``roc_curve.png``, ``pr_curve.png`` and ``calibration.png`` in ``directory``."""
    fpr, tpr, _ = roc_curve(y_true, probability)
    precision, recall, _ = precision_recall_curve(y_true, probability)
    observed, predicted = calibration_curve(y_true, probability, n_bins=10, strategy="quantile")
    plots = {
        "roc_curve.png": (fpr, tpr, "False positive rate", "True positive rate", [0, 1], [0, 1]),
        "pr_curve.png": (recall, precision, "Recall", "Precision", [0, 1], [y_true.mean()] * 2),
        "calibration.png": (
            predicted,
            observed,
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
    subgroup_table(frame, y_true, probability, threshold).to_csv(
        directory / "subgroups.csv", index=False
    )
    save_plots(y_true, probability, directory, title)
    return metrics


def evaluate_model(model_uri: str, data_uri: str, target: str = "30d") -> dict[str, float]:
    """Metrics of a logged pyfunc on a labelled raw-format CSV (death/hospice rows excluded)."""
    import mlflow

    from steps.core import config, storage

    config.configure_mlflow()
    frame, y_true = labelled_rows(columns.read_encounters_csv(storage.read_bytes(data_uri)), target)
    model = mlflow.pyfunc.load_model(model_uri)
    output = model.predict(frame.drop(columns=[columns.LABEL_COLUMN]))
    probability = output["probability_score"].to_numpy()
    metrics = classification_metrics(y_true, probability, threshold=0.5)
    predicted = output["prediction"].to_numpy()
    metrics.update(
        recall=float(recall_score(y_true, predicted, zero_division=0)),
        precision=float(precision_score(y_true, predicted, zero_division=0)),
        f1=float(f1_score(y_true, predicted, zero_division=0)),
    )
    return metrics


def main(argv: list[str] | None = None) -> int:
    """CLI: print the metrics of ``--model-uri`` on ``--data-uri`` as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--data-uri", required=True, help="labelled raw-format CSV")
    parser.add_argument("--target", default="30d")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_model(args.model_uri, args.data_uri, args.target), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
