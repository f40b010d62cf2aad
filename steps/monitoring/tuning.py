"""A patient-disjoint tuning slice: where thresholds may be chosen, apart from reported rows.

``initial_test`` is the only initial data the model never touched (``initial_train`` fitted it,
``initial_validation`` calibrated it and set its threshold); half of its patients may tune, the
other half report, and the replay leaves the tuning patients out of every reported row.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

PATIENT_COLUMN = "patient_nbr"
SPLIT_SEED = 14
TUNING_SHARE = 0.5


def split_by_patient(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(tuning, report)``: the rows of ``frame`` split by patient, no patient in both."""
    splitter = GroupShuffleSplit(n_splits=1, train_size=TUNING_SHARE, random_state=SPLIT_SEED)
    tuning, report = next(splitter.split(frame, groups=frame[PATIENT_COLUMN]))
    return frame.iloc[tuning].reset_index(drop=True), frame.iloc[report].reset_index(drop=True)


def without_patients(frame: pd.DataFrame, patients: pd.Series) -> pd.DataFrame:
    """The rows of ``frame`` whose patient is not in ``patients``."""
    return frame[~frame[PATIENT_COLUMN].isin(set(patients))]
