"""The three DAGs, run with ``dag.test()`` against a real Airflow metadata DB (SQLite).

Stages run for real (MLflow Project entry points, Ray Tune, Evidently, the MLflow scoring server) on
a small slice of the real data, in a data store and MLflow store of this module's own, so that the
champion these tests promote never meets other tests. The tests of the monitoring loop share one
loop and run in file order: batch 0, batch 1, the crash on batch 2 and its redo, end of data.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from custom_pyfunc import columns
from steps import config, storage

TRAINING_DAG = "health_predict_training_hpo"
DEPLOYMENT_DAG = "health_predict_api_deployment"
MONITORING_DAG = "health_predict_monitoring_retraining"
SLICE_ROWS = {
    config.INITIAL_TRAIN_KEY: 4000,
    config.INITIAL_VALIDATION_KEY: 1500,
    config.INITIAL_TEST_KEY: 1500,
    config.FUTURE_DATA_KEY: 6000,
}
BATCH_SIZE = 2000
TINY_TRAINING = {"families": "lightgbm", "trials_per_family": 2, "time_budget_s": 120}
# A lenient gate: the slice is small, and these tests are about orchestration, not model quality.
LENIENT_GATE = {"auc_floor": 0.5, "margin": 0.2, "max_subgroup_recall_gap": 1.0}
# Thresholds that no batch can cross, and thresholds every labelled batch crosses.
NEVER_DRIFT = {"auc_drop": 1.0, "calibration_ratio": 100.0, "prediction_drift_psi": 100.0,
               "important_drift_share": 1.01}  # fmt: skip
ALWAYS_DRIFT = {"auc_drop": -1.0}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slice_env(processed_data_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Env for the Airflow subprocesses: a data store cut from the real split, own MLflow store."""
    root = tmp_path_factory.mktemp("dag_stores")
    data_uri = str(root / "data")
    for key, rows in SLICE_ROWS.items():
        source = storage.join(processed_data_uri, key)
        frame = columns.read_encounters_csv(storage.read_bytes(source))
        storage.write_bytes(storage.join(data_uri, key), columns.to_raw_csv_bytes(frame.head(rows)))
    return {
        "HEALTH_PREDICT_DATA_URI": data_uri,
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "HEALTH_PREDICT_ARTIFACT_URI": (root / "mlartifacts").as_uri(),
    }


@pytest.fixture(scope="module")
def training_runs(airflow_harness, slice_env):
    """The training DAG (tiny budget, local deployment), then the deployment DAG it asked for."""
    runs, code, log = airflow_harness.run_dags(
        [
            (TRAINING_DAG, {**TINY_TRAINING, **LENIENT_GATE, "deploy_target": "local"}),
            (DEPLOYMENT_DAG, {"target": "local"}),
        ],
        extra_env=slice_env,
    )
    assert code == 0 and len(runs) == 2, log
    return runs


def _loop_state(slice_env: dict) -> dict:
    uri = storage.join(slice_env["HEALTH_PREDICT_DATA_URI"], config.LOOP_STATE_KEY)
    return storage.read_json(uri)


def _monitoring_conf(thresholds: dict) -> dict:
    return {
        "batch_size": BATCH_SIZE,
        "retrain_mode": "inline",
        "deploy_target": "local",
        **TINY_TRAINING,
        **LENIENT_GATE,
        **thresholds,
    }


def test_dagbag_imports_cleanly_without_heavy_modules(airflow_harness):
    bag = airflow_harness.dagbag()
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == sorted([DEPLOYMENT_DAG, MONITORING_DAG, TRAINING_DAG])
    assert bag["heavy_modules_loaded"] == []
    assert all(bag["docs"].values())
    assert bag["tasks_without_timeout"] == []


def test_training_dag_trains_registers_and_triggers_deployment(training_runs):
    training, deployment = training_runs
    assert training.state == "success", training.task_states
    assert training.task_states["split_data"] == "success"
    assert training.task_states["trigger_deployment"] == "success"
    assert training.task_states["no_deployment"] == "skipped"
    outcome = training.xcoms["register"]
    assert outcome["train_run_id"] == training.xcoms["train"]
    assert outcome["champion_before"] is None and outcome["champion_after"] is not None
    (triggered,) = [run for run in training.triggered if run["dag_id"] == DEPLOYMENT_DAG]
    assert triggered["run_id"] == f"deploy__v{outcome['champion_after']}__{training.run_id}"
    assert triggered["conf"] == {"target": "local", "model_version": outcome["champion_after"]}

    assert deployment.state == "success", deployment.task_states
    assert deployment.task_states["deploy_kubernetes"] == "skipped"
    served = deployment.xcoms["serve_and_smoke_test"]
    assert served["version"] == outcome["champion_after"]
    assert served["answer"]


