"""The training run: search every family, refit, calibrate, evaluate and log each family's best.

Run layout in MLflow (experiment ``HealthPredict_Training``): the training run (role
``training``) holds one ``family_parent`` run per family with one nested ``trial`` run per Ray Tune
trial, and one ``family_best`` run per family with the logged pyfunc, its metrics and its
``evaluation/`` artifacts. Encounters that ended in death or hospice are excluded from training
and evaluation labels (no readmission was possible).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import mlflow

from custom_pyfunc import columns
from steps.core import config, tracking
from steps.core.tracking import ROLE_TAG, TRAINING_ROLE
from steps.evaluation import baselines
from steps.training.data import (
    TrainingData,
    feature_matrices,
    load_training_data,
    log_dataset_inputs,
)
from steps.training.families import parse_families
from steps.training.fitting import log_family_best
from steps.training.search import log_search_summary, record_family_search, run_search

logger = logging.getLogger(__name__)


def log_best_models(
    best_by_family: dict[str, dict[str, Any]],
    data: TrainingData,
    seed: int,
    target: str,
    alert_budget: float,
) -> str:
    """Fit and log each family's best config; tag the run with the best family (by
    ``tracking.SELECTION_METRIC``); return it."""
    if not best_by_family:
        raise RuntimeError("no trial finished: raise time_budget_s")
    fitted = baselines.fit_baselines(
        data.raw["initial_train"], data.labels["initial_train"], seed, os.cpu_count() or 1
    )
    baseline_test = baselines.baseline_scores(fitted, data.raw["initial_test"])
    scores = {
        family: log_family_best(family, params, data, seed, target, alert_budget, baseline_test)
        for family, params in best_by_family.items()
    }
    best_family = max(scores, key=lambda f: scores[f][1])
    mlflow.set_tags(
        {tracking.BEST_FAMILY_TAG: best_family, tracking.BEST_RUN_TAG: scores[best_family][0]}
    )
    return best_family


def train(
    data_uri: str = "",
    families: str | list[str] = "",
    trials_per_family: int = 4,
    seed: int = 42,
    time_budget_s: float = 3600,
    ray_address: str = "",
    target: str = columns.DEFAULT_TARGET,
    extra_train_uri: str = "",
    alert_budget: float = 0.1,
    calibration_uri: str = "",
) -> str:
    """Run HPO, log every trial and each family's best pyfunc; return the training run id."""
    family_list = parse_families(families or config.default_families())
    data = load_training_data(data_uri, target, extra_train_uri, calibration_uri)
    experiment_id = config.ensure_experiment(config.TRAINING_EXPERIMENT)
    with mlflow.start_run(tags={ROLE_TAG: TRAINING_ROLE}) as parent:
        mlflow.set_tags(data.data_tags())
        config.log_resolved_params(
            {
                "data_uri": data_uri or config.data_uri(),
                "families": ",".join(family_list),
                "trials_per_family": trials_per_family,
                "seed": seed,
                "time_budget_s": time_budget_s,
                "ray_address": ray_address or "local",
                "target": target,
                "extra_train_uri": extra_train_uri or "none",
                "calibration_uri": calibration_uri or "none",
                "alert_budget": alert_budget,
                "selection_metric": tracking.SELECTION_METRIC,
                **{f"{n}_rows": len(y) for n, y in data.labels.items()},
            }
        )
        log_dataset_inputs(data)
        matrices = feature_matrices(data, family_list, seed)
        outcome = run_search(
            matrices, family_list, trials_per_family, time_budget_s, seed, ray_address
        )
        log_search_summary(outcome)
        best_by_family = {
            family: best
            for family in family_list
            if (best := record_family_search(outcome, family, experiment_id)) is not None
        }
        best_family = log_best_models(best_by_family, data, seed, target, alert_budget)
        logger.info(
            "HPO: %d trials, efficiency %.2f; best family %s",
            len(outcome.trials), outcome.efficiency, best_family,
        )  # fmt: skip
        return parent.info.run_id
