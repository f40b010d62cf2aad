"""
### Health Predict: monitoring and retraining loop (one batch per run)

Each run handles the next `batch_size` rows of `processed_data/future_data.csv`:

1. **read_loop_state**: the loop state (next batch index, batches seen, champion versions) is a
   JSON object in the data store (`monitoring_state/loop_state.json`), never XCom;
2. **prepare_batch**: store the batch under `current_batch_for_monitoring/batch_<index>.csv`
   (rewriting the same index writes the same rows); **end_of_data** when nothing is left;
3. **resolve_champion**: pin the `champion` alias to a version for this run;
4. **monitor_batch**: the `monitor` entry point (Evidently drift, prediction drift, performance and
   calibration when labels are in) decides `DRIFT_DETECTED` or `NO_DRIFT`;
5. **choose_action**: no drift, or no handled batch to learn from yet: nothing to do; otherwise
   retrain on the initial training data plus every batch already handled (labels known), and gate
   the challenger on this batch, which neither model has seen;
6. **record_batch**: advance the loop state (only now: a run killed earlier redoes its batch on the
   next run; advancing twice is a no-op, so a batch is never skipped or counted twice) and tag the
   monitoring run with what was done.

`max_active_runs=1` keeps batches in order.

**Retraining modes** (param `retrain_mode`):

- `trigger` (production): trigger `health_predict_training_hpo` with the retraining data and wait
  for it (a sensor in reschedule mode). The trigger run id is deterministic
  (`retrain__<loop>__batch_<index>`): a retried or redone task finds the existing run and waits for
  it instead of starting a second retraining. The training DAG triggers the deployment DAG itself.
- `inline`: run the same training-pipeline functions the training DAG's tasks call (`train` and
  `register` entry points) inside this run, then trigger `health_predict_api_deployment` when the
  champion changed. Finished MLflow runs are found again by their run key, so a redone batch does
  not retrain twice. `dag.test()` executes no triggered DAG run (it has no scheduler), so tests
  and the scheduler-less replay (`mlflow run . -e simulate`) use this mode.

Parameters left empty/null take the MLproject defaults: the retraining budget of the `simulate`
entry point (`families`, `trials_per_family`, `batch_size`), and the thresholds of `monitor` and
`register`. Results: Airflow grid view (one run per batch), MLflow experiments
`HealthPredict_Monitoring` (drift reports, tags `health_predict.loop.*`), `HealthPredict_Training`
and `HealthPredict_Registry`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PokeReturnValue, TriggerRule, dag, get_current_context, task

TRAINING_DAG_ID = "health_predict_training_hpo"
DEPLOYMENT_DAG_ID = "health_predict_api_deployment"
MONITOR_THRESHOLDS = (
    "auc_drop",
    "calibration_ratio",
    "prediction_drift_psi",
    "important_drift_share",
)
GATE_PARAMS = ("margin", "auc_floor", "max_subgroup_recall_gap", "n_bootstrap")

default_args = {
    "owner": "health-predict",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
}


def _optional_number(description: str, minimum: float | None = None) -> Param:
    extra = {"minimum": minimum} if minimum is not None else {}
    return Param(None, type=["null", "number"], description=description, **extra)


def _params() -> dict:
    """The typed run parameters (null / empty = MLproject default)."""
    return {
        "data_uri": Param("", type="string", description="Data-store root; empty = default"),
        "batch_size": Param(
            None, type=["null", "integer"], minimum=1, description="Rows per batch (fixed per loop)"
        ),
        "retrain_mode": Param("trigger", enum=["trigger", "inline"], description="See the docs"),
        "families": Param(
            None, type=["null", "string"], description="Retraining model families, comma-separated"
        ),
        "trials_per_family": Param(None, type=["null", "integer"], minimum=1),
        "time_budget_s": _optional_number("HPO time budget per retraining (s)", 1),
        "deploy_target": Param(
            "k8s", enum=["k8s", "local", "none"], description="Deployment after a promotion"
        ),
        **{name: _optional_number(f"monitor threshold {name}") for name in MONITOR_THRESHOLDS},
        **{name: _optional_number(f"register gate parameter {name}") for name in GATE_PARAMS},
    }


def _loop_and_batch(params: dict, loop_id: str, batch: dict):
    """The stored loop state (checked to be the run's loop) and the batch as loop objects."""
    from steps.monitoring import loop

    state = loop.load_state(params["data_uri"] or None)
    if state is None or state.loop_id != loop_id:
        raise loop.LoopStateError(f"loop {loop_id} was reset during this run")
    return state, loop.Batch(**batch)


def _training_options(params: dict) -> dict:
    from steps.monitoring import loop

    defaults = loop.project_defaults("simulate")
    return {
        "families": params["families"] or defaults["families"],
        "trials_per_family": int(params["trials_per_family"] or defaults["trials_per_family"]),
        "time_budget_s": params["time_budget_s"],
    }


@dag(
    dag_id="health_predict_monitoring_retraining",
    doc_md=__doc__,
    schedule="@daily",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params=_params(),
    tags=["health-predict", "monitoring"],
)
def health_predict_monitoring_retraining():
    @task
    def read_loop_state() -> dict:
        """The loop id and the index of the batch this run handles."""
        from steps.monitoring import loop

        params = get_current_context()["params"]
        batch_size = params["batch_size"] or loop.project_defaults("simulate")["batch_size"]
        state = loop.start_or_resume(int(batch_size), params["data_uri"] or None)
        return {
            "loop_id": state.loop_id,
            "batch_index": state.next_batch_index,
            "batch_size": state.batch_size,
            "batches_seen": len(state.batches_seen),
        }

    @task
    def prepare_batch(state: dict) -> dict:
        """The stored batch (index, URI, rows); empty when future_data is exhausted."""
        from dataclasses import asdict

        from steps.monitoring import loop

        params = get_current_context()["params"]
        batch = loop.prepare_batch(
            state["batch_index"], state["batch_size"], params["data_uri"] or None
        )
        return asdict(batch) if batch else {}

    @task.branch
    def check_for_data(batch: dict) -> str:
        return "resolve_champion" if batch else "end_of_data"

    @task
    def end_of_data(state: dict) -> dict:
        """Log that the replay is complete; the state is left as is."""
        print(f"future_data exhausted: loop {state['loop_id']}, {state['batches_seen']} batches")
        return state

    @task
    def resolve_champion() -> str:
        """The registry version the champion alias points at now."""
        from steps.monitoring import loop

        version = loop.champion_version()
        if version is None:
            raise RuntimeError(f"no champion model yet: run the {TRAINING_DAG_ID} DAG first")
        return version

    @task(retries=1)
    def monitor_batch(state: dict, batch: dict, champion: str) -> dict:
        """Run the monitor entry point; returns its run id, decision and drift share."""
        from steps.monitoring import loop

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        thresholds = {name: params[name] for name in MONITOR_THRESHOLDS}
        summary = loop.run_monitor(
            stored_batch, loop_state, champion, thresholds, params["data_uri"] or None
        )
        return {
            "monitor_run_id": summary["monitor_run_id"],
            "decision": summary["decision"],
            "drift_share": summary.get("drift_share"),
            "report_uri": summary["report_uri"],
        }

    @task.branch
    def choose_action(state: dict, monitoring: dict) -> str:
        from steps.monitoring import loop

        params = get_current_context()["params"]
        loop_state = loop.load_state(params["data_uri"] or None)
        if not loop.should_retrain(monitoring["decision"], loop_state):
            return "skip_retraining"
        if params["retrain_mode"] == "inline":
            return "retrain_inline"
        return "prepare_training_request"

    skip_retraining = EmptyOperator(task_id="skip_retraining")

    @task(execution_timeout=timedelta(hours=3))
    def retrain_inline(state: dict, batch: dict) -> dict:
        """Train + register through the training pipeline's functions; returns the outcome."""
        from dataclasses import asdict

        from steps.monitoring import loop

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        outcome = loop.retrain_for_batch(
            loop_state,
            stored_batch,
            training=_training_options(params),
            gate={name: params[name] for name in GATE_PARAMS},
            data_uri=params["data_uri"] or None,
        )
        if outcome is None:  # the handled batches carry no labels
            return {"train_run_id": None, "champion_changed": False}
        return {**asdict(outcome), "champion_changed": outcome.champion_changed}

    @task.branch
    def deployment_needed(outcome: dict) -> str:
        target = get_current_context()["params"]["deploy_target"]
        if outcome["champion_changed"] and target != "none":
            return "trigger_deployment"
        return "no_deployment"

    trigger_deployment = TriggerDagRunOperator(
        task_id="trigger_deployment",
        trigger_dag_id=DEPLOYMENT_DAG_ID,
        trigger_run_id=(
            "deploy__{{ ti.xcom_pull(task_ids='read_loop_state')['loop_id'] }}__batch_"
            "{{ '%05d' % ti.xcom_pull(task_ids='read_loop_state')['batch_index'] }}"
        ),
        conf={
            "target": "{{ params.deploy_target }}",
            "model_version": "{{ ti.xcom_pull(task_ids='retrain_inline')['champion_after'] }}",
        },
        skip_when_already_exists=True,
    )
    no_deployment = EmptyOperator(task_id="no_deployment")

    @task
    def prepare_training_request(state: dict, batch: dict) -> dict:
        """The training DAG's run id and conf for this batch (retraining data stored)."""
        from steps.monitoring import loop

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        run_id = loop.trigger_run_id(loop_state, stored_batch.index, "retrain")
        conf = {
            "data_uri": params["data_uri"],
            "extra_train_uri": loop.build_retraining_data(
                loop_state.batches_seen, params["data_uri"] or None
            ),
            "eval_data_uri": stored_batch.uri,
            "run_key": run_id,
            "deploy_target": params["deploy_target"],
            **_training_options(params),
            **{name: params[name] for name in GATE_PARAMS},
        }
        return {"trigger_run_id": run_id, "conf": conf}

    trigger_training = TriggerDagRunOperator(
        task_id="trigger_training",
        trigger_dag_id=TRAINING_DAG_ID,
        trigger_run_id="{{ ti.xcom_pull(task_ids='prepare_training_request')['trigger_run_id'] }}",
        conf="{{ ti.xcom_pull(task_ids='prepare_training_request')['conf'] | tojson }}",
        # A retry finds the run already there and leaves the waiting to the sensor below.
        skip_when_already_exists=True,
    )

    @task.sensor(
        poke_interval=30,
        timeout=4 * 3600,
        mode="reschedule",
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
    )
    def wait_for_training(request: dict) -> PokeReturnValue:
        """Done when the triggered training run succeeded; fails when it failed."""
        from airflow.sdk.exceptions import AirflowFailException

        ti = get_current_context()["ti"]
        run_state = ti.get_dagrun_state(TRAINING_DAG_ID, request["trigger_run_id"])
        if run_state == "failed":
            raise AirflowFailException(
                f"{TRAINING_DAG_ID} run {request['trigger_run_id']} failed: "
                "clear it in Airflow, then this batch is redone"
            )
        if run_state != "success":
            return PokeReturnValue(is_done=False)
        from steps.monitoring import loop

        return PokeReturnValue(
            is_done=True,
            xcom_value={
                "train_run_id": loop.finished_run_with_key("train", request["trigger_run_id"]),
                "champion_after": loop.champion_version(),
            },
        )

    # Succeeds when whichever action path the branch chose has finished (skipped at end of data).
    batch_handled = EmptyOperator(
        task_id="batch_handled", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    )

    @task
    def record_batch(state: dict, batch: dict, monitoring: dict) -> dict:
        """Advance the loop state past this batch and tag the monitoring run."""
        from steps.monitoring import loop

        context = get_current_context()
        params = context["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        outcome = context["ti"].xcom_pull(task_ids=["retrain_inline", "wait_for_training"])
        outcome = next((item for item in outcome or [] if item and item["train_run_id"]), None)
        champion = loop.champion_version()
        retraining = None
        if outcome:
            retraining = {
                "train_run_id": outcome["train_run_id"],
                "champion_before": loop_state.champion_version,
                "champion_after": champion,
            }
        new_state = loop.advance(
            loop_state, stored_batch.index, champion, retraining, params["data_uri"] or None
        )
        loop.tag_monitor_run(
            monitoring["monitor_run_id"],
            {
                "loop_id": new_state.loop_id,
                "batch_index": stored_batch.index,
                "action": "retrained" if retraining else "none",
                "champion_after": champion,
            },
        )
        return {
            "batch_index": stored_batch.index,
            "decision": monitoring["decision"],
            "retrained": retraining is not None,
            "champion": champion,
            "next_batch_index": new_state.next_batch_index,
        }

    state = read_loop_state()
    batch = prepare_batch(state)
    data_branch = check_for_data(batch)
    champion = resolve_champion()
    data_branch >> [end_of_data(state), champion]
    monitoring = monitor_batch(state, batch, champion)
    action = choose_action(state, monitoring)

    inline_outcome = retrain_inline(state, batch)
    deploy_branch = deployment_needed(inline_outcome)
    deploy_branch >> [trigger_deployment, no_deployment]

    request = prepare_training_request(state, batch)
    request >> trigger_training
    waited = wait_for_training(request)
    trigger_training >> waited

    action >> [skip_retraining, inline_outcome, request]
    [skip_retraining, trigger_deployment, no_deployment, waited] >> batch_handled
    batch_handled >> record_batch(state, batch, monitoring)


health_predict_monitoring_retraining()