def test_monitoring_dag_no_drift_then_retrains_and_promotes(
    airflow_harness, slice_env, training_runs
):
    champion = training_runs[0].xcoms["register"]["champion_after"]
    runs, code, log = airflow_harness.run_dags(
        [
            (MONITORING_DAG, _monitoring_conf(NEVER_DRIFT)),
            (MONITORING_DAG, _monitoring_conf(ALWAYS_DRIFT)),
        ],
        extra_env=slice_env,
    )
    assert code == 0 and len(runs) == 2, log
    quiet, drifted = runs

    assert quiet.state == "success", quiet.task_states
    assert quiet.xcoms["monitor_batch"]["decision"] == "NO_DRIFT"
    assert quiet.task_states["skip_retraining"] == "success"
    assert quiet.task_states["retrain_inline"] == "skipped"
    assert quiet.xcoms["record_batch"] == {
        "batch_index": 0,
        "decision": "NO_DRIFT",
        "retrained": False,
        "champion": champion,
        "next_batch_index": 1,
    }

    assert drifted.state == "success", drifted.task_states
    assert drifted.xcoms["monitor_batch"]["decision"] == "DRIFT_DETECTED"
    outcome = drifted.xcoms["retrain_inline"]
    assert outcome["champion_before"] == champion
    assert outcome["champion_changed"], outcome
    assert drifted.task_states["trigger_deployment"] == "success"
    assert drifted.xcoms["record_batch"]["champion"] == outcome["champion_after"]

    state = _loop_state(slice_env)
    assert state["next_batch_index"] == 2 and state["batches_seen"] == [0, 1]
    assert state["initial_champion_version"] == champion
    assert state["champion_version"] == outcome["champion_after"]
    assert [r["batch_index"] for r in state["retrainings"]] == [1]
    retraining_data = storage.read_bytes(
        storage.join(
            slice_env["HEALTH_PREDICT_DATA_URI"],
            "monitoring_state/retraining_data/labelled_batches_00000_to_00000_n1.csv",
        )
    )
    assert len(columns.read_encounters_csv(retraining_data)) == BATCH_SIZE
    (deploy,) = [run for run in drifted.triggered if run["dag_id"] == DEPLOYMENT_DAG]
    assert deploy["run_id"] == f"deploy__{state['loop_id']}__batch_00001"


def test_monitoring_dag_killed_before_state_advance_redoes_the_batch_once(
    airflow_harness, slice_env
):
    before = _loop_state(slice_env)
    assert before["next_batch_index"] == 2
    runs, code, _ = airflow_harness.run_dags(
        [(MONITORING_DAG, _monitoring_conf(NEVER_DRIFT))],
        crash_before_advance=True,
        extra_env=slice_env,
    )
    assert code == -signal.SIGKILL and runs == []
    after_crash = _loop_state(slice_env)
    assert after_crash == before  # monitored, but not counted
    summary_uri = storage.join(
        slice_env["HEALTH_PREDICT_DATA_URI"],
        config.DRIFT_REPORTS_DIR,
        before["loop_id"],
        "batch_00002",
        "drift_summary.json",
    )
    assert storage.exists(summary_uri)

    runs, code, log = airflow_harness.run_dags(
        [(MONITORING_DAG, _monitoring_conf(NEVER_DRIFT))], extra_env=slice_env
    )
    assert code == 0 and len(runs) == 1, log
    (redo,) = runs
    assert redo.state == "success", redo.task_states
    assert redo.xcoms["read_loop_state"]["batch_index"] == 2
    state = _loop_state(slice_env)
    assert state["batches_seen"] == [0, 1, 2] and state["next_batch_index"] == 3
    assert json.loads(Path(summary_uri).read_text())["decision"] == "NO_DRIFT"


def test_monitoring_dag_ends_when_future_data_is_exhausted(airflow_harness, slice_env):
    before = _loop_state(slice_env)
    assert before["next_batch_index"] == SLICE_ROWS[config.FUTURE_DATA_KEY] // BATCH_SIZE
    runs, code, log = airflow_harness.run_dags(
        [(MONITORING_DAG, _monitoring_conf(NEVER_DRIFT))], extra_env=slice_env
    )
    assert code == 0 and len(runs) == 1, log
    (ended,) = runs
    assert ended.state == "success", ended.task_states
    assert ended.task_states["end_of_data"] == "success"
    for skipped in ("resolve_champion", "monitor_batch", "batch_handled", "record_batch"):
        assert ended.task_states[skipped] == "skipped"
    assert ended.xcoms["prepare_batch"] == {}
    assert _loop_state(slice_env) == before
