"""Where the drift thresholds are tuned, and the rule that freezes them there.

The tuning slice is half of ``initial_test``'s patients (a patient-disjoint split), the other half
is where false alarms and power are reported (``benchmarks/drift.py``); no figure is reported on
the tuning slice, and the replay (``benchmarks/replay.py``) leaves its patients out of every
reported row. ``initial_test`` is the only initial data the model never touched (``initial_train``
fitted it, ``initial_validation`` calibrated it and set its threshold).

Each threshold is frozen above what no-drift batches drawn from the tuning slice show, rounded up
to ``GRID``. Every tuning draw resamples both the batch (from the tuning slice) and the baseline,
so the spread of a statistic is that of "a new batch against a baseline", both sampled:

* ``auc_drop`` and ``calibration_ratio`` compare the batch with the baseline, whose no-drift value
  is known (no drop, ratio 1): ``SPREAD`` standard deviations of the drop, and
  ``exp(SPREAD * sd(log ratio))``. Their mean over the draws is not used: all draws share the one
  tuning slice, whose own sampling offset from the population would otherwise set the threshold
  (a first attempt with "above the maximum draw" froze ``auc_drop`` at 0.01 and then flagged 8
  of 15 no-drift batches of the report slice);
* ``prediction_drift_psi`` and ``important_drift_share`` compare with the reference and have no
  known no-drift value: the larger of their maximum and mean + ``SPREAD`` standard deviations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from steps.monitoring.decision import Thresholds

PATIENT_COLUMN = "patient_nbr"
SPLIT_SEED = 14
TUNING_SHARE = 0.5
# 3.5 standard deviations: about 2 in 10,000 one-sided under normality, per rule.
SPREAD = 3.5
GRID = {
    "auc_drop": 0.01,
    "calibration_ratio": 0.05,
    "prediction_drift_psi": 0.01,
    "important_drift_share": 0.05,
}


def split_by_patient(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(tuning, report)``: the rows of ``frame`` split by patient, no patient in both."""
    splitter = GroupShuffleSplit(n_splits=1, train_size=TUNING_SHARE, random_state=SPLIT_SEED)
    tuning, report = next(splitter.split(frame, groups=frame[PATIENT_COLUMN]))
    return frame.iloc[tuning].reset_index(drop=True), frame.iloc[report].reset_index(drop=True)


def without_patients(frame: pd.DataFrame, patients: pd.Series) -> pd.DataFrame:
    """The rows of ``frame`` whose patient is not in ``patients``."""
    return frame[~frame[PATIENT_COLUMN].isin(set(patients))]


def statistics(summary: dict) -> dict[str, float]:
    """The value each threshold is compared with, from one monitoring summary.

    ``auc_drop``: the realised drop on matured labels, else the CBPE drop;
    ``calibration_ratio``: batch over baseline calibration ratio (signed: < 1 is under-prediction),
    NaN without usable labels.
    """
    estimated = summary["estimated_performance"]
    drop = estimated["baseline"]["roc_auc"] - estimated["batch"]["roc_auc"]
    ratio = np.nan
    if summary.get("performance"):
        batch, baseline = summary["performance"]["batch"], summary["performance"]["baseline"]
        drop = baseline["roc_auc"] - batch["roc_auc"]
        ratio = batch["calibration_ratio"] / baseline["calibration_ratio"]
    return {
        "auc_drop": float(drop),
        "calibration_ratio": float(ratio),
        "prediction_drift_psi": float(summary["prediction_drift"]["score"]),
        "important_drift_share": float(summary["important_drift_share"]),
    }


def freeze_thresholds(no_drift: list[dict[str, float]]) -> Thresholds:
    """Thresholds above the no-drift statistics of the tuning draws (see the module docstring)."""
    frozen = {}
    for name, step in GRID.items():
        values = np.array([draw[name] for draw in no_drift], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 2:
            raise ValueError(f"need at least two tuning draws with a value for {name}")
        if name == "auc_drop":
            bound = SPREAD * values.std(ddof=1)
        elif name == "calibration_ratio":
            bound = float(np.exp(SPREAD * np.log(values).std(ddof=1)))
        else:
            bound = max(values.max(), values.mean() + SPREAD * values.std(ddof=1))
        frozen[name] = round(float(np.floor(bound / step + 1e-9) + 1) * step, 4)
    return Thresholds(**frozen)
