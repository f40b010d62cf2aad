"""The monitor on real data with a real trained pyfunc: decisions, reports, MLflow, idempotency."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from custom_pyfunc.model import log_readmission_model
from steps import monitor
from steps.core import config, storage, tracking
from steps.data import labelled
from steps.monitoring import assess
from steps.monitoring.decision import DRIFT_DETECTED, NO_DRIFT

# Needs the session's trained model (real Ray Tune training): not part of make test-fast.
pytestmark = pytest.mark.slow

BATCH_ROWS = 2500


def _read(data_uri: str, key: str) -> pd.DataFrame:
    return columns.read_encounters_csv(storage.read_bytes(storage.join(data_uri, key)))


@pytest.fixture(scope="module")
def held_out(processed_data_uri: str) -> pd.DataFrame:
    """initial_test: encounters of patients the model was never trained, calibrated or tuned on
    (initial_validation would be dropped as training patients)."""
    return _read(processed_data_uri, config.INITIAL_TEST_KEY)


def _store(frame: pd.DataFrame, data_uri: str, name: str) -> str:
    uri = storage.join(data_uri, config.CURRENT_BATCH_DIR, f"{name}.csv")
    return storage.write_bytes(uri, columns.to_raw_csv_bytes(frame))


@pytest.fixture(scope="module")
def no_drift_run(held_out, processed_data_uri, trained_model):
    """A labelled batch drawn from held-out initial data, with 3 rows breaking the contract."""
    batch = held_out.sample(BATCH_ROWS, replace=True, random_state=11).reset_index(drop=True)
    batch.loc[:2, "time_in_hospital"] = 40
    uri = _store(batch, processed_data_uri, "no_drift")
    return batch, assess.monitor(uri, model_uri=trained_model.model_uri)


def test_no_drift_batch_is_not_flagged(no_drift_run):
    _, summary = no_drift_run
    assert summary["decision"] == NO_DRIFT, summary["reasons"]
    assert summary["decision_basis"] == "matured labels + drift"
    estimated = summary["estimated_performance"]
    assert abs(estimated["batch"]["roc_auc"] - estimated["baseline"]["roc_auc"]) < 0.05
    assert summary["drift_share"] < 0.2
    assert summary["performance"]["batch"]["roc_auc"] > 0.55
    # The operating point on held-out rows like validation: about the 10% alert budget, lift > 1.
    baseline = summary["performance"]["baseline"]
    assert 0.05 < baseline["flag_rate"] < 0.15 and baseline["lift"] > 1
    quality = summary["data_quality"]
    assert quality["rows_breaking_contract"] == 3
    assert quality["out_of_range"] == {"time_in_hospital": 3}


def test_performance_leaves_out_the_patients_the_model_was_trained_on(
    held_out, processed_data_uri, trained_model
):
    trained_on = _read(processed_data_uri, config.INITIAL_TRAIN_KEY)
    batch = pd.concat(
        [held_out.sample(1500, random_state=21), trained_on.sample(700, random_state=22)],
        ignore_index=True,
    )
    summary = assess.monitor(
        _store(batch, processed_data_uri, "with_training_patients"),
        model_uri=trained_model.model_uri,
    )
    training_patients = set(trained_on["patient_nbr"]) | set(
        _read(processed_data_uri, config.INITIAL_VALIDATION_KEY)["patient_nbr"]
    )
    labelled = batch[batch["readmitted"].notna() & columns.is_label_eligible(batch)]
    overlapping = labelled["patient_nbr"].isin(training_patients)
    overlap = summary["patient_overlap"]["batch"]
    assert overlap["check"] == "passed"
    assert overlap["rows_excluded"] == int(overlapping.sum()) >= 600
    assert summary["data_quality"]["labelled_rows"] == int((~overlapping).sum())
    assert summary["patient_overlap"]["baseline"] == {
        "check": "passed",
        "rows_excluded": 0,
        "patients_excluded": 0,
    }
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.metrics["batch_rows_excluded_patient_overlap"] == overlap["rows_excluded"]


def test_reports_and_run_are_published(no_drift_run):
    batch, summary = no_drift_run
    names = {uri.rsplit("/", 1)[-1] for uri in storage.list_keys(summary["report_uri"])}
    assert names == {"drift_report.html", "performance_report.html", "drift_summary.json"}
    stored = storage.read_json(storage.join(summary["report_uri"], "drift_summary.json"))
    assert stored["decision"] == summary["decision"]
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["resolved.model_uri"] == summary["model_uri"]
    assert run.data.metrics["drift_share"] == pytest.approx(summary["drift_share"])
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "drift_report")}
    assert "drift_report/drift_report.html" in artifacts
    html = storage.read_bytes(storage.join(summary["report_uri"], "drift_report.html")).decode()
    for identifier in batch["encounter_id"].astype(str).head(50):
        assert f'"{identifier}"' not in html and f" {identifier}," not in html


def test_calibration_shift_is_detected(held_out, processed_data_uri, trained_model):
    batch = held_out.sample(BATCH_ROWS, replace=True, random_state=12).reset_index(drop=True)
    positives = np.flatnonzero((batch["readmitted"] == "<30").to_numpy())
    batch.loc[positives[: int(0.6 * len(positives))], "readmitted"] = ">30"
    summary = assess.monitor(
        _store(batch, processed_data_uri, "calibration_shift"), model_uri=trained_model.model_uri
    )
    assert summary["decision"] == DRIFT_DETECTED
    assert any("over-predicts" in reason for reason in summary["reasons"])


def test_performance_is_judged_on_the_matured_batch_not_the_new_one(
    held_out, processed_data_uri, trained_model
):
    """New inputs without labels; the older, matured batch carries the calibration shift."""
    matured = held_out.sample(BATCH_ROWS, replace=True, random_state=14).reset_index(drop=True)
    positives = np.flatnonzero((matured["readmitted"] == "<30").to_numpy())
    matured.loc[positives[: int(0.6 * len(positives))], "readmitted"] = ">30"
    new = held_out.sample(BATCH_ROWS, replace=True, random_state=15).reset_index(drop=True)
    summary = assess.monitor(
        _store(new.drop(columns=[columns.LABEL_COLUMN]), processed_data_uri, "new_inputs"),
        model_uri=trained_model.model_uri,
        labelled_uri=_store(matured, processed_data_uri, "matured_labels"),
    )
    assert summary["decision"] == DRIFT_DETECTED
    assert summary["decision_basis"] == "matured labels + drift"
    assert summary["data_quality"]["labelled_rows"] > 0
    assert any("over-predicts" in reason for reason in summary["reasons"])


def test_unlabelled_shift_in_relied_on_inputs_is_detected(
    held_out, processed_data_uri, trained_model, capsys
):
    frequent_inpatients = held_out[held_out["number_inpatient"] >= 2]
    batch = frequent_inpatients.sample(BATCH_ROWS, replace=True, random_state=13)
    uri = _store(batch.drop(columns=[columns.LABEL_COLUMN]), processed_data_uri, "shifted")
    code = monitor.main(["--batch-uri", uri, "--model-uri", trained_model.model_uri])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == DRIFT_DETECTED
    summary_uri = storage.join(_report_folder(out), "drift_summary.json")
    summary = json.loads(storage.read_bytes(summary_uri))
    assert summary["decision_basis"] == "drift" and summary["performance"] is None
    assert "number_inpatient" in summary["drifted_columns"]


def _report_folder(cli_lines: list[str]) -> str:
    return next(line for line in cli_lines if "reports in " in line).split("reports in ")[-1]


def test_rerun_on_same_batch_keeps_every_run_and_replaces_reports(no_drift_run, trained_model):
    """Monitoring runs are the audit record: a rerun adds a run and deletes none; the report
    folder holds the newest run's reports only."""
    _, first = no_drift_run
    second = assess.monitor(first["batch_uri"], model_uri=trained_model.model_uri)
    assert second["report_uri"] == first["report_uri"]
    assert second["mlflow_run_id"] != first["mlflow_run_id"]
    experiment = mlflow.get_experiment_by_name(config.MONITORING_EXPERIMENT)
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{assess.BATCH_TAG}` = '{first['batch_sha256']}'",
        output_format="list",
    )
    assert {run.info.run_id for run in runs} >= {first["mlflow_run_id"], second["mlflow_run_id"]}
    assert all(run.info.lifecycle_stage == "active" for run in runs)
    stored = storage.read_json(storage.join(first["report_uri"], "drift_summary.json"))
    assert stored["mlflow_run_id"] == second["mlflow_run_id"]
    assert len(storage.list_keys(first["report_uri"])) == 3


def test_default_reference_is_what_the_champion_was_fitted_on(
    held_out, processed_data_uri, trained_model
):
    """A retrained model is compared with the rows it learnt from (initial_train plus the
    retraining rows its run records), not with the initial data alone."""
    frequent_inpatients = held_out[held_out["number_inpatient"] >= 2]
    batch_uri = _store(
        frequent_inpatients.sample(BATCH_ROWS, replace=True, random_state=31).drop(
            columns=[columns.LABEL_COLUMN]
        ),
        processed_data_uri,
        "frequent_inpatients",
    )
    initial = assess.monitor(batch_uri, model_uri=trained_model.model_uri)
    lineage = tracking.lineage_tags(trained_model.best_run_id)
    initial_train_uri = lineage[f"{tracking.DATA_TAG_PREFIX}initial_train_uri"]
    assert initial["reference_uri"] == initial_train_uri

    # The same predictor, logged by a run that says it was refitted with 40,000 rows of frequent
    # inpatients (as a retraining on drifted batches would record).
    extra_uri = _store(
        frequent_inpatients.sample(40_000, replace=True, random_state=32),
        processed_data_uri,
        "extra_train_frequent_inpatients",
    )
    predictor = mlflow.pyfunc.load_model(trained_model.model_uri).unwrap_python_model()._predictor
    tags = {
        f"{tracking.DATA_TAG_PREFIX}{name}_{kind}": value
        for name, uri in (("initial_train", initial_train_uri), ("extra_train", extra_uri))
        for kind, value in (("uri", uri), ("sha256", labelled.read_labelled(uri).sha256))
    }
    with mlflow.start_run(run_name="retrained-on-frequent-inpatients", tags=tags):
        retrained_uri = log_readmission_model(predictor).model_uri
    retrained = assess.monitor(batch_uri, model_uri=retrained_uri)
    assert retrained["reference_uri"] == f"{initial_train_uri},{extra_uri}"
    shift = {name: s["column_drift"]["number_inpatient"]["score"] for name, s in
             (("initial", initial), ("retrained", retrained))}  # fmt: skip
    assert shift["retrained"] < shift["initial"] / 2, shift
    assert retrained["prediction_drift"]["score"] < initial["prediction_drift"]["score"]
