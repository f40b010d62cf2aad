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

import argparse
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
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from custom_pyfunc import features
from custom_pyfunc.model import log_readmission_model
from custom_pyfunc.predictor import ProbabilityCalibrator, ReadmissionPredictor
from custom_pyfunc.preprocessing import FeatureEncoder, categorical_indices
from steps.core import config, storage
from steps.data import labelled
from steps.evaluation import evaluate

logger = logging.getLogger("health_predict.train")

FAMILIES = ("logreg", "random_forest", "xgboost", "lightgbm")
ENCODING = {
    "logreg": "onehot",
    "random_forest": "ordinal",
    "xgboost": "ordinal",
    "lightgbm": "ordinal",
}
SPLIT_FILES = {
    "initial_train": config.INITIAL_TRAIN_KEY,
    "initial_validation": config.INITIAL_VALIDATION_KEY,
    "initial_test": config.INITIAL_TEST_KEY,
}
ROLE_TAG, FAMILY_TAG = "health_predict.role", "health_predict.family"
MODEL_URI_TAG = "health_predict.model_uri"


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


def load_training_data(data_uri: str, target: str, extra_train_uri: str = "") -> TrainingData:
    """Read the three initial splits (plus optional extra training data) and engineer features."""
    root = data_uri or config.data_uri()
    raw, hashes = {}, {}
    for name, key in SPLIT_FILES.items():
        split_file = labelled.read_labelled(storage.join(root, key))
        raw[name], hashes[name] = split_file.frame, split_file.sha256
    if extra_train_uri:
        extra = labelled.read_labelled(extra_train_uri)
        hashes["extra_train"] = extra.sha256
        raw["initial_train"] = pd.concat([raw["initial_train"], extra.frame], ignore_index=True)
    frames, labels = {}, {}
    for name, frame in raw.items():
        raw[name], labels[name] = evaluate.labelled_rows(frame, target)
        frames[name] = features.engineer_features(features.clean_data(raw[name]))
    return TrainingData(frames=frames, labels=labels, raw=raw, hashes=hashes)


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
    from ray import tune

    family = trial_config["family"]
    x_train, y_train, x_val, y_val = matrices[ENCODING[family]]
    started = time.perf_counter()
    estimator = build_estimator(family, trial_config[family], trial_config["seed"], n_jobs=1)
    estimator.fit(x_train, y_train, **fit_params(family))
    probability = estimator.predict_proba(x_val)[:, 1]
    tune.report(
        {
            "val_roc_auc": float(roc_auc_score(y_val, probability)),
            "val_pr_auc": float(average_precision_score(y_val, probability)),
            "train_time_s": time.perf_counter() - started,
        }
    )


def start_ray(ray_address: str = "", attempts: int = 3) -> None:
    """Join the Ray cluster at ``ray_address``, or start a local one using every CPU.

    A heavily loaded machine can make a local raylet give up while its agents start (a fixed
    15 s wait inside Ray), so a local start is retried.
    """
    import ray

    if ray_address:
        ray.init(address=ray_address, log_to_driver=False)
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
            run_config=tune.RunConfig(storage_path=storage_dir, verbose=0, log_to_file=False),
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
    probability: np.ndarray, y_val: np.ndarray, seed: int
) -> tuple[ProbabilityCalibrator | None, dict[str, float]]:
    """A calibrator fitted on validation when it lowers the Brier score, else None.

    The calibrated Brier score is estimated by 5-fold cross-validation on the validation scores
    (a calibrator fitted and scored on the same rows would always look better); the better of
    sigmoid and isotonic is kept only if it beats the uncalibrated score, then refitted on all of
    validation. Returns the calibrator and the Brier score of each option.
    """
    briers = {"none": float(brier_score_loss(y_val, probability))}
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    for method in ("sigmoid", "isotonic"):
        out_of_fold = np.empty(len(y_val))
        for fit_idx, score_idx in folds.split(probability.reshape(-1, 1), y_val):
            calibrator = ProbabilityCalibrator(method).fit(probability[fit_idx], y_val[fit_idx])
            out_of_fold[score_idx] = calibrator.transform(probability[score_idx])
        briers[method] = float(brier_score_loss(y_val, out_of_fold))
    method = min(briers, key=briers.get)
    if method == "none":
        return None, briers
    return ProbabilityCalibrator(method).fit(probability, y_val), briers


def fit_family_best(
    family: str, params: dict[str, Any], data: TrainingData, seed: int
) -> tuple[ReadmissionPredictor, dict[str, float]]:
    """Refit ``family`` with ``params`` on train, calibrate and pick the threshold on validation."""
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
    raw_probability = pipeline.predict_proba(x_val)[:, 1]
    calibrator, briers = calibrate(raw_probability, y_val, seed)
    probability = calibrator.transform(raw_probability) if calibrator else raw_probability
    predictor = ReadmissionPredictor(
        estimator=pipeline,
        threshold=evaluate.best_f1_threshold(y_val, probability),
        family=family,
        calibrator=calibrator,
    )
    details = {"refit_time_s": fit_seconds, **{f"val_brier_{k}": v for k, v in briers.items()}}
    return predictor, details


