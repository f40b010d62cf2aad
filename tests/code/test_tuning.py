"""The drift-threshold tuning slice and the freezing rule (``steps.monitoring.tuning``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steps.monitoring import tuning
from steps.monitoring.decision import Thresholds
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


def _draw(auc=0.01, ratio=1.05, psi=0.01, share=0.1):
    return {"auc_drop": auc, "calibration_ratio": ratio, "prediction_drift_psi": psi,
            "important_drift_share": share}  # fmt: skip


def test_frozen_thresholds_cover_the_no_drift_spread_on_the_grid():
    draws = [_draw(), _draw(0.03, 1.12, 0.02, 0.2), _draw(-0.01, 0.97, 0.015, 0.0)]
    frozen = tuning.freeze_thresholds(draws)
    spread = tuning.SPREAD
    bounds = {
        # Drop and ratio: centred on their no-drift values (0 and 1), not on the draws' mean.
        "auc_drop": spread * np.std([0.01, 0.03, -0.01], ddof=1),
        "calibration_ratio": np.exp(spread * np.std(np.log([1.05, 1.12, 0.97]), ddof=1)),
        "prediction_drift_psi": 0.015 + spread * np.std([0.01, 0.02, 0.015], ddof=1),
        "important_drift_share": 0.1 + spread * np.std([0.1, 0.2, 0.0], ddof=1),
    }
    for name, step in tuning.GRID.items():
        value = getattr(frozen, name)
        assert bounds[name] < value <= bounds[name] + step + 1e-9, name
        assert math.isclose(value / step, round(value / step), abs_tol=1e-6)
    # Identical draws have no spread: the next grid step above the no-drift value / the draws.
    assert tuning.freeze_thresholds([_draw(), _draw()]) == Thresholds(
        auc_drop=0.01, calibration_ratio=1.05, prediction_drift_psi=0.02, important_drift_share=0.15
    )


def test_freezing_needs_two_draws_with_a_value():
    with pytest.raises(ValueError, match="calibration_ratio"):
        tuning.freeze_thresholds([_draw(ratio=float("nan")), _draw()])


def test_statistics_of_an_unlabelled_summary_use_cbpe_only():
    summary = {
        "performance": None,
        "estimated_performance": {"batch": {"roc_auc": 0.64}, "baseline": {"roc_auc": 0.67}},
        "prediction_drift": {"score": 0.05},
        "important_drift_share": 0.3,
    }
    stats = tuning.statistics(summary)
    assert stats["auc_drop"] == pytest.approx(0.03)  # the CBPE drop
    assert math.isnan(stats["calibration_ratio"])
    assert stats["prediction_drift_psi"] == 0.05 and stats["important_drift_share"] == 0.3
