"""What the Health Predict DAGs share: default task arguments, parameter helpers, gate parameter
names, the register pool and the deploy branch.

A library module (not in ``dags/``), so every Airflow component that loads the DAG files finds it
through the project on ``sys.path`` (``PYTHONPATH``), the CLI (``airflow dags list --local``)
included, which does not put the DAGs folder on ``sys.path``. Like the DAG files, it imports no
heavy library at parse time (nor does ``steps/orchestration/__init__.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, get_current_context, task

TRAINING_DAG_ID = "health_predict_training_hpo"
DEPLOYMENT_DAG_ID = "health_predict_api_deployment"
MONITORING_DAG_ID = "health_predict_monitoring_retraining"
# Parameters of the `register` entry point a DAG run may override (null = MLproject default).
GATE_PARAMS = ("margin", "deployment_cost", "auc_floor", "max_subgroup_recall_gap", "n_bootstrap")
# One promotion at a time: every task that can promote a champion runs in this pool of one slot
# (besides the registry-level lock of steps/registry), so two runs never judge against the same
# champion. docker/airflow/pools.sh creates every pool of POOLS where Airflow is initialised.
REGISTER_POOL = "health_predict_register"
POOLS = {REGISTER_POOL: (1, "one register (judge and promote) at a time")}

DEFAULT_ARGS = {
    "owner": "health-predict",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
}
# What every project DAG's @dag() shares: no back-fill, one run at a time, the default args.
DAG_SETTINGS = {
    "start_date": datetime(2024, 1, 1),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}


def optional_param(kind: str, description: str, **schema) -> Param:
    """A run parameter that may be null (null: the MLproject default applies)."""
    return Param(None, type=["null", kind], description=description, **schema)


def gate_params() -> dict[str, Param]:
    """The register gate parameters as optional run parameters."""
    return {
        name: optional_param("number", f"register gate parameter {name}") for name in GATE_PARAMS
    }


def deploy_target_param() -> Param:
    """Where a promoted champion is deployed (``none``: not at all)."""
    return Param("k8s", enum=["k8s", "local", "none"], description="Deployment after a promotion")


def deploy_branch(outcome, trigger_run_id: str, model_version: str) -> list:
    """Trigger the deployment DAG when ``outcome`` says the champion changed, else do nothing.

    ``outcome`` is the XCom of a task returning ``champion_changed``; ``trigger_run_id`` and
    ``model_version`` are templates (the run id must be stable across retries). Call inside a DAG;
    returns the branch's two end tasks.
    """

    @task.branch
    def deployment_needed(outcome: dict) -> str:
        target = get_current_context()["params"]["deploy_target"]
        if outcome["champion_changed"] and target != "none":
            return "trigger_deployment"
        return "no_deployment"

    trigger_deployment = TriggerDagRunOperator(
        task_id="trigger_deployment",
        trigger_dag_id=DEPLOYMENT_DAG_ID,
        trigger_run_id=trigger_run_id,
        conf={"target": "{{ params.deploy_target }}", "model_version": model_version},
        skip_when_already_exists=True,
    )
    no_deployment = EmptyOperator(task_id="no_deployment")
    ends = [trigger_deployment, no_deployment]
    deployment_needed(outcome) >> ends
    return ends
