"""The three DAGs under Airflow's real components (api-server, scheduler with LocalExecutor,
dag-processor, triggerer; Postgres metadata DB; the project's ``dags/``), driven only through
Airflow's REST API v2 as a user or a CI job would, on the session's ``scripts/local_stack.sh``.

One module-scoped scenario, each test checks one part of it:

1. fresh install: unpausing the monitoring DAG starts its daily schedule with default parameters;
   that run refuses at once (no prepared split) and writes nothing;
2. ``health_predict_training_hpo`` with ``run_split`` ingests, splits, trains, registers the first
   champion and triggers ``health_predict_api_deployment`` (``deploy_target=local``: served and
   smoke-tested), which succeeds;
3. ``health_predict_monitoring_retraining`` in ``trigger`` mode over two batches: batch 0 with
   policy ``frozen``, batch 1 with ``every:1`` (retrains). Batch 1 triggers
   the training DAG with its deterministic run id and waits in reschedule mode; while it waits,
   the scheduler is killed with SIGKILL (its whole process group, as when its container dies) and
   started again. The run completes, the loop state advances once per batch, and exactly one
   retraining DAG run exists.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import psycopg2
import pytest
from mlflow import MlflowClient

from steps.core import config, storage
from steps.core.tracking import RUN_KEY_TAG
from tests.integration.conftest import AirflowApi, LocalStack

pytestmark = pytest.mark.slow

TRAINING_DAG = "health_predict_training_hpo"
DEPLOYMENT_DAG = "health_predict_api_deployment"
MONITORING_DAG = "health_predict_monitoring_retraining"
BATCH_SIZE = 2000
TINY_TRAINING = {"families": "logreg", "trials_per_family": 2, "time_budget_s": 120}
# A lenient gate: these tests are about orchestration, not model quality.
LENIENT_GATE = {"auc_floor": 0.5, "margin": 0.2, "max_subgroup_recall_gap": 1.0}
# Retraining policies (steps.orchestration.engine): never, and after every batch.
NEVER = {"policy": "frozen"}
EVERY_BATCH = {"policy": "every:1"}


@dataclass
class StackScenario:
    """What the scenario observed through the REST API and in the stores, phase by phase."""

    fresh_run: dict
    fresh_states: dict
    fresh_log: str
    state_after_fresh: bool
    training: dict
    training_states: dict
    register: dict
    deployment: dict
    deployment_states: dict
    served: dict
    batch_states: list[dict] = field(default_factory=list)
    monitoring: list[dict] = field(default_factory=list)
    monitoring_states: list[dict] = field(default_factory=list)
    waiting_state_at_kill: str | None = None
    training_state_at_kill: str | None = None
    retrain_run_id: str | None = None
    training_runs: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _loop_state(stack: LocalStack) -> dict | None:
    uri = storage.join(stack.data_uri, config.LOOP_STATE_KEY)
    return storage.read_json(uri) if storage.exists(uri) else None


def _monitoring_conf(policy: dict) -> dict:
    return {
        "batch_size": BATCH_SIZE,
        "label_lag_batches": 0,
        "retrain_mode": "trigger",
        "deploy_target": "none",
        **TINY_TRAINING,
        **LENIENT_GATE,
        **policy,
    }


def _wait_for_task_state(
    api: AirflowApi, dag_id: str, run_id: str, task_id: str, wanted: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while (state := api.task_states(dag_id, run_id).get(task_id)) != wanted:
        run_state = api.run(dag_id, run_id)["state"]
        assert run_state in ("queued", "running"), api.why(dag_id, run_id)
        assert time.monotonic() < deadline, f"{task_id} still {state}"
        time.sleep(2)


def _kill_scheduler_while_waiting(
    api: AirflowApi, stack: LocalStack, run_id: str, scenario: StackScenario
) -> int:
    """SIGKILL the scheduler once batch 1 waits for its retraining; start it again."""
    _wait_for_task_state(api, MONITORING_DAG, run_id, "wait_for_training", "up_for_reschedule", 900)
    request = api.xcom(MONITORING_DAG, run_id, "prepare_training_request")
    scenario.retrain_run_id = request["trigger_run_id"]
    scheduler = stack.pid("airflow-scheduler")
    os.killpg(scheduler, signal.SIGKILL)  # the scheduler and its LocalExecutor workers
    scenario.waiting_state_at_kill = api.task_states(MONITORING_DAG, run_id)["wait_for_training"]
    scenario.training_state_at_kill = api.run(TRAINING_DAG, scenario.retrain_run_id)["state"]
    time.sleep(5)
    restarted = stack.script("start", timeout_s=600)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert stack.pid("airflow-scheduler") != scheduler
    return scheduler


@pytest.fixture(scope="module")
def scenario(local_stack: LocalStack, airflow_api: AirflowApi) -> StackScenario:
    api = airflow_api
    api.wait_for_dags([TRAINING_DAG, DEPLOYMENT_DAG, MONITORING_DAG])
    started = time.monotonic()

    # 1. Fresh install: unpausing starts the daily schedule, whose run must refuse cleanly.
    api.set_paused(MONITORING_DAG, False)
    deadline = time.monotonic() + 300
    while not (scheduled := api.runs(MONITORING_DAG)):
        assert time.monotonic() < deadline, "unpausing started no scheduled run"
        time.sleep(3)
    fresh_run_id = scheduled[0]["dag_run_id"]
    api.wait_for_run(MONITORING_DAG, fresh_run_id, timeout_s=600)
    fresh = dict(
        fresh_run=api.run(MONITORING_DAG, fresh_run_id),
        fresh_states=api.task_states(MONITORING_DAG, fresh_run_id),
        fresh_log=api.log(MONITORING_DAG, fresh_run_id, "read_loop_state"),
        state_after_fresh=_loop_state(local_stack) is not None,
    )

    # 2. Training with split, then the deployment it triggers.
    for dag_id in (TRAINING_DAG, DEPLOYMENT_DAG):
        api.set_paused(dag_id, False)
    t0 = time.monotonic()
    conf = {
        "run_split": True,
        "raw_data": os.environ["HEALTH_PREDICT_RAW_DATA"],
        "deploy_target": "local",
        **TINY_TRAINING,
        **LENIENT_GATE,
    }
    api.trigger(TRAINING_DAG, "initial_training", conf)
    state = api.wait_for_run(TRAINING_DAG, "initial_training", timeout_s=1200)
    assert state == "success", api.why(TRAINING_DAG, "initial_training")
    seconds = {"training_dag_with_split": time.monotonic() - t0}
    register = api.xcom(TRAINING_DAG, "initial_training", "register")
    deploy_run_id = f"deploy__v{register['champion_after']}__initial_training"
    t0 = time.monotonic()
    state = api.wait_for_run(DEPLOYMENT_DAG, deploy_run_id, timeout_s=600)
    assert state == "success", api.why(DEPLOYMENT_DAG, deploy_run_id)
    seconds["deployment_dag_after_training"] = time.monotonic() - t0
    scenario = StackScenario(
        **fresh,
        training=api.run(TRAINING_DAG, "initial_training"),
        training_states=api.task_states(TRAINING_DAG, "initial_training"),
        register=register,
        deployment=api.run(DEPLOYMENT_DAG, deploy_run_id),
        deployment_states=api.task_states(DEPLOYMENT_DAG, deploy_run_id),
        served=api.xcom(DEPLOYMENT_DAG, deploy_run_id, "serve_and_smoke_test"),
        seconds=seconds,
    )

    # 3. Two monitoring batches in trigger mode; the scheduler dies while batch 1 waits.
    old_scheduler = None
    try:
        for index, policy in enumerate((NEVER, EVERY_BATCH)):
            run_id = f"monitoring_batch_{index}"
            t0 = time.monotonic()
            api.trigger(MONITORING_DAG, run_id, _monitoring_conf(policy))
            if index == 1:
                old_scheduler = _kill_scheduler_while_waiting(api, local_stack, run_id, scenario)
            state = api.wait_for_run(MONITORING_DAG, run_id, timeout_s=1500)
            assert state == "success", api.why(MONITORING_DAG, run_id)
            scenario.seconds[run_id] = time.monotonic() - t0
            scenario.monitoring.append(api.xcom(MONITORING_DAG, run_id, "record_batch"))
            scenario.monitoring_states.append(api.task_states(MONITORING_DAG, run_id))
            scenario.batch_states.append(_loop_state(local_stack))
    finally:
        if old_scheduler is not None:  # nothing of the killed scheduler outlives the test
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old_scheduler, signal.SIGKILL)
    scenario.training_runs = api.runs(TRAINING_DAG)
    scenario.seconds["scenario"] = time.monotonic() - started
    print(f"\nAirflow stack scenario: {scenario.seconds}")
    return scenario


def test_fresh_install_monitoring_run_refuses_without_a_split(scenario):
    assert scenario.fresh_run["run_type"] == "scheduled"
    assert scenario.fresh_run["state"] == "failed"
    assert scenario.fresh_states["read_loop_state"] == "failed"
    assert scenario.fresh_states["prepare_batch"] == "upstream_failed"
    assert "no prepared split" in scenario.fresh_log, scenario.fresh_log[-2000:]
    assert TRAINING_DAG in scenario.fresh_log
    assert not scenario.state_after_fresh, "a refused run started a loop"


def test_training_dag_with_split_promotes_and_deploys(scenario, local_stack):
    assert scenario.training_states["split_data"] == "success"
    assert scenario.training_states["trigger_deployment"] == "success"
    assert scenario.register["champion_before"] is None
    assert scenario.register["champion_after"]
    assert storage.exists(storage.join(local_stack.data_uri, config.FUTURE_DATA_KEY))
    assert scenario.deployment["conf"] == {
        "target": "local",
        "model_version": scenario.register["champion_after"],
    }
    assert scenario.deployment_states["serve_and_smoke_test"] == "success"
    assert scenario.served["version"] == scenario.register["champion_after"]
    answer = scenario.served["answer"]
    assert answer and {"prediction", "probability_score"} <= set(answer[0])
    assert scenario.deployment_states["deploy_kubernetes"] == "skipped"


def test_training_dag_runs_and_model_land_in_the_stack_stores(scenario, local_stack):
    """The training DAG's runs and registry entries are rows of the stack's Postgres, and the
    promoted model's files went through the MLflow server into its artifact destination."""
    tracking = local_stack.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    train_run_id, version = scenario.register["train_run_id"], scenario.register["champion_after"]
    assert client.get_run(train_run_id).data.tags["health_predict.role"] == "training"
    assert client.get_model_version(config.MODEL_NAME, version).status == "READY"
    dsn = local_stack.env["MLFLOW_BACKEND_STORE_URI"].replace("+psycopg2", "")
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (train_run_id,))
        assert cursor.fetchone()[0] == 1
        cursor.execute(
            "SELECT count(*) FROM model_versions WHERE name = %s AND version = %s",
            (config.MODEL_NAME, int(version)),
        )
        assert cursor.fetchone()[0] == 1
    source = client.get_model_version_download_uri(config.MODEL_NAME, version)
    model_dir = Path(mlflow.artifacts.download_artifacts(source, tracking_uri=tracking))
    assert (model_dir / "MLmodel").is_file()
    stored = list((local_stack.directory / "mlflow-artifacts").rglob("MLmodel"))
    assert stored, "no model landed in the stack's artifact destination"


