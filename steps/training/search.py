"""Hyperparameter search with Ray Tune, and its trials logged as nested MLflow runs.

All trials of all families run in ONE Ray Tune experiment (the family is a grid dimension), so
CPUs never idle between families; each trial takes 1 CPU and the feature matrices are computed
once and shared through Ray's object store.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from sklearn.metrics import average_precision_score, roc_auc_score

import custom_pyfunc
import steps
from steps.core.tracking import FAMILY_TAG, RAY_NODE_TAG, ROLE_TAG, TRIAL_ID_TAG
from steps.training.families import (
    CATBOOST_PATIENCE,
    ENCODING,
    build_estimator,
    fit_params,
    search_space,
)

logger = logging.getLogger(__name__)


MAX_TRIAL_FAILURES = 2


def run_trial(trial_config: dict[str, Any], matrices: dict[str, tuple]) -> None:
    """One Ray Tune trial: fit on train, report validation ROC-AUC, PR-AUC and the fit time."""
    # lazy: imported where the trial runs, in a Ray worker
    import ray
    from ray import tune

    family = trial_config["family"]
    x_train, y_train, x_val, y_val = matrices[ENCODING[family]]
    started = time.perf_counter()
    estimator = build_estimator(family, trial_config[family], trial_config["seed"], n_jobs=1)
    early_stopping = {}
    if family == "catboost":
        early_stopping = {"eval_set": (x_val, y_val), "early_stopping_rounds": CATBOOST_PATIENCE}
    estimator.fit(x_train, y_train, **fit_params(family), **early_stopping)
    probability = estimator.predict_proba(x_val)[:, 1]
    trees = {"best_trees": estimator.get_best_iteration() + 1} if early_stopping else {}
    tune.report(
        {
            **trees,
            "val_roc_auc": float(roc_auc_score(y_val, probability)),
            "val_pr_auc": float(average_precision_score(y_val, probability)),
            "train_time_s": time.perf_counter() - started,
            "node_id": ray.get_runtime_context().get_node_id(),
        }
    )


def start_ray(ray_address: str = "", attempts: int = 3) -> None:
    """Join the Ray cluster at ``ray_address``, or start a local one using every CPU.

    An existing cluster gets the project's code (``steps``, ``custom_pyfunc``) shipped with the
    job (``py_modules``): its workers need only the pinned libraries. Its authentication token is
    read by Ray from ``RAY_AUTH_MODE=token`` plus ``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``,
    never from a parameter. A heavily loaded machine can make a local raylet give up while its
    agents start (a fixed 15 s wait inside Ray), so a local start is retried.
    """
    # lazy: ray takes ~2 s to import; `steps.train --help` and the input checks need none of it
    import ray

    if ray_address:
        code = [str(Path(package.__file__).parent) for package in (steps, custom_pyfunc)]
        ray.init(
            address=ray_address,
            log_to_driver=False,
            runtime_env={"py_modules": code, "excludes": ["__pycache__"]},
        )
        return
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            return
        except Exception:
            ray.shutdown()
            if attempt == attempts:
                raise
            logger.warning(
                "local Ray did not start (attempt %d of %d), retrying", attempt, attempts
            )


@dataclass
class SearchOutcome:
    """Every finished trial (config + metrics) and how busy the CPUs were."""

    trials: list[dict[str, Any]]
    wall_s: float
    cpus: float

    @property
    def efficiency(self) -> float:
        """Sum of trial training time / (wall time x CPUs)."""
        busy = sum(t["metrics"].get("train_time_s", 0.0) for t in self.trials)
        return busy / (self.wall_s * self.cpus) if self.wall_s > 0 else 0.0


def build_tuner(
    matrices: dict[str, tuple],
    families: list[str],
    trials_per_family: int,
    time_budget_s: float,
    seed: int,
):
    """The Ray Tune experiment: every family a grid value, 1 CPU per trial, actors reused."""
    # lazy: ray.tune takes ~6 s to import; `steps.train --help` and the input checks need none of it
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    param_space = {
        "family": tune.grid_search(families),
        "seed": seed,
        **{family: search_space(family) for family in families},
    }
    trainable = tune.with_resources(tune.with_parameters(run_trial, matrices=matrices), {"cpu": 1})
    storage_dir = tempfile.mkdtemp(prefix="health-predict-tune-")
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_roc_auc",
            mode="max",
            num_samples=trials_per_family,
            time_budget_s=time_budget_s,
            reuse_actors=True,
            search_alg=BasicVariantGenerator(random_state=seed),
        ),
        run_config=tune.RunConfig(
            storage_path=storage_dir,
            verbose=0,
            log_to_file=False,
            # A trial whose worker or node dies is started again (from scratch: trials
            # do not checkpoint), at most twice; then it is reported as failed.
            failure_config=tune.FailureConfig(max_failures=MAX_TRIAL_FAILURES),
        ),
    )


def run_search(
    matrices: dict[str, tuple],
    families: list[str],
    trials_per_family: int,
    time_budget_s: float,
    seed: int,
    ray_address: str = "",
) -> SearchOutcome:
    """Ray Tune over all families at once (1 CPU per trial, actors reused)."""
    # A busy 2-core machine can need more than Ray's default 30 s to register the local node.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    # lazy: ray takes ~2 s to import; `steps.train --help` and the input checks need none of it
    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        start_ray(ray_address)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        tuner = build_tuner(matrices, families, trials_per_family, time_budget_s, seed)
        started = time.perf_counter()
        results = tuner.fit()
        wall_s = time.perf_counter() - started
    finally:
        if started_ray:
            ray.shutdown()
    trials = [
        {"config": r.config, "metrics": dict(r.metrics or {}), "error": r.error}
        for r in results
        if r.config is not None
    ]
    return SearchOutcome(trials=trials, wall_s=wall_s, cpus=cpus)


def log_trials(outcome: SearchOutcome, family: str, parent_run_id: str, experiment_id: str) -> None:
    """One nested MLflow run per trial of ``family`` under ``parent_run_id``, timed as it ran."""
    client = mlflow.MlflowClient()
    for index, trial in enumerate(t for t in outcome.trials if t["config"]["family"] == family):
        metrics = trial["metrics"]
        end_ms = int(metrics.get("timestamp", time.time()) * 1000)
        start_ms = end_ms - int(metrics.get("time_total_s", 0.0) * 1000)
        run = client.create_run(
            experiment_id,
            start_time=start_ms,
            run_name=f"{family}-trial-{index:03d}",
            tags={
                "mlflow.parentRunId": parent_run_id,
                ROLE_TAG: "trial",
                FAMILY_TAG: family,
                TRIAL_ID_TAG: str(metrics.get("trial_id", "")),
                RAY_NODE_TAG: str(metrics.get("node_id", "")),
            },
        )
        params = [
            mlflow.entities.Param(k, str(v)) for k, v in sorted(trial["config"][family].items())
        ]
        values = {
            k: float(metrics[k])
            for k in ("val_roc_auc", "val_pr_auc", "train_time_s", "time_total_s")
            if k in metrics
        }
        client.log_batch(
            run.info.run_id,
            params=params,
            metrics=[mlflow.entities.Metric(k, v, end_ms, 0) for k, v in values.items()],
        )
        status = "FAILED" if trial["error"] or "val_roc_auc" not in metrics else "FINISHED"
        client.set_terminated(run.info.run_id, status=status, end_time=end_ms)


def log_search_summary(outcome: SearchOutcome) -> None:
    """Log how long the HPO took and how busy it kept the CPUs on the active run."""
    mlflow.log_metrics(
        {
            "hpo_wall_s": outcome.wall_s,
            "hpo_cpus": outcome.cpus,
            "hpo_trial_time_s": sum(t["metrics"].get("train_time_s", 0) for t in outcome.trials),
            "hpo_efficiency": outcome.efficiency,
            "hpo_trials": len(outcome.trials),
        }
    )


def record_family_search(
    outcome: SearchOutcome, family: str, experiment_id: str
) -> dict[str, Any] | None:
    """Log ``family``'s trials under one family run; return its best config (None if none ended)."""
    finished = [
        t for t in outcome.trials
        if t["config"]["family"] == family and "val_roc_auc" in t["metrics"]
    ]  # fmt: skip
    with mlflow.start_run(
        run_name=f"{family}-search",
        nested=True,
        tags={ROLE_TAG: "family_parent", FAMILY_TAG: family},
    ) as family_run:
        log_trials(outcome, family, family_run.info.run_id, experiment_id)
        if not finished:
            logger.warning("%s: no trial finished within the time budget", family)
            return None
        best = max(finished, key=lambda t: t["metrics"]["val_roc_auc"])
        params = dict(best["config"][family])
        if "best_trees" in best["metrics"]:  # early stopping found the number of trees
            params["n_estimators"] = int(best["metrics"]["best_trees"])
        mlflow.log_params(params)
        mlflow.log_metrics(
            {"best_val_roc_auc": best["metrics"]["val_roc_auc"], "trials": len(finished)}
        )
    return params
