"""
### Health Predict: monitoring and retraining loop (one batch per run)

Each run handles the next `batch_size` rows of `processed_data/future_data.csv`:

1. **read_loop_state**: the loop state (next batch index, batches seen, champion versions) is a
   JSON object in the data store (`monitoring_state/loop_state.json`), never XCom. Without a
   prepared split (`processed_data/future_data.csv`) or a champion model it fails at once, writes
   nothing and says what to run first: unpausing this DAG on a fresh install starts its `@daily`
   schedule with default parameters, and that first run stops here;
2. **prepare_batch**: store the batch's inputs (no labels: they have not matured) under
   `current_batch_for_monitoring/batch_<index>.csv` (rewriting the same index writes the same rows);
   **end_of_data** when nothing is left;
3. **resolve_champion**: pin the `champion` alias to a version for this run;
4. **monitor_batch**: the `monitor` entry point on the new inputs and on the newest batch whose
   labels have matured; its alerts (`data_quality`, `performance`, `estimated_performance`);
5. **decide_batch** / **choose_action**: the retraining policy (param `policy`: `frozen`,
   `every:K`, `cost:C`; `steps.orchestration.engine`) decides. A `data_quality` alert holds the
   batch out of retraining and gating (its labels too) until it is released on purpose (param
   `release_batches`). Retraining needs two usable matured batches: train on the initial training
   data plus all but the newest, gate the challenger on the newest (which neither model has
   seen), promote when the gate's paired gain clears the policy's deployment cost;
6. **record_batch**: advance the loop state (only now: a run killed earlier redoes its batch on the
   next run; advancing twice is a no-op, so a batch is never skipped or counted twice) and tag the
   monitoring run with the alerts and what was done.

Every step is a function of `steps.orchestration.engine`, the sequence `simulate` and
`benchmarks/replay.py` run too.

`max_active_runs=1` keeps batches in order.

**Label lag** (param `label_lag_batches`, fixed per loop): 30-day labels of batch `i` mature when
batch `i + lag` is handled. Empty = 30 days at the batch size (about 27.9 encounters per day in
1999-2008: one batch of 5,000 rows spans about 179 days, so the default lag is 1). Nothing is
monitored for performance, trained or gated on an unmatured label.

**Retraining modes** (param `retrain_mode`):

- `trigger` (production): trigger `health_predict_training_hpo` with the retraining data and wait
  for it (a sensor in reschedule mode). The trigger run id is deterministic
  (`retrain__<loop>__batch_<index>`): a retried or redone task finds the existing run and waits for
  it instead of starting a second retraining. The training DAG triggers the deployment DAG itself.
- `inline`: run the same training-pipeline functions the training DAG's tasks call (`train` and
  `register` entry points) inside this run, then trigger `health_predict_api_deployment` when the
  champion changed. The task takes the `health_predict_register` pool's one slot (it promotes), so
  a training DAG's `register` waits for it. Finished MLflow runs are found again by their run key,
  so a redone batch does not retrain twice. `dag.test()` executes no triggered DAG run (it has no
  scheduler), so tests and the scheduler-less replay (`mlflow run . -e simulate`) use this mode.

Parameters left empty/null take the MLproject defaults: `train`'s model families, the `simulate`
entry point's `trials_per_family`, `batch_size` and `policy`, and the thresholds of `monitor` and
`register`. Results: Airflow grid view (one run per batch), MLflow experiments
`HealthPredict_Monitoring` (drift reports, tags `health_predict.loop.*`), `HealthPredict_Training`
and `HealthPredict_Registry`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, PokeReturnValue, TriggerRule, dag, get_current_context, task

from steps.orchestration.dag_common import (
    DAG_SETTINGS,
    GATE_PARAMS,
    MONITORING_DAG_ID,
    REGISTER_POOL,
    TRAINING_DAG_ID,
    deploy_branch,
    deploy_target_param,
    gate_params,
)

# The monitor's alert thresholds (steps.monitoring.decision.Thresholds; tests hold the two equal).
MONITOR_THRESHOLDS = (
    "quality_margin",
    "unit_factor",
    "auc_tolerance",
    "calibration_tolerance",
    "flag_tolerance",
    "z",
)


POLICY_GATE_PARAM = "deployment_cost"


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
        "label_lag_batches": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Batches until labels mature (fixed per loop); null = 30 days",
        ),
        "retrain_mode": Param("trigger", enum=["trigger", "inline"], description="See the docs"),
        "families": Param(
            None, type=["null", "string"], description="Retraining model families, comma-separated"
        ),
        "trials_per_family": Param(None, type=["null", "integer"], minimum=1),
        "time_budget_s": _optional_number("HPO time budget per retraining (s)", 1),
        "policy": Param(
            None, type=["null", "string"], description="frozen, every:K or cost:C; null = default"
        ),
        "release_batches": Param(
            [],
            type="array",
            items={"type": "integer"},
            description="Held batches to release on purpose before this run's batch",
        ),
        "deploy_target": deploy_target_param(),
        **{name: _optional_number(f"monitor threshold {name}") for name in MONITOR_THRESHOLDS},
        # The deployment cost comes from the policy, not from a parameter.
        **{k: v for k, v in gate_params().items() if k != POLICY_GATE_PARAM},
    }


def _loop_and_batch(params: dict, loop_id: str, batch: dict):
    """The stored loop state (checked to be the run's loop) and the batch as loop objects."""
    # lazy: the loop imports MLflow (~7 s), which the DAG file must not load at parse time
    from steps.orchestration import loop

    state = loop.load_state(params["data_uri"] or None)
    if state is None or state.loop_id != loop_id:
        raise loop.LoopStateError(f"loop {loop_id} was reset during this run")
    return state, loop.Batch(**batch)


def _services(params: dict):
    """The entry-point services of the engine for this run's parameters (null: MLproject
    defaults; the families are ``train``'s own)."""
    # lazy: config imports MLflow (~7 s), which the DAG file must not load at parse time
    from steps.core import config
    from steps.orchestration import engine

    defaults = config.project_defaults("simulate")
    return engine.EntryPointServices(
        data_uri=params["data_uri"] or None,
        thresholds={name: params[name] for name in MONITOR_THRESHOLDS},
        training={
            "families": params["families"],
            "trials_per_family": int(params["trials_per_family"] or defaults["trials_per_family"]),
            "time_budget_s": params["time_budget_s"],
        },
        gate={name: params[name] for name in GATE_PARAMS if name != POLICY_GATE_PARAM},
    )


def _policy(params: dict):
    """The retraining policy this run asks for (null: ``simulate``'s default in MLproject)."""
    # lazy: config imports MLflow (~7 s), which the DAG file must not load at parse time
    from steps.core import config
    from steps.orchestration import engine

    return engine.parse_policy(params["policy"] or config.project_defaults("simulate")["policy"])


@dag(
    dag_id=MONITORING_DAG_ID,
    doc_md=__doc__,
    schedule="@daily",
    params=_params(),
    **DAG_SETTINGS,
    tags=["health-predict", "monitoring"],
)
def health_predict_monitoring_retraining():
    @task
    def read_loop_state() -> dict:
        """The loop id and the index of the batch this run handles.

        Refuses (fails at once, no retry, nothing written) on an install with no prepared split
        or no champion yet, e.g. the first scheduled run after unpausing this DAG on a fresh
        install.
        """
        from airflow.sdk.exceptions import AirflowFailException

        from steps.core import config, storage
        from steps.orchestration import engine, loop

        params = get_current_context()["params"]
        future_data = storage.join(params["data_uri"] or config.data_uri(), config.FUTURE_DATA_KEY)
        if not storage.exists(future_data):
            raise AirflowFailException(
                f"no prepared split: {future_data} does not exist. Trigger {TRAINING_DAG_ID} "
                "with run_split=true first (or run the ingest and split entry points); until "
                "then this DAG monitors nothing"
            )
        if loop.champion_version() is None:
            raise AirflowFailException(
                f"no champion model yet: trigger {TRAINING_DAG_ID} first; until then this DAG "
                "monitors nothing"
            )
        batch_size = params["batch_size"] or config.project_defaults("simulate")["batch_size"]
        state = engine.begin(
            int(batch_size),
            params["data_uri"] or None,
            params["label_lag_batches"],
            release=params["release_batches"],
            reason=f"released by DAG run {get_current_context()['run_id']}",
        )
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

        from steps.orchestration import loop

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
        from steps.orchestration import loop

        version = loop.champion_version()
        if version is None:
            raise RuntimeError(f"no champion model yet: run the {TRAINING_DAG_ID} DAG first")
        return version

    @task(retries=1)
    def monitor_batch(state: dict, batch: dict, champion: str) -> dict:
        """Run the monitor entry point; returns its run id and the alert kinds it raised."""
        from steps.orchestration import engine

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        summary = _services(params).monitor(loop_state, stored_batch, champion)
        return {
            "monitor_run_id": summary["monitor_run_id"],
            "alerts": engine.alert_kinds(summary),
            "report_uri": summary["report_uri"],
        }

    @task
    def decide_batch(state: dict, batch: dict, monitoring: dict) -> dict:
        """The policy's decision for the batch (``engine.decide``)."""
        from dataclasses import asdict

        from steps.orchestration import engine

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        return asdict(
            engine.decide(_policy(params), loop_state, stored_batch.index, monitoring["alerts"])
        )

    @task.branch
    def choose_action(decision: dict) -> str:
        params = get_current_context()["params"]
        if not decision["retrain"]:
            return "skip_retraining"
        if params["retrain_mode"] == "inline":
            return "retrain_inline"
        return "prepare_training_request"

    skip_retraining = EmptyOperator(task_id="skip_retraining")

    @task(execution_timeout=timedelta(hours=3), pool=REGISTER_POOL)
    def retrain_inline(state: dict, batch: dict, decision: dict) -> dict:
        """Train + register (with the policy's deployment cost) through the training pipeline's
        functions; returns the outcome."""
        from dataclasses import asdict

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        outcome = _services(params).retrain(loop_state, stored_batch, decision["deployment_cost"])
        if outcome is None:  # the handled batches carry no labels
            return {"train_run_id": None, "champion_changed": False}
        return {**asdict(outcome), "champion_changed": outcome.champion_changed}

    @task
    def prepare_training_request(state: dict, batch: dict, decision: dict) -> dict:
        """The training DAG's run id and conf for this batch (retraining data stored)."""
        from steps.orchestration import loop

        params = get_current_context()["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        run_id = loop.trigger_run_id(loop_state, stored_batch.index, "retrain")
        inputs = loop.retraining_inputs(loop_state, stored_batch.index, params["data_uri"] or None)
        services = _services(params)
        conf = {
            "data_uri": params["data_uri"],
            "extra_train_uri": inputs.extra_train_uri,
            "calibration_uri": inputs.calibration_uri,
            "eval_data_uri": inputs.eval_data_uri,
            "run_key": run_id,
            "deploy_target": params["deploy_target"],
            **services.training,
            **services.gate,
            POLICY_GATE_PARAM: decision["deployment_cost"],
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
        from steps.core import tracking
        from steps.orchestration import loop

        return PokeReturnValue(
            is_done=True,
            xcom_value={
                "train_run_id": tracking.finished_run_with_key("train", request["trigger_run_id"]),
                "champion_after": loop.champion_version(),
            },
        )

    # Succeeds when whichever action path the branch chose has finished (skipped at end of data).
    batch_handled = EmptyOperator(
        task_id="batch_handled", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    )

    @task
    def record_batch(state: dict, batch: dict, monitoring: dict, decision: dict) -> dict:
        """Tag the monitoring run, then advance the loop state past this batch (``engine.record``;
        held on a data_quality alert)."""
        from steps.orchestration import engine, loop

        context = get_current_context()
        params = context["params"]
        loop_state, stored_batch = _loop_and_batch(params, state["loop_id"], batch)
        outcome = context["ti"].xcom_pull(task_ids=["retrain_inline", "wait_for_training"])
        outcome = next((item for item in outcome or [] if item and item["train_run_id"]), None)
        champion = loop.champion_version()
        new_state = engine.record(
            loop_state,
            stored_batch.index,
            engine.Decision(**decision),
            loop_state.champion_version,
            champion,
            outcome["train_run_id"] if outcome else None,
            monitoring["monitor_run_id"],
            params["data_uri"] or None,
        )
        return {
            "batch_index": stored_batch.index,
            "alerts": decision["alerts"],
            "held": decision["hold"],
            "retrained": outcome is not None,
            "champion": champion,
            "next_batch_index": new_state.next_batch_index,
        }

    state = read_loop_state()
    batch = prepare_batch(state)
    data_branch = check_for_data(batch)
    champion = resolve_champion()
    data_branch >> [end_of_data(state), champion]
    monitoring = monitor_batch(state, batch, champion)
    decision = decide_batch(state, batch, monitoring)
    action = choose_action(decision)

    inline_outcome = retrain_inline(state, batch, decision)
    trigger_deployment, no_deployment = deploy_branch(
        inline_outcome,
        trigger_run_id=(
            "deploy__{{ ti.xcom_pull(task_ids='read_loop_state')['loop_id'] }}__batch_"
            "{{ '%05d' % ti.xcom_pull(task_ids='read_loop_state')['batch_index'] }}"
        ),
        model_version="{{ ti.xcom_pull(task_ids='retrain_inline')['champion_after'] }}",
    )

    request = prepare_training_request(state, batch, decision)
    request >> trigger_training
    waited = wait_for_training(request)
    trigger_training >> waited

    action >> [skip_retraining, inline_outcome, request]
    [skip_retraining, trigger_deployment, no_deployment, waited] >> batch_handled
    batch_handled >> record_batch(state, batch, monitoring, decision)


health_predict_monitoring_retraining()
