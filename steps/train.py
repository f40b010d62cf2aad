"""Train: Ray Tune HPO over four model families; refit, calibrate, evaluate and log each best.

Run layout in MLflow (experiment ``HealthPredict_Training``): the training run (role
``training``) holds one ``family_parent`` run per family with one nested ``trial`` run per Ray Tune
trial, and one ``family_best`` run per family with the logged pyfunc, its metrics and its
``evaluation/`` artifacts. Encounters that ended in death or hospice are excluded from training
and evaluation labels (no readmission was possible).

All trials of all families run in ONE Ray Tune experiment (the family is a grid dimension), so
CPUs never idle between families; each trial takes 1 CPU and the feature matrices are computed
once and shared through Ray's object store.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from custom_pyfunc import features
from custom_pyfunc.model import log_readmission_model
from custom_pyfunc.predictor import ReadmissionPredictor
from custom_pyfunc.preprocessing import FeatureEncoder, categorical_indices
from steps.core import config, storage
from steps.core.tracking import DATA_TAG_PREFIX, FAMILY_TAG, MODEL_URI_TAG, ROLE_TAG, TRAINING_ROLE
from steps.data import labelled
from steps.evaluation import baselines, evaluate

logger = logging.getLogger("health_predict.train")

FAMILIES = ("logreg", "random_forest", "xgboost", "lightgbm", "catboost")
ENCODING = {
    "logreg": "onehot",
    "random_forest": "ordinal",
    "xgboost": "ordinal",
    "lightgbm": "ordinal",
    "catboost": "native",
}
# CatBoost trials stop when validation ROC-AUC has not improved for this many trees; the refit
# uses the number of trees the best trial found.
CATBOOST_MAX_TREES, CATBOOST_PATIENCE = 2000, 50
# Families are chosen on the validation ROC-AUC of their uncalibrated scores: isotonic
# calibration turns scores into steps whose ties lower ROC-AUC without changing the ranking model.
SELECTION_METRIC = "val_raw_roc_auc"
SPLIT_FILES = {
    "initial_train": config.INITIAL_TRAIN_KEY,
    "initial_validation": config.INITIAL_VALIDATION_KEY,
    "initial_test": config.INITIAL_TEST_KEY,
}
RAY_NODE_TAG = "health_predict.ray_node_id"
MAX_TRIAL_FAILURES = 2


def search_space(family: str) -> dict[str, Any]:
    """Ray Tune search space of one family's hyperparameters."""
    from ray import tune

    spaces = {
        "logreg": {
            "C": tune.loguniform(1e-3, 1.0),
            "class_weight": tune.choice(["none", "balanced"]),
        },
        "random_forest": {
            "n_estimators": tune.randint(200, 500),
            "max_depth": tune.randint(6, 20),
            "min_samples_leaf": tune.randint(5, 100),
            "max_features": tune.uniform(0.1, 0.5),
            "class_weight": tune.choice(["none", "balanced_subsample"]),
        },
        "xgboost": {
            "n_estimators": tune.randint(200, 800),
            "learning_rate": tune.loguniform(0.01, 0.1),
            "max_depth": tune.randint(2, 7),
            "min_child_weight": tune.loguniform(1.0, 50.0),
            "subsample": tune.uniform(0.5, 1.0),
            "colsample_bytree": tune.uniform(0.3, 0.9),
            "reg_lambda": tune.loguniform(0.1, 50.0),
        },
        "lightgbm": {
            "n_estimators": tune.randint(200, 800),
            "learning_rate": tune.loguniform(0.005, 0.05),
            "num_leaves": tune.randint(4, 32),
            "min_child_samples": tune.randint(20, 300),
            "subsample": tune.uniform(0.5, 1.0),
            "colsample_bytree": tune.uniform(0.2, 0.8),
            "reg_lambda": tune.loguniform(0.1, 50.0),
            "cat_smooth": tune.uniform(5.0, 50.0),
            "min_data_per_group": tune.randint(20, 200),
        },
        "catboost": {
            "learning_rate": tune.loguniform(0.03, 0.1),
            "depth": tune.randint(4, 9),
            "l2_leaf_reg": tune.loguniform(1.0, 20.0),
        },
    }
    return spaces[family]


def build_estimator(family: str, params: dict[str, Any], seed: int, n_jobs: int):
    """An unfitted classifier of ``family`` with hyperparameters ``params``."""
    params = {k: (None if v == "none" else v) for k, v in params.items()}
    if family == "logreg":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=2000, random_state=seed, **params)
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **params)
    if family == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(tree_method="hist", random_state=seed, n_jobs=n_jobs, **params)
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            subsample_freq=1, random_state=seed, n_jobs=n_jobs, verbose=-1, **params
        )
    if family == "catboost":
        from catboost import CatBoostClassifier

        return CatBoostClassifier(
            **{"n_estimators": CATBOOST_MAX_TREES, **params},
            cat_features=list(features.FEATURE_CATEGORICAL_COLUMNS),
            eval_metric="AUC",
            random_seed=seed,
            thread_count=n_jobs,
            allow_writing_files=False,
            verbose=0,
        )
    raise ValueError(f"unknown model family {family!r}: choose from {', '.join(FAMILIES)}")


