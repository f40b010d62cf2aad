"""The monitor end to end on real data with a real trained pyfunc: the CLI's alert line, the
summary's sections, reports, MLflow, patients left out, idempotency (one batch, two runs)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps import monitor
from steps.core import config, storage, tracking
from steps.monitoring import assess

# Needs the session's trained model (real Ray Tune training): not part of make test-fast.
pytestmark = pytest.mark.slow

BATCH_ROWS = 2500


def _read(data_uri: str, key: str) -> pd.DataFrame:
    return columns.read_encounters_csv(storage.read_bytes(storage.join(data_uri, key)))


def _store(frame: pd.DataFrame, data_uri: str, name: str) -> str:
    uri = storage.join(data_uri, config.CURRENT_BATCH_DIR, f"{name}.csv")
    return storage.write_bytes(uri, columns.to_raw_csv_bytes(frame))


def test_monitor_run_alerts_reports_and_reruns(processed_data_uri, trained_model, capsys):
    """New inputs drawn from held-out data (3 rows breaking the contract); the matured batch has
    half of its positives relabelled (calibration shift) and 700 rows of training patients."""
    held_out = _read(processed_data_uri, config.INITIAL_TEST_KEY)  # never trained on
    batch = held_out.sample(BATCH_ROWS, replace=True, random_state=11).reset_index(drop=True)
    batch.loc[:2, "time_in_hospital"] = 40
    batch_uri = _store(batch.drop(columns=[columns.LABEL_COLUMN]), processed_data_uri, "new")
    trained_on = _read(processed_data_uri, config.INITIAL_TRAIN_KEY)
    unseen = held_out.sample(2 * BATCH_ROWS, replace=True, random_state=14)
    positives = np.flatnonzero((unseen["readmitted"] == "<30").to_numpy())
    unseen.iloc[positives[::2], unseen.columns.get_loc("readmitted")] = ">30"  # rate halved
    matured = pd.concat([unseen, trained_on.sample(700, random_state=22)], ignore_index=True)
    matured_uri = _store(matured, processed_data_uri, "matured")

    code = monitor.main(
        ["--batch-uri", batch_uri, "--model-uri", trained_model.model_uri,
         "--labelled-uri", matured_uri]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == "ALERT performance", out
    report_uri = next(line for line in out if line.startswith("reports in ")).split()[-1]
    summary = storage.read_json(storage.join(report_uri, "drift_summary.json"))
    assert summary["alerts"] == ["performance"]
    reasons = summary["performance"]["reasons"]
    assert any(r.startswith("calibration: observed / expected") for r in reasons), reasons
    assert summary["performance"]["calibration"]["observed_over_expected"] < 0.7
    assert summary["performance"]["roc_auc"]["batch"] > 0.55
    assert summary["estimated_performance"]["rows"] > 0.9 * BATCH_ROWS
    quality = summary["data_quality"]
    assert not quality["alert"] and quality["rows_breaking_contract"] == 3
    # Without recent batches the drift reference is what the model was fitted on.
    lineage = tracking.lineage_tags(trained_model.best_run_id)
    assert summary["recent_uri"] == lineage[f"{tracking.DATA_TAG_PREFIX}initial_train_uri"]
    assert summary["drift"]["compared_columns"] > 40

    training_patients = set(trained_on["patient_nbr"]) | set(
        _read(processed_data_uri, config.INITIAL_VALIDATION_KEY)["patient_nbr"]
    )
    labelled = matured[matured["readmitted"].notna() & columns.is_label_eligible(matured)]
    overlapping = labelled["patient_nbr"].isin(training_patients)
    overlap = summary["patient_overlap"]["batch"]
    assert overlap["check"] == "passed"
    assert overlap["rows_excluded"] == int(overlapping.sum()) >= 600
    assert summary["labelled_rows"] == int((~overlapping).sum())

    names = {uri.rsplit("/", 1)[-1] for uri in storage.list_keys(report_uri)}
    assert names == {"drift_report.html", "performance_report.html", "drift_summary.json"}
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.tags[assess.ALERTS_TAG] == "ALERT performance"
    assert run.data.metrics["alert.performance"] == 1.0
    assert run.data.metrics["batch_rows_excluded_patient_overlap"] == overlap["rows_excluded"]
    html = storage.read_bytes(storage.join(report_uri, "drift_report.html")).decode()
    for identifier in batch["encounter_id"].astype(str).head(50):
        assert f'"{identifier}"' not in html and f" {identifier}," not in html

    # Monitoring runs are the audit record: a rerun adds a run and deletes none; the report
    # folder holds the newest run's reports only.
    second = assess.monitor(batch_uri, model_uri=trained_model.model_uri, labelled_uri=matured_uri)
    assert second["report_uri"] == report_uri and second["alerts"] == summary["alerts"]
    experiment = mlflow.get_experiment_by_name(config.MONITORING_EXPERIMENT)
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{assess.BATCH_TAG}` = '{summary['batch_sha256']}'",
        output_format="list",
    )
    assert {r.info.run_id for r in runs} >= {summary["mlflow_run_id"], second["mlflow_run_id"]}
    stored = storage.read_json(storage.join(report_uri, "drift_summary.json"))
    assert stored["mlflow_run_id"] == second["mlflow_run_id"]
    assert len(storage.list_keys(report_uri)) == 3