def log_family_best(
    family: str,
    params: dict[str, Any],
    data: TrainingData,
    seed: int,
    target: str,
) -> tuple[str, float]:
    """Fit, evaluate and log the best config of ``family``; returns (run id, val ROC-AUC)."""
    predictor, details = fit_family_best(family, params, data, seed)
    tags = {
        ROLE_TAG: "family_best",
        FAMILY_TAG: family,
        **{f"health_predict.data.{name}_sha256": h for name, h in data.hashes.items()},
    }
    with mlflow.start_run(run_name=f"{family}-best", nested=True, tags=tags) as run:
        mlflow.log_params(
            {
                **params,
                "threshold": round(predictor.threshold, 6),
                "calibration": predictor.calibration,
                "threshold_rule": "max F1 on validation",
                "target": target,
                "seed": seed,
            }
        )
        metrics = dict(details)
        with tempfile.TemporaryDirectory() as tmp:
            for split_name, prefix in (("initial_validation", "val"), ("initial_test", "test")):
                probability = predictor.probability(data.raw[split_name])
                directory = Path(tmp) / "evaluation" / ("" if prefix == "test" else "validation")
                values = evaluate.write_evaluation(
                    data.raw[split_name], data.labels[split_name], probability,
                    predictor.threshold, directory, f"{family} on {split_name}",
                )  # fmt: skip
                metrics.update({f"{prefix}_{k}": v for k, v in values.items()})
            mlflow.log_artifacts(str(Path(tmp) / "evaluation"), artifact_path="evaluation")
        mlflow.log_metrics(metrics)
        model_info = log_readmission_model(predictor)
        mlflow.set_tag(MODEL_URI_TAG, model_info.model_uri)
        logger.info(
            "%s: val ROC-AUC %.4f, test ROC-AUC %.4f, calibration %s, threshold %.3f",
            family, metrics["val_roc_auc"], metrics["test_roc_auc"], predictor.calibration,
            predictor.threshold,
        )  # fmt: skip
        return run.info.run_id, metrics["val_roc_auc"]


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
        mlflow.log_params(best["config"][family])
        mlflow.log_metrics(
            {"best_val_roc_auc": best["metrics"]["val_roc_auc"], "trials": len(finished)}
        )
    return best["config"][family]


def log_best_models(
    best_by_family: dict[str, dict[str, Any]], data: TrainingData, seed: int, target: str
) -> str:
    """Fit and log each family's best config; tag the run with the best family; return it."""
    if not best_by_family:
        raise RuntimeError("no trial finished: raise time_budget_s")
    scores = {
        family: log_family_best(family, params, data, seed, target)
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
    families: str | list[str] = FAMILIES,
    trials_per_family: int = 8,
    seed: int = 42,
    time_budget_s: float = 420,
    ray_address: str = "",
    target: str = "30d",
    extra_train_uri: str = "",
) -> str:
    """Run HPO, log every trial and each family's best pyfunc; return the training run id."""
    family_list = parse_families(families)
    data = load_training_data(data_uri, target, extra_train_uri)
    experiment_id = config.ensure_experiment(config.TRAINING_EXPERIMENT)
    with mlflow.start_run(tags={ROLE_TAG: "training"}) as parent:
        mlflow.set_tags({f"health_predict.data.{n}_sha256": h for n, h in data.hashes.items()})
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
                **{f"{n}_rows": len(y) for n, y in data.labels.items()},
            }
        )
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
        best_family = log_best_models(best_by_family, data, seed, target)
        logger.info(
            "HPO: %d trials, efficiency %.2f; best family %s",
            len(outcome.trials), outcome.efficiency, best_family,
        )  # fmt: skip
        return parent.info.run_id


def main(argv: list[str] | None = None) -> int:
    """CLI of the ``train`` entry point (empty strings mean the embedded defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--families", default="")
    parser.add_argument("--trials-per-family", type=lambda s: int(float(s)), default=8)
    parser.add_argument("--seed", type=lambda s: int(float(s)), default=42)
    parser.add_argument("--time-budget-s", type=float, default=420)
    parser.add_argument("--ray-address", default="")
    parser.add_argument("--target", default="30d")
    parser.add_argument("--extra-train-uri", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_id = train(
        data_uri=args.data_uri,
        families=args.families,
        trials_per_family=args.trials_per_family,
        seed=args.seed,
        time_budget_s=args.time_budget_s,
        ray_address=args.ray_address,
        target=args.target,
        extra_train_uri=args.extra_train_uri,
    )
    print(f"training run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
