"""The patient-disjoint tuning slice (``steps.monitoring.tuning``)."""

from __future__ import annotations

from steps.monitoring import tuning
from tests.fixtures_data import synthetic_encounters


def test_tuning_and_report_slices_share_no_patient_and_cover_every_row():
    frame = synthetic_encounters(600, seed=5, n_patients=150)  # patients with several rows
    tuning_rows, report_rows = tuning.split_by_patient(frame)
    tuned, reported = set(tuning_rows["patient_nbr"]), set(report_rows["patient_nbr"])
    assert tuned and reported and not tuned & reported
    assert len(tuning_rows) + len(report_rows) == len(frame)
    again, _ = tuning.split_by_patient(frame)
    assert again.equals(tuning_rows)  # the same slice every time


def test_reported_rows_leave_out_the_tuning_patients():
    frame = synthetic_encounters(300, seed=6, n_patients=100)
    tuning_rows, _ = tuning.split_by_patient(frame)
    kept = tuning.without_patients(frame, tuning_rows["patient_nbr"])
    assert not set(kept["patient_nbr"]) & set(tuning_rows["patient_nbr"])
    assert len(kept) == len(frame) - len(tuning_rows)