def fit_params(family: str, prefix: str = "") -> dict[str, Any]:
    """Extra ``fit`` arguments: LightGBM is told which columns hold category codes."""
    return {f"{prefix}categorical_feature": categorical_indices()} if family == "lightgbm" else {}


@dataclass
class TrainingData:
    """Engineered features and labels of the splits, and what they were read from."""

    frames: dict[str, pd.DataFrame]
    labels: dict[str, np.ndarray]
    raw: dict[str, pd.DataFrame]
    hashes: dict[str, str] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)

    def data_tags(self) -> dict[str, str]:
        """:func:`data_tags` of the file sets read."""
        return data_tags(self.hashes, self.uris)


def data_tags(hashes: dict[str, str], uris: dict[str, str]) -> dict[str, str]:
    """Tags naming each file set's sha256 and its files (comma-separated URIs), so that
    ``register`` and ``monitor`` can keep their data patient-disjoint from them and ``monitor``
    can compare batches with what the model was fitted on."""
    return {
        **{f"{DATA_TAG_PREFIX}{name}_sha256": h for name, h in hashes.items()},
        **{f"{DATA_TAG_PREFIX}{name}_uri": u for name, u in uris.items()},
    }


def load_training_data(data_uri: str, target: str, extra_train_uri: str = "") -> TrainingData:
    """Read the three initial splits (plus optional extra training data) and engineer features."""
    root = data_uri or config.data_uri()
    raw, hashes, uris = {}, {}, {}
    for name, key in SPLIT_FILES.items():
        split_file = labelled.read_labelled(storage.join(root, key))
        raw[name], hashes[name] = split_file.frame, split_file.sha256
        uris[name] = ",".join(split_file.uris)
    if extra_train_uri:
        extra = labelled.read_labelled(extra_train_uri)
        hashes["extra_train"], uris["extra_train"] = extra.sha256, ",".join(extra.uris)
        raw["initial_train"] = pd.concat([raw["initial_train"], extra.frame], ignore_index=True)
    frames, labels = {}, {}
    for name, frame in raw.items():
        raw[name], labels[name] = evaluate.labelled_rows(frame, target)
        frames[name] = features.engineer_features(features.clean_data(raw[name]))
    return TrainingData(frames=frames, labels=labels, raw=raw, hashes=hashes, uris=uris)


def feature_matrices(data: TrainingData, families: list[str], seed: int) -> dict[str, tuple]:
    """Per encoding needed by ``families``: (X_train, y_train, X_validation, y_validation)."""
    matrices = {}
    y_train, y_val = data.labels["initial_train"], data.labels["initial_validation"]
    for encoding in sorted({ENCODING[f] for f in families}):
        encoder = FeatureEncoder(encoding=encoding, random_state=seed)
        x_train = encoder.fit_transform(data.frames["initial_train"], y_train)
        x_val = encoder.transform(data.frames["initial_validation"])
        matrices[encoding] = (x_train, y_train, x_val, y_val)
    return matrices