def test_monitoring_trigger_mode_advances_once_per_batch(scenario):
    quiet, drifted = scenario.monitoring
    assert quiet["batch_index"] == 0 and not quiet["retrained"]
    assert scenario.monitoring_states[0]["skip_retraining"] == "success"
    assert scenario.monitoring_states[0]["trigger_training"] == "skipped"
    assert drifted["batch_index"] == 1 and drifted["retrained"]
    assert drifted["held"] == ("data_quality" in drifted["alerts"])
    assert scenario.monitoring_states[1]["retrain_inline"] == "skipped"
    first, second = scenario.batch_states
    assert first["batches_seen"] == [0] and first["next_batch_index"] == 1
    assert second["batches_seen"] == [0, 1] and second["next_batch_index"] == 2
    assert [r["batch_index"] for r in second["retrainings"]] == [1]
    assert scenario.retrain_run_id == f"retrain__{second['loop_id']}__batch_00001"


def test_waiting_task_holds_no_worker_slot(scenario):
    # Reschedule mode: between pokes the sensor is not running in any worker.
    assert scenario.waiting_state_at_kill == "up_for_reschedule"


def test_scheduler_killed_while_waiting_no_second_training_run(scenario, local_stack):
    assert scenario.training_state_at_kill in ("queued", "running")
    run_ids = sorted(run["dag_run_id"] for run in scenario.training_runs)
    assert run_ids == sorted(["initial_training", scenario.retrain_run_id])
    (retraining,) = [r for r in scenario.training_runs if r["dag_run_id"] != "initial_training"]
    assert retraining["state"] == "success"
    assert retraining["conf"]["run_key"] == scenario.retrain_run_id
    tracking = local_stack.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name(config.TRAINING_EXPERIMENT)
    finished = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{RUN_KEY_TAG}` = '{scenario.retrain_run_id}' and attributes.status = 'FINISHED'",
    )
    assert len(finished) == 1, [r.info.run_id for r in finished]
