"""Evaluation data patient-disjoint from the data that produced a model.

A patient's encounters are correlated (same person, same chronic conditions), so judging a model on
a patient it was trained, calibrated or tuned on overstates its performance. The gate and the
monitor drop such rows and then assert that no training patient is left. Only counts are ever
reported, never an identifier.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steps.core.tracking import DATA_TAG_PREFIX
from steps.data import labelled

PATIENT_COLUMN = "patient_nbr"
# The files a training run fits, calibrates, early-stops or tunes on (initial_test is only scored;
# ``calibration``: the matured rows a retrained model was calibrated and thresholded on).
TRAINING_SETS = ("initial_train", "initial_validation", "extra_train", "calibration")
URI_TAG_SUFFIX = "_uri"


class PatientOverlapError(ValueError):
    """Evaluation rows belong to patients of the training data, or cannot be checked."""


@dataclass(frozen=True)
class Disjointness:
    """Which evaluation rows to keep and how many rows and patients were dropped."""

    keep: np.ndarray
    rows_excluded: int
    patients_excluded: int
    patients_kept: int
    training_patients: int

    def tags(self) -> dict[str, str]:
        """The counts as tag values (for the model version and the run)."""
        return {
            "eval_rows_excluded_patient_overlap": str(self.rows_excluded),
            "eval_patients_excluded_overlap": str(self.patients_excluded),
            "eval_patients": str(self.patients_kept),
            "training_patients": str(self.training_patients),
        }


def patient_ids(frame: pd.DataFrame, what: str) -> np.ndarray:
    """The patient identifiers of ``frame`` as strings; an error naming ``what`` without them."""
    if PATIENT_COLUMN not in frame.columns:
        raise PatientOverlapError(f"{what} has no '{PATIENT_COLUMN}' column")
    ids = frame[PATIENT_COLUMN]
    if ids.isna().any():
        raise PatientOverlapError(f"{what} has {int(ids.isna().sum())} row(s) without a patient")
    return ids.astype("int64").astype(str).to_numpy()


def exclude_training_patients(
    evaluation: pd.DataFrame, training_patients: Iterable[str]
) -> Disjointness:
    """The rows of ``evaluation`` whose patient is not in ``training_patients``."""
    training = set(training_patients)
    ids = patient_ids(evaluation, "the evaluation data")
    # A hash lookup per row: numpy's isin compares an object array with every training patient
    # in turn (rows x patients; 16 s for an 80k-row batch against 13k patients).
    overlap = pd.Series(ids).isin(list(training)).to_numpy(dtype=bool)
    return Disjointness(
        keep=~overlap,
        rows_excluded=int(overlap.sum()),
        patients_excluded=len(set(ids[overlap])),
        patients_kept=len(set(ids[~overlap])),
        training_patients=len(training),
    )


def assert_disjoint(evaluation: pd.DataFrame, training_patients: Iterable[str]) -> None:
    """Raise ``PatientOverlapError`` (with counts only) if any evaluation patient was trained on."""
    ids = set(patient_ids(evaluation, "the evaluation data"))
    shared = ids & set(training_patients)
    if shared:
        raise PatientOverlapError(
            f"{len(shared)} patient(s) of the evaluation data are in the training data"
        )


def disjoint_rows(evaluation: pd.DataFrame, training_patients: Iterable[str]) -> Disjointness:
    """:func:`exclude_training_patients`, with the kept rows asserted disjoint."""
    disjoint = exclude_training_patients(evaluation, training_patients)
    assert_disjoint(evaluation[disjoint.keep], training_patients)
    return disjoint


def training_patients(tags: dict[str, str]) -> set[str] | None:
    """Patients of every file set the model was trained, calibrated or tuned on, read from the
    URIs its runs recorded in ``tags`` (None when they record none); an error if a file changed
    since training."""
    found: set[str] | None = None
    for name in TRAINING_SETS:
        uri = tags.get(f"{DATA_TAG_PREFIX}{name}{URI_TAG_SUFFIX}")
        if not uri:
            continue
        data = labelled.read_labelled(uri)
        if data.sha256 != tags.get(f"{DATA_TAG_PREFIX}{name}_sha256", data.sha256):
            raise PatientOverlapError(
                f"training data {name} changed since training (sha256 differs): "
                "cannot keep the evaluation data patient-disjoint from it"
            )
        found = (found or set()) | set(patient_ids(data.frame, f"training data {name}"))
    return found