def run_trial(trial_config: dict[str, Any], matrices: dict[str, tuple]) -> None:
    """One Ray Tune trial: fit on train, report validation ROC-AUC, PR-AUC and the fit time."""
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
    import ray

    import custom_pyfunc
    import steps

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
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    started_ray = not ray.is_initialized()
    if started_ray:
        start_ray(ray_address)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        param_space = {
            "family": tune.grid_search(families),
            "seed": seed,
            **{family: search_space(family) for family in families},
        }
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, matrices=matrices), {"cpu": 1}
        )
        storage_dir = tempfile.mkdtemp(prefix="health-predict-tune-")
        tuner = tune.Tuner(
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
                "health_predict.trial_id": str(metrics.get("trial_id", "")),
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


def calibrate(
    estimator: Pipeline, x_val: pd.DataFrame, y_val: np.ndarray, seed: int
) -> tuple[CalibratedClassifierCV | None, dict[str, float]]:
    """``estimator`` frozen and calibrated on validation when that lowers the Brier score.

    The calibrated Brier score is estimated by 5-fold cross-validation on validation (a calibrator
    fitted and scored on the same rows would always look better); the better of sigmoid and
    isotonic is kept only if it beats the uncalibrated score, then fitted on all of validation.
    Returns the calibrated classifier (None: keep raw scores) and the Brier score of each option.
    """
    frozen = FrozenEstimator(estimator)
    briers = {"none": float(brier_score_loss(y_val, frozen.predict_proba(x_val)[:, 1]))}
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for method in ("sigmoid", "isotonic"):
        out_of_fold = cross_val_predict(
            CalibratedClassifierCV(frozen, method=method), x_val, y_val, cv=folds,
            method="predict_proba",
        )[:, 1]  # fmt: skip
        briers[method] = float(brier_score_loss(y_val, out_of_fold))
    method = min(briers, key=briers.get)
    if method == "none":
        return None, briers
    return CalibratedClassifierCV(frozen, method=method).fit(x_val, y_val), briers


def fit_family_best(
    family: str, params: dict[str, Any], data: TrainingData, seed: int, alert_budget: float
) -> tuple[ReadmissionPredictor, dict[str, float]]:
    """Refit ``family`` with ``params`` on train; on validation: calibrate, set the threshold that
    flags the ``alert_budget`` share of discharges, and note the max-F1 threshold (reported only).
    """
    pipeline = Pipeline(
        [
            ("features", FeatureEncoder(encoding=ENCODING[family], random_state=seed)),
            ("model", build_estimator(family, params, seed, n_jobs=os.cpu_count() or 1)),
        ]
    )
    started = time.perf_counter()
    pipeline.fit(
        data.frames["initial_train"], data.labels["initial_train"], **fit_params(family, "model__")
    )
    fit_seconds = time.perf_counter() - started
    # Served predictions are mostly single rows, where extra threads only add overhead.
    if "n_jobs" in pipeline.named_steps["model"].get_params():
        pipeline.set_params(model__n_jobs=1)
    x_val, y_val = data.frames["initial_validation"], data.labels["initial_validation"]
    calibrated, briers = calibrate(pipeline, x_val, y_val, seed)
    probability = (calibrated or pipeline).predict_proba(x_val)[:, 1]
    predictor = ReadmissionPredictor(
        estimator=pipeline,
        threshold=evaluate.alert_budget_threshold(probability, alert_budget),
        family=family,
        calibrated=calibrated,
    )
    details = {
        "refit_time_s": fit_seconds,
        "maxf1_threshold": evaluate.best_f1_threshold(y_val, probability),
        **{f"val_brier_{k}": v for k, v in briers.items()},
    }
    return predictor, details


def log_dataset_inputs(data: TrainingData, model_id: str | None = None) -> dict[str, Any]:
    """Log the rows trained, tuned and tested on as dataset inputs of the active run (and of the
    logged model ``model_id``); returns the datasets by split name."""
    datasets = {}
    for name, frame in data.raw.items():
        parts = [name, "extra_train"] if name == "initial_train" else [name]
        parts = [part for part in parts if part in data.hashes]
        datasets[name] = labelled.log_dataset(
            frame,
            name,
            ",".join(data.uris[part] for part in parts),
            "+".join(data.hashes[part] for part in parts),
            model_id,
        )
    return datasets


def log_model_metrics(metrics: dict[str, float], model_id: str, data: TrainingData) -> None:
    """Log ``metrics`` on the active run and on the logged model ``model_id`` (MLflow 3): the
    ``val_``/``test_`` ones linked to the validation/test dataset, the rest to no dataset."""
    datasets = log_dataset_inputs(data, model_id)
    remaining = dict(metrics)
    for prefix, name in (("val_", "initial_validation"), ("test_", "initial_test")):
        linked = {k: v for k, v in remaining.items() if k.startswith(prefix)}
        mlflow.log_metrics(linked, model_id=model_id, dataset=datasets[name])
        remaining = {k: v for k, v in remaining.items() if k not in linked}
    mlflow.log_metrics(remaining, model_id=model_id)


def evaluate_split(
    predictor: ReadmissionPredictor,
    data: TrainingData,
    split_name: str,
    directory: Path,
    maxf1_threshold: float,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of ``predictor`` on one labelled split, its evaluation artifacts written to
    ``directory``: at the operating threshold, ROC-AUC of the raw scores, and at the max-F1
    threshold (``maxf1_*``); and the split's probabilities."""
    frame, labels = data.raw[split_name], data.labels[split_name]
    probability = predictor.probability(frame)
    metrics = evaluate.write_evaluation(
        frame, labels, probability, predictor.threshold, directory,
        f"{predictor.family} on {split_name}",
    )  # fmt: skip
    metrics["raw_roc_auc"] = float(roc_auc_score(labels, predictor.raw_probability(frame)))
    at_max_f1 = evaluate.classification_metrics(labels, probability, maxf1_threshold)
    metrics.update({f"maxf1_{k}": at_max_f1[k] for k in ("precision", "recall", "f1", "flag_rate")})
    return metrics, probability


def log_family_best(
    family: str,
    params: dict[str, Any],
    data: TrainingData,
    seed: int,
    target: str,
    alert_budget: float,
    baseline_test: dict[str, np.ndarray],
) -> tuple[str, float]:
    """Fit, evaluate and log the best config of ``family``, with its test ROC-AUC against the
    fair baselines' (``baseline_test``: their initial_test scores); returns (run id, validation
    ROC-AUC of the uncalibrated scores, the family selection metric)."""
    predictor, details = fit_family_best(family, params, data, seed, alert_budget)
    tags = {
        ROLE_TAG: "family_best",
        FAMILY_TAG: family,
        **data.data_tags(),
    }
    with mlflow.start_run(run_name=f"{family}-best", nested=True, tags=tags) as run:
        mlflow.log_params(
            {
                **params,
                "threshold": round(predictor.threshold, 6),
                "calibration": predictor.calibration,
                "alert_budget": alert_budget,
                "threshold_rule": f"flags the top {alert_budget:.0%} of validation discharges "
                "by risk (alert budget)",
                "target": target,
                "seed": seed,
            }
        )
        metrics = dict(details)
        with tempfile.TemporaryDirectory() as tmp:
            for split_name, prefix in (("initial_validation", "val"), ("initial_test", "test")):
                directory = Path(tmp) / "evaluation" / ("" if prefix == "test" else "validation")
                values, probability = evaluate_split(
                    predictor, data, split_name, directory, details["maxf1_threshold"]
                )
                metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
            best_baseline, versus = baselines.comparison_metrics(
                data.labels["initial_test"], probability, baseline_test, "test"
            )
            metrics.update(versus)
            mlflow.log_param("best_baseline", best_baseline)
            mlflow.log_artifacts(str(Path(tmp) / "evaluation"), artifact_path="evaluation")
        model_info = log_readmission_model(predictor)
        mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)
        log_model_metrics(metrics, model_info.model_id, data)
        logger.info(
            "%s: val ROC-AUC %.4f, test ROC-AUC %.4f, calibration %s, threshold %.3f",
            family, metrics["val_roc_auc"], metrics["test_roc_auc"], predictor.calibration,
            predictor.threshold,
        )  # fmt: skip
        return run.info.run_id, metrics[SELECTION_METRIC]


def parse_families(families: str | list[str]) -> list[str]:
    """The family names of a comma-separated string or list; unknown or none is a ValueError."""
    family_list = families.split(",") if isinstance(families, str) else list(families)
    family_list = [f.strip() for f in family_list if f.strip()]
    unknown = sorted(set(family_list) - set(FAMILIES))
    if unknown or not family_list:
        raise ValueError(f"unknown model families {unknown}: choose from {', '.join(FAMILIES)}")
    return family_list


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


def log_best_models(
    best_by_family: dict[str, dict[str, Any]],
    data: TrainingData,
    seed: int,
    target: str,
    alert_budget: float,
) -> str:
    """Fit and log each family's best config; tag the run with the best family (by
    ``SELECTION_METRIC``); return it."""
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
        {"health_predict.best_family": best_family,
         "health_predict.best_run_id": scores[best_family][0]}
    )  # fmt: skip
    return best_family


