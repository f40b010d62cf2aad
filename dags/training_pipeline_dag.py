"""
### Health Predict: training pipeline (optional split → train → register → deploy trigger)

1. **split_data** (only with `run_split=true`): the `ingest` and `split` entry points rebuild
   `processed_data/` from the raw file;
2. **train**: the `train` entry point (Ray Tune HPO, one nested MLflow run per family and trial)
   on `initial_train`, plus the labelled rows at `extra_train_uri` when given (retraining: the
   preprocessor is refit on the combined data), calibrated and thresholded on `calibration_uri`
   when given (retraining: part of the newest matured batch) else on `initial_validation`; hands
   on the parent training run id;
3. **register**: the `register` entry point registers the best family as `challenger` and promotes
   it to `champion` only when the statistical gate passes on `eval_data_uri` (default
   `initial_test`); it runs in the Airflow pool `health_predict_register` (one slot), so two
   runs never judge against the same champion at once;
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

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from steps.orchestration.dag_common import (
    DAG_SETTINGS,
    GATE_PARAMS,
    REGISTER_POOL,
    TRAINING_DAG_ID,
    deploy_branch,
    deploy_target_param,
    gate_params,
    optional_param,
)


@dag(
    dag_id=TRAINING_DAG_ID,
    doc_md=__doc__,
    schedule=None,
    params={
        "data_uri": Param("", type="string", description="Data-store root; empty = default"),
        "run_split": Param(False, type="boolean", description="Run ingest + split first"),
        "raw_data": Param("", type="string", description="Raw data source for ingest"),
        "extra_train_uri": Param("", type="string", description="Labelled rows added to training"),
        "eval_data_uri": Param("", type="string", description="Labelled data the gate judges on"),
        "calibration_uri": Param(
            "", type="string", description="Labelled rows to calibrate on (retraining)"
        ),
        "families": optional_param("string", "Model families, comma-separated"),
        "trials_per_family": optional_param("integer", "Ray Tune trials per family", minimum=1),
        "time_budget_s": optional_param("number", "HPO time budget (s)", minimum=1),
        "seed": optional_param("integer", "Random seed"),
        "ray_address": Param("", type="string", description="Existing Ray cluster; empty = local"),
        "run_key": Param("", type="string", description="Idempotency key (monitoring DAG)"),
        "deploy_target": deploy_target_param(),
        **gate_params(),
    },
    **DAG_SETTINGS,
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
        from steps.core import tracking

        data_uri = params["data_uri"]
        ingest = tracking.run_entry_point(
            "ingest", {"raw_data": params["raw_data"], "data_uri": data_uri}
        )
        split = tracking.run_entry_point("split", {"data_uri": data_uri})
        return {"ingest_run_id": ingest, "split_run_id": split}

    @task(execution_timeout=timedelta(hours=3))
    def train() -> str:
        """Run the train entry point; returns the parent training run id."""
        from steps.orchestration import loop

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
            calibration_uri=params["calibration_uri"] or None,
        )

    @task(pool=REGISTER_POOL)
    def register(train_run_id: str) -> dict:
        """Run the register gate; returns the champion versions before and after."""
        from dataclasses import asdict

        from steps.orchestration import loop

        params = get_current_context()["params"]
        outcome = loop.run_registration(
            train_run_id,
            params["eval_data_uri"] or None,
            gate={name: params[name] for name in GATE_PARAMS},
            run_key=params["run_key"] or None,
            data_uri=params["data_uri"] or None,
        )
        return {**asdict(outcome), "champion_changed": outcome.champion_changed}

    trained = train()
    split_data() >> trained
    outcome = register(trained)
    deploy_branch(
        outcome,
        trigger_run_id=(
            "deploy__v{{ ti.xcom_pull(task_ids='register')['champion_after'] }}__{{ run_id }}"
        ),
        model_version="{{ ti.xcom_pull(task_ids='register')['champion_after'] }}",
    )


health_predict_training_hpo()
