"""What ``train`` reads: split files, extra labelled data for retraining, eligible labels."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from custom_pyfunc import columns
from steps.core import storage
from steps.data import labelled
from steps.evaluation import evaluate, patients
from steps.training import data as training_data
from steps.training import fitting
from tests.fixtures_data import synthetic_encounters


@pytest.fixture
def synthetic_store(tmp_path) -> str:
    root = str(tmp_path / "store")
    for offset, key in enumerate(training_data.SPLIT_FILES.values()):
        payload = columns.to_raw_csv_bytes(synthetic_encounters(120, seed=offset))
        storage.write_bytes(storage.join(root, key), payload)
    return root


def test_reads_splits_with_hashes_and_drops_death_or_hospice(synthetic_store):
    data = training_data.load_training_data(synthetic_store, "30d")
    payload = storage.read_bytes(
        storage.join(synthetic_store, training_data.SPLIT_FILES["initial_train"])
    )
    assert data.hashes["initial_train"] == hashlib.sha256(payload).hexdigest()
    for name in training_data.SPLIT_FILES:
        assert len(data.frames[name]) == len(data.labels[name]) == len(data.raw[name])
        assert columns.is_label_eligible(data.raw[name]).all()
        assert len(data.raw[name]) < 120  # the synthetic data has death/hospice rows


def test_extra_training_data_from_a_prefix_is_appended_to_train_only(synthetic_store, tmp_path):
    batches = tmp_path / "batches"
    for seed in (50, 51):
        storage.write_bytes(
            str(batches / f"batch_{seed}.csv"),
            columns.to_raw_csv_bytes(synthetic_encounters(40, seed=seed)),
        )
    plain = training_data.load_training_data(synthetic_store, "30d")
    extended = training_data.load_training_data(
        synthetic_store, "30d", extra_train_uri=str(batches)
    )
    extra_rows = sum(
        int(columns.is_label_eligible(synthetic_encounters(40, seed=s)).sum()) for s in (50, 51)
    )
    assert len(extended.labels["initial_train"]) == len(plain.labels["initial_train"]) + extra_rows
    assert len(extended.labels["initial_test"]) == len(plain.labels["initial_test"])
    assert "extra_train" in extended.hashes


def test_extra_training_data_without_labels_is_refused(synthetic_store, tmp_path):
    unlabelled = synthetic_encounters(10, seed=3).drop(columns=[columns.LABEL_COLUMN])
    path = str(tmp_path / "unlabelled.csv")
    storage.write_bytes(path, columns.to_raw_csv_bytes(unlabelled))
    with pytest.raises(ValueError, match="readmitted"):
        training_data.load_training_data(synthetic_store, "30d", extra_train_uri=path)


def test_one_reader_for_files_folders_and_lists_with_the_split_hash(synthetic_store, tmp_path):
    test_uri = storage.join(synthetic_store, training_data.SPLIT_FILES["initial_test"])
    single = labelled.read_labelled(test_uri)
    assert single.sha256 == hashlib.sha256(storage.read_bytes(test_uri)).hexdigest()
    folder = tmp_path / "batches"
    storage.write_bytes(str(folder / "b.csv"), columns.to_raw_csv_bytes(synthetic_encounters(7)))
    both = labelled.read_labelled(f"{test_uri}, {folder}")
    assert both.uris == [test_uri, str(folder / "b.csv")]
    assert len(both.frame) == len(single.frame) + 7
    with pytest.raises(labelled.LabelledDataError, match="no labelled CSV file at"):
        labelled.read_labelled(str(tmp_path / "nothing"))


def _with_signal(n_rows: int, seed: int, low: float, high: float):
    """Synthetic encounters whose 30-day label follows ``number_inpatient`` (risk low or high)."""
    frame = synthetic_encounters(n_rows, seed=seed).copy()
    risk = np.where(frame["number_inpatient"] >= 10, high, low)
    frame["readmitted"] = np.where(np.random.default_rng(seed).random(n_rows) < risk, "<30", "NO")
    return frame


def test_calibration_rows_replace_validation_for_calibration_and_threshold(tmp_path):
    """Retraining's ``calibration_uri``: the model is calibrated and thresholded there (the
    alert budget's threshold on those rows, not on validation's), and its patients count as the
    model's training patients, so ``register`` and ``monitor`` leave them out of evaluation."""
    root = str(tmp_path / "store")
    for offset, key in enumerate(training_data.SPLIT_FILES.values()):
        frame = _with_signal(400, seed=offset, low=0.05, high=0.5)
        storage.write_bytes(storage.join(root, key), columns.to_raw_csv_bytes(frame))
    # A later period: more readmissions at every risk level, so calibration moves the scores.
    path = storage.write_bytes(
        str(tmp_path / "calibration.csv"),
        columns.to_raw_csv_bytes(_with_signal(400, seed=60, low=0.3, high=0.9)),
    )
    data = training_data.load_training_data(root, "30d", calibration_uri=path)
    assert training_data.CALIBRATION_SPLIT in data.hashes
    predictor, _ = fitting.fit_family_best("logreg", {"C": 0.1}, data, seed=0, alert_budget=0.1)
    rows = data.raw[training_data.CALIBRATION_SPLIT]
    assert predictor.calibration != "none"
    assert predictor.threshold == evaluate.alert_budget_threshold(predictor.probability(rows), 0.1)
    assert predictor.probability(rows).mean() > 0.25  # calibrated to the later period's rate
    training = patients.training_patients(data.data_tags())
    assert set(patients.patient_ids(rows, "calibration")) <= training