def train(
    data_uri: str = "",
    families: str | list[str] = "logreg,catboost",
    trials_per_family: int = 4,
    seed: int = 42,
    time_budget_s: float = 3600,
    ray_address: str = "",
    target: str = "30d",
    extra_train_uri: str = "",
    alert_budget: float = 0.1,
) -> str:
    """Run HPO, log every trial and each family's best pyfunc; return the training run id."""
    family_list = parse_families(families)
    data = load_training_data(data_uri, target, extra_train_uri)
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
                "alert_budget": alert_budget,
                "selection_metric": SELECTION_METRIC,
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


HELP = {
    "data_uri": "data-store root with processed_data/ (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "families": "model families to search, comma-separated",
    "trials_per_family": "Ray Tune trials per family",
    "seed": "random seed of the search, the folds and the models",
    "time_budget_s": "guard on the whole search's wall clock, in seconds (trials decide)",
    "ray_address": "address of an existing Ray cluster (empty: a local Ray runtime)",
    "target": "label: 30d (readmitted <30 days) or any (<30 or >30)",
    "extra_train_uri": "labelled raw-format rows added to initial_train (retraining)",
    "alert_budget": "share of discharges to flag (top by risk on validation): sets the threshold",
}


def main(argv: list[str] | None = None) -> int:
    """CLI of the ``train`` entry point; options and defaults as in MLproject."""
    parser = config.entry_point_parser("train", __doc__, HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_id = train(**vars(args))
    print(f"training run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
