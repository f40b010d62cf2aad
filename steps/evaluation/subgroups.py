"""Patient subgroups (race, gender, coarse age group) and the one table of their recall and ROC-AUC.

Training's evaluation artifacts, the gate's subgroup-recall floor and the model card all use this
table, so a subgroup carries the same name and numbers everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from steps.evaluation.calibration import calibration_slope_intercept, expected_calibration_error

ATTRIBUTES = ("race", "gender", "age_group")
# Missing race or gender, or an age bracket outside the raw data's ten.
UNKNOWN = "Unknown"
# Subgroups with fewer positive cases are reported but not judged: their recall is too noisy.
MIN_POSITIVES = 30

# Coarse age groups from the raw 10-year brackets: fine brackets are too small to judge recall.
AGE_GROUPS = {
    "[0-10)": "0-39", "[10-20)": "0-39", "[20-30)": "0-39", "[30-40)": "0-39",
    "[40-50)": "40-59", "[50-60)": "40-59",
    "[60-70)": "60-79", "[70-80)": "60-79",
    "[80-90)": "80+", "[90-100)": "80+",
}  # fmt: skip


def subgroups_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Race, gender and coarse age group of each row of a raw-format frame (missing: Unknown)."""
    return {
        "race": frame["race"].astype("string").fillna(UNKNOWN).to_numpy(dtype=object),
        "gender": frame["gender"].astype("string").fillna(UNKNOWN).to_numpy(dtype=object),
        "age_group": frame["age"].map(AGE_GROUPS).fillna(UNKNOWN).to_numpy(dtype=object),
    }


def subgroup_table(
    labels: np.ndarray,
    probability: np.ndarray,
    prediction: np.ndarray,
    groups: Mapping[str, np.ndarray],
    min_positives: int = MIN_POSITIVES,
) -> pd.DataFrame:
    """One row per subgroup of each attribute: rows, positives, recall of the 0/1 ``prediction``,
    ROC-AUC, ECE (quantile bins), calibration slope and intercept of ``probability`` (NaN without
    positives / with one class), and ``judged`` (at least ``min_positives`` positive cases, and at
    least one)."""
    labels = np.asarray(labels).astype(bool)
    probability = np.asarray(probability, dtype=np.float64)
    hit = np.asarray(prediction).astype(bool) & labels
    records = []
    for attribute, values in groups.items():
        values = np.asarray(values, dtype=object)
        for group in sorted(set(values.tolist()), key=str):
            members = values == group
            positives = int(labels[members].sum())
            both_classes = 0 < positives < int(members.sum())
            slope, intercept = (
                calibration_slope_intercept(labels[members], probability[members])
                if both_classes
                else (np.nan, np.nan)
            )
            records.append(
                {
                    "attribute": attribute,
                    "group": str(group),
                    "rows": int(members.sum()),
                    "positives": positives,
                    "recall": float(hit[members].sum() / positives) if positives else np.nan,
                    "roc_auc": float(roc_auc_score(labels[members], probability[members]))
                    if both_classes
                    else np.nan,
                    "ece": expected_calibration_error(labels[members], probability[members])
                    if both_classes
                    else np.nan,
                    "calibration_slope": slope,
                    "calibration_intercept": intercept,
                    "judged": positives >= max(min_positives, 1),
                }
            )
    names = ["attribute", "group", "rows", "positives", "recall", "roc_auc", "ece"]
    names += ["calibration_slope", "calibration_intercept", "judged"]
    return pd.DataFrame.from_records(records, columns=names)
