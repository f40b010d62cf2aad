"""
### Health Predict: training pipeline (optional split → train → register → deploy trigger)

1. **split_data** (only with `run_split=true`): the `ingest` and `split` entry points rebuild
   `processed_data/` from the raw file;
2. **train**: the `train` entry point (Ray Tune HPO, one nested MLflow run per family and trial)
   on `initial_train`, plus the labelled rows at `extra_train_uri` when given (retraining: the
   preprocessor is refit on the combined data); hands on the parent training run id;
3. **register**: the `register` entry point registers the best family as `challenger` and promotes
   it to `champion` only when the statistical gate passes on `eval_data_uri` (default
   `initial_test`);
4. **trigger_deployment**: when the champion changed, trigger `health_predict_api_deployment`
   (run id `deploy__v<version>__<this run id>`, stable across retries) with `deploy_target`.

Tasks hand each other MLflow run ids only. `run_key` (set by the monitoring DAG) tags the MLflow
runs so that a redone retraining reuses finished runs. Parameters left empty/null take the MLproject
defaults of `train` and `register`.

Example conf: `{"families": "lightgbm,logreg", "trials_per_family": 8, "deploy_target": "local"}`.
Results: MLflow experiments `HealthPredict_Training` (parent run, family runs, trials, family-best
models with evaluation artifacts) and `HealthPredict_Registry` (gate decision, model card); the
registered model `health-predict` and its aliases.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

DEPLOYMENT_DAG_ID = "health_predict_api_deployment"
GATE_PARAMS = ("margin", "auc_floor", "max_subgroup_recall_gap", "n_bootstrap")

default_args = {
    "owner": "health-predict",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
}


def _optional(kind: str, description: str, **schema) -> Param:
    return Param(None, type=["null", kind], description=description, **schema)


@dag(
    dag_id="health_predict_training_hpo",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "data_uri": Param("", type="string", description="Data-store root; empty = default"),
        "run_split": Param(False, type="boolean", description="Run ingest + split first"),
        "raw_data": Param("", type="string", description="Raw data source for ingest"),
        "extra_train_uri": Param("", type="string", description="Labelled rows added to training"),
        "eval_data_uri": Param("", type="string", description="Labelled data the gate judges on"),
        "families": _optional("string", "Model families, comma-separated"),
        "trials_per_family": _optional("integer", "Ray Tune trials per family", minimum=1),
        "time_budget_s": _optional("number", "HPO time budget (s)", minimum=1),
        "seed": _optional("integer", "Random seed"),
        "ray_address": Param("", type="string", description="Existing Ray cluster; empty = local"),
        "run_key": Param("", type="string", description="Idempotency key (monitoring DAG)"),
        "deploy_target": Param("k8s", enum=["k8s", "local", "none"]),
        **{name: _optional("number", f"register gate parameter {name}") for name in GATE_PARAMS},
    },
    tags=["health-predict", "training"],
)
def health_predict_training_hpo():
    @task
    def split_data() -> dict | None:
        """Rebuild the split with the ingest and split entry points when asked to."""
        params = get_current_context()["params"]
        if not params["run_split"]:
            print("run_split=false: using the existing processed_data/ split")
            return None
        from steps.monitoring import loop

        data_uri = params["data_uri"]
        ingest = loop.run_entry_point(
            "ingest", {"raw_data": params["raw_data"], "data_uri": data_uri}
        )
        split = loop.run_entry_point("split", {"data_uri": data_uri})
        return {"ingest_run_id": ingest, "split_run_id": split}

    @task(execution_timeout=timedelta(hours=3))
    def train() -> str:
        """Run the train entry point; returns the parent training run id."""
        from steps.monitoring import loop

        params = get_current_context()["params"]
        return loop.run_training(
            params["data_uri"] or None,
            params["extra_train_uri"] or None,
            run_key=params["run_key"] or None,
            families=params["families"],
            trials_per_family=params["trials_per_family"],
            time_budget_s=params["time_budget_s"],
            seed=params["seed"],
            ray_address=params["ray_address"] or None,
        )

    @task
    def register(train_run_id: str) -> dict:
        """Run the register gate; returns the champion versions before and after."""
        from dataclasses import asdict

        from steps.monitoring import loop

        params = get_current_context()["params"]
        outcome = loop.run_registration(
            train_run_id,
            params["eval_data_uri"] or None,
            gate={name: params[name] for name in GATE_PARAMS},
            run_key=params["run_key"] or None,
            data_uri=params["data_uri"] or None,
        )
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
            "deploy__v{{ ti.xcom_pull(task_ids='register')['champion_after'] }}__{{ run_id }}"
        ),
        conf={
            "target": "{{ params.deploy_target }}",
            "model_version": "{{ ti.xcom_pull(task_ids='register')['champion_after'] }}",
        },
        skip_when_already_exists=True,
    )
    no_deployment = EmptyOperator(task_id="no_deployment")

    trained = train()
    split_data() >> trained
    outcome = register(trained)
    deployment_needed(outcome) >> [trigger_deployment, no_deployment]


health_predict_training_hpo()
