"""MLflow bookkeeping shared by every stage: the project's tag names, finding a stage's runs,
alias → version lookup, and running an MLproject entry point.

A stage finds another stage's runs by the project's own tags in every experiment, so runs that
``mlflow run`` filed under another experiment (``Default`` without ``--experiment-name``) are
found too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import mlflow
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT, MLFLOW_RUN_NAME

from steps.core import config

logger = logging.getLogger("health_predict.tracking")

# Run tags written by the stages (one place; the stages and the DAGs import them from here).
ROLE_TAG = "health_predict.role"  # training runs: training, family_parent, trial, family_best
FAMILY_TAG = "health_predict.family"
MODEL_URI_TAG = "health_predict.model_uri"
DATA_TAG_PREFIX = "health_predict.data."
STEP_TAG = "health_predict.step"
RUN_KEY_TAG = "health_predict.run_key"
TRAINING_ROLE = "training"
TRIAL_ID_TAG = "health_predict.trial_id"
RAY_NODE_TAG = "health_predict.ray_node_id"
BEST_FAMILY_TAG = "health_predict.best_family"
BEST_RUN_TAG = "health_predict.best_run_id"
# Monitoring runs: the batch's content hash and the decision.
BATCH_TAG = "health_predict.monitor.batch_sha256"
ALERTS_TAG = "health_predict.monitor.alerts"
# Loop runs: health_predict.loop.<field> (loop id, batch index ...).
LOOP_TAG_PREFIX = "health_predict.loop."
# Deployment runs.
TARGET_TAG = "health_predict.target"
STATUS_TAG = "health_predict.status"
IMAGE_TAG = "health_predict.image"
IMAGE_DIGEST_TAG = "health_predict.image_digest"
CONTAINER_TAG = "health_predict.container"
URL_TAG = "health_predict.url"
# Registry tags on model versions.
SOURCE_RUN_TAG = "health_predict.source_run_id"
TRAINING_RUN_TAG = "health_predict.training_run_id"
ROLLED_BACK_TAG = "health_predict.rolled_back"
# Families are chosen on the validation ROC-AUC of their uncalibrated scores: isotonic
# calibration turns scores into steps whose ties lower ROC-AUC without changing the ranking model.
SELECTION_METRIC = "val_raw_roc_auc"

# The experiment each entry point's runs belong to when nobody chose one.
ENTRY_POINT_EXPERIMENTS = {
    "ingest": config.DATA_EXPERIMENT,
    "split": config.DATA_EXPERIMENT,
    "train": config.TRAINING_EXPERIMENT,
    "register": config.REGISTRY_EXPERIMENT,
    "rollback": config.REGISTRY_EXPERIMENT,
    "monitor": config.MONITORING_EXPERIMENT,
    "deploy": config.DEPLOYMENT_EXPERIMENT,
    "simulate": config.SIMULATION_EXPERIMENT,
}


def mlflow_client() -> mlflow.MlflowClient:
    """An MLflow client on the configured tracking and registry store."""
    config.configure_mlflow()
    return mlflow.MlflowClient()


def find_runs(tags: dict[str, str], finished: bool = True, max_results: int = 1) -> list[Run]:
    """Runs carrying every tag in ``tags`` in any active experiment, newest first."""
    client = mlflow_client()
    experiment_ids = [
        experiment.experiment_id
        for experiment in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ]
    clauses = [f"tags.`{name}` = '{value}'" for name, value in tags.items()]
    if finished:
        clauses.append("attributes.status = 'FINISHED'")
    return client.search_runs(
        experiment_ids,
        filter_string=" and ".join(clauses),
        order_by=["attributes.start_time DESC"],
        max_results=max_results,
    )


def latest_training_run_id() -> str | None:
    """The newest finished training run (``health_predict.role=training``), wherever it is."""
    runs = find_runs({ROLE_TAG: TRAINING_ROLE})
    return runs[0].info.run_id if runs else None


def alias_version(alias: str, name: str | None = None) -> str | None:
    """The registry version (as a string) ``alias`` of model ``name`` (default
    ``config.MODEL_NAME``, read at call time) points at, or None."""
    try:
        return str(
            mlflow_client().get_model_version_by_alias(name or config.MODEL_NAME, alias).version
        )
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def pin_alias(model_uri: str) -> str:
    """``models:/name@alias`` as ``models:/name/<version>``, the version the alias points at now
    (so a moved alias is noticed); any other URI as given. LookupError when the alias is unset."""
    match = re.fullmatch(r"models:/([^/@]+)@([^/]+)", model_uri)
    if not match:
        return model_uri
    name, alias = match.groups()
    version = alias_version(alias, name)
    if version is None:
        raise LookupError(f"no alias '{alias}' on model '{name}'")
    return f"models:/{name}/{version}"


def lineage_tags(run_id: str) -> dict[str, str]:
    """The tags of ``run_id`` over those of its parent runs (the nearest run wins)."""
    client = mlflow_client()
    merged: dict[str, str] = {}
    while run_id:
        tags = client.get_run(run_id).data.tags
        merged = {**tags, **merged}
        run_id = tags.get("mlflow.parentRunId", "")
    return merged


def finished_run_with_key(entry_point: str, run_key: str) -> str | None:
    """Id of a FINISHED run of ``entry_point`` tagged with ``run_key``, None if there is none."""
    runs = find_runs({RUN_KEY_TAG: run_key, MLFLOW_PROJECT_ENTRY_POINT: entry_point})
    return runs[0].info.run_id if runs else None


def _python_on_path() -> None:
    """Make ``python`` in entry-point commands the interpreter running this code."""
    interpreter_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != interpreter_dir:
        os.environ["PATH"] = os.pathsep.join([interpreter_dir, path])


def run_entry_point(
    entry_point: str,
    parameters: dict[str, object],
    run_key: str | None = None,
    experiment: str | None = None,
) -> str:
    """Run an MLproject entry point to completion in this environment; return its MLflow run id.

    The run goes to ``experiment`` (default: the entry point's own). Empty or None parameters
    keep the MLproject default. With ``run_key``, a FINISHED run carrying the same key is reused
    instead of running again, so a retried task never repeats finished work.
    """
    if run_key and (existing := finished_run_with_key(entry_point, run_key)):
        return existing
    experiment_id = config.experiment_id_of(experiment or ENTRY_POINT_EXPERIMENTS[entry_point])
    tags = {MLFLOW_PROJECT_ENTRY_POINT: entry_point, MLFLOW_RUN_NAME: run_key or entry_point}
    if run_key:
        tags[RUN_KEY_TAG] = run_key
    # Created here rather than by mlflow.projects so that it never nests under an active run.
    run = mlflow.MlflowClient().create_run(experiment_id, tags=tags)
    _python_on_path()
    logger.info("entry point %s: starting run %s", entry_point, run.info.run_id)
    submitted = mlflow.projects.run(
        uri=str(config.PROJECT_ROOT),
        entry_point=entry_point,
        parameters={
            name: str(value) for name, value in parameters.items() if value not in ("", None)
        },
        experiment_id=experiment_id,
        run_id=run.info.run_id,
        env_manager="local",
        synchronous=True,
    )
    logger.info("entry point %s: finished run %s", entry_point, submitted.run_id)
    return submitted.run_id
