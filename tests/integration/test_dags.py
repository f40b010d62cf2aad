"""The three DAGs, run with ``dag.test()`` against a real Airflow metadata DB (SQLite).

Stages run for real (MLflow Project entry points, Ray Tune, Evidently, the MLflow scoring server) on
a small slice of the real data, in a data store and MLflow store of this module's own, so that the
champion these tests promote never meets other tests. One module-scoped scenario drives every DAG
run (training, batch 0, batch 1, the crash on batch 2, its redo, end of data) in three Airflow
processes; each test checks one part of it. The deployment DAG a training run triggers is run
(served and smoke-tested) by tests/integration/test_airflow_stack.py; here its trigger is checked.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import mlflow
import pytest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.orchestration import loop
from tests.fixtures_airflow import DagRunResult

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
# Retraining policies (steps.orchestration.engine): never, and after every batch.
NEVER = {"policy": "frozen"}
EVERY_BATCH = {"policy": "every:1"}

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


@dataclass
class LoopScenario:
    """Every DAG run of the scenario, and the loop state after each phase."""

    training: DagRunResult
    quiet: DagRunResult
    drifted: DagRunResult
    state_after_two_batches: dict
    crash_exit_code: int
    crash_runs: list[DagRunResult]
    state_after_crash: dict
    redo: DagRunResult
    ended: DagRunResult
    final_state: dict
    log: str  # the tail of each phase's Airflow log, shown when an assertion fails


def _loop_state(slice_env: dict) -> dict:
    uri = storage.join(slice_env["HEALTH_PREDICT_DATA_URI"], config.LOOP_STATE_KEY)
    return storage.read_json(uri)


def _monitoring(policy: dict) -> tuple[str, dict]:
    conf = {
        "batch_size": BATCH_SIZE,
        # Labels at once (lag 0): batch 1 retrains on batch 0 and is gated on batch 1; the lag
        # itself is tested in tests/code/test_loop.py.
        "label_lag_batches": 0,
        "retrain_mode": "inline",
        "deploy_target": "local",
        **TINY_TRAINING,
        **LENIENT_GATE,
        **policy,
    }
    return MONITORING_DAG, conf


@pytest.fixture(scope="module")
def scenario(airflow_harness, slice_env) -> LoopScenario:
    """Three processes: train + batches 0 and 1; killed on batch 2; batch 2 + the end."""
    runs, code, log = airflow_harness.run_dags(
        [
            (TRAINING_DAG, {**TINY_TRAINING, **LENIENT_GATE, "deploy_target": "local"}),
            _monitoring(NEVER),
            _monitoring(EVERY_BATCH),
        ],
        extra_env=slice_env,
    )
    assert code == 0 and len(runs) == 3, log
    logs = [log]
    state_after_two = _loop_state(slice_env)

    crash_runs, crash_code, log = airflow_harness.run_dags(
        [_monitoring(NEVER)], crash_before_advance=True, extra_env=slice_env
    )
    logs.append(log)
    state_after_crash = _loop_state(slice_env)

    final_runs, code, log = airflow_harness.run_dags(
        [_monitoring(NEVER), _monitoring(NEVER)], extra_env=slice_env
    )
    assert code == 0 and len(final_runs) == 2, log
    logs.append(log)
    return LoopScenario(
        *runs,
        state_after_two_batches=state_after_two,
        crash_exit_code=crash_code,
        crash_runs=crash_runs,
        state_after_crash=state_after_crash,
        redo=final_runs[0],
        ended=final_runs[1],
        final_state=_loop_state(slice_env),
        log="\n----\n".join(logs),
    )


def test_dagbag_imports_cleanly_without_heavy_modules(airflow_harness):
    bag = airflow_harness.dagbag()
    assert bag["import_errors"] == {}
    assert bag["dag_ids"] == sorted([DEPLOYMENT_DAG, MONITORING_DAG, TRAINING_DAG])
    assert bag["heavy_modules_loaded"] == []
    assert all(bag["docs"].values())
    assert bag["tasks_without_timeout"] == []
    # Airflow's own CLI loads the folder too (it does not put dags/ on sys.path).
    assert airflow_harness.cli("dags", "list-import-errors", "--local") == []
    listed = airflow_harness.cli("dags", "list", "--local")
    assert sorted(dag["dag_id"] for dag in listed) == bag["dag_ids"]


def test_training_dag_trains_registers_and_triggers_deployment(scenario):
    training = scenario.training
    assert training.state == "success", (training.task_states, scenario.log)
    assert training.task_states["trigger_deployment"] == "success"
    assert training.task_states["no_deployment"] == "skipped"
    outcome = training.xcoms["register"]
    assert outcome["train_run_id"] == training.xcoms["train"]
    assert outcome["champion_before"] is None and outcome["champion_after"] is not None
    (triggered,) = [run for run in training.triggered if run["dag_id"] == DEPLOYMENT_DAG]
    assert triggered["run_id"] == f"deploy__v{outcome['champion_after']}__{training.run_id}"
    assert triggered["conf"] == {"target": "local", "model_version": outcome["champion_after"]}


def test_monitoring_dag_frozen_policy_then_retrains_and_promotes(scenario, slice_env):
    champion = scenario.training.xcoms["register"]["champion_after"]
    quiet, drifted = scenario.quiet, scenario.drifted

    assert quiet.state == "success", (quiet.task_states, scenario.log)
    alerts = quiet.xcoms["monitor_batch"]["alerts"]
    assert quiet.xcoms["decide_batch"]["policy"] == "frozen"
    assert not quiet.xcoms["decide_batch"]["retrain"]
    assert quiet.task_states["skip_retraining"] == "success"
    assert quiet.task_states["retrain_inline"] == "skipped"
    assert quiet.xcoms["record_batch"] == {
        "batch_index": 0,
        "alerts": alerts,
        "held": "data_quality" in alerts,
        "retrained": False,
        "champion": champion,
        "next_batch_index": 1,
    }

    assert drifted.state == "success", (drifted.task_states, scenario.log)
    assert drifted.xcoms["decide_batch"]["retrain"]
    outcome = drifted.xcoms["retrain_inline"]
    assert outcome["champion_before"] == champion
    assert outcome["champion_changed"], outcome
    assert drifted.task_states["trigger_deployment"] == "success"
    assert drifted.xcoms["record_batch"]["champion"] == outcome["champion_after"]

    state = scenario.state_after_two_batches
    assert state["next_batch_index"] == 2 and state["batches_seen"] == [0, 1]
    assert state["initial_champion_version"] == champion
    assert state["champion_version"] == outcome["champion_after"]
    assert [r["batch_index"] for r in state["retrainings"]] == [1]
    retraining_data = storage.join(
        slice_env["HEALTH_PREDICT_DATA_URI"],
        loop.RETRAINING_DATA_DIR,
        "labelled_batches_00000_to_00000_n1.csv",
    )
    assert len(columns.read_encounters_csv(storage.read_bytes(retraining_data))) == BATCH_SIZE
    # The retrained model was calibrated and thresholded on the calibration half of batch 1 (the
    # newest matured batch), and the gate judged batch 1 without those patients.
    store = slice_env["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    trained = client.get_run(outcome["train_run_id"]).data.params
    calibration_uri = trained[f"{config.RESOLVED_PREFIX}calibration_uri"]
    calibration = columns.read_encounters_csv(storage.read_bytes(calibration_uri))
    newest = loop.future_rows(1, BATCH_SIZE, slice_env["HEALTH_PREDICT_DATA_URI"])
    assert set(calibration["encounter_id"]) == set(
        newest[loop.calibration_rows(newest)]["encounter_id"]
    )
    version = client.get_model_version(config.MODEL_NAME, outcome["champion_after"]).tags
    assert int(version["eval_patients_excluded_overlap"]) >= calibration["patient_nbr"].nunique()
    (deploy,) = [run for run in drifted.triggered if run["dag_id"] == DEPLOYMENT_DAG]
    assert deploy["run_id"] == f"deploy__{state['loop_id']}__batch_00001"
    assert deploy["conf"] == {"target": "local", "model_version": outcome["champion_after"]}


def test_monitoring_dag_killed_before_state_advance_redoes_the_batch_once(scenario, slice_env):
    assert scenario.crash_exit_code == -signal.SIGKILL, scenario.log
    assert scenario.crash_runs == []
    before = scenario.state_after_two_batches
    assert scenario.state_after_crash == before  # batch 2 monitored, but not counted
    summary_uri = storage.join(
        slice_env["HEALTH_PREDICT_DATA_URI"],
        config.DRIFT_REPORTS_DIR,
        before["loop_id"],
        "batch_00002",
        "drift_summary.json",
    )
    assert storage.exists(summary_uri)

    redo = scenario.redo
    assert redo.state == "success", (redo.task_states, scenario.log)
    assert redo.xcoms["read_loop_state"]["batch_index"] == 2
    assert redo.xcoms["record_batch"]["batch_index"] == 2
    state = scenario.final_state
    assert state["batches_seen"] == [0, 1, 2] and state["next_batch_index"] == 3
    assert state["loop_id"] == before["loop_id"]
    # The monitor replaced the killed attempt's MLflow run instead of keeping both.
    assert (
        storage.read_json(summary_uri)["mlflow_run_id"]
        == redo.xcoms["monitor_batch"]["monitor_run_id"]
    )


def test_monitoring_dag_ends_when_future_data_is_exhausted(scenario):
    ended = scenario.ended
    assert ended.state == "success", (ended.task_states, scenario.log)
    assert ended.xcoms["read_loop_state"]["batch_index"] == 3
    assert ended.xcoms["prepare_batch"] == {}
    assert ended.task_states["end_of_data"] == "success"
    for skipped in ("resolve_champion", "monitor_batch", "batch_handled", "record_batch"):
        assert ended.task_states[skipped] == "skipped"
    assert scenario.final_state["next_batch_index"] == 3
