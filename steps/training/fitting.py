"""A family's best configuration refitted, calibrated, evaluated and logged as the pyfunc."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline

from custom_pyfunc import features, reasons
from custom_pyfunc.model import log_readmission_model
from custom_pyfunc.predictor import ReadmissionPredictor
from custom_pyfunc.preprocessing import FeatureEncoder
from steps.core import tracking
from steps.core.tracking import FAMILY_TAG, MODEL_URI_TAG, ROLE_TAG
from steps.evaluation import baselines, evaluate, patients
from steps.training.data import CALIBRATION_SPLIT, TrainingData, log_dataset_inputs
from steps.training.families import ENCODING, build_estimator, fit_params

logger = logging.getLogger(__name__)


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
    split = CALIBRATION_SPLIT if CALIBRATION_SPLIT in data.raw else "initial_validation"
    predictor, briers = recalibrate(
        pipeline, family, data.raw[split], data.labels[split],
        patients.patient_ids(data.raw["initial_train"], "the training data"), alert_budget, seed,
    )  # fmt: skip
    probability = predictor.probability(data.raw[split])
    details = {
        "refit_time_s": fit_seconds,
        "maxf1_threshold": evaluate.best_f1_threshold(data.labels[split], probability),
        **{f"val_brier_{k}": v for k, v in briers.items()},
    }
    return predictor, details


def recalibrate(
    pipeline: Pipeline,
    family: str,
    rows: pd.DataFrame,
    labels: np.ndarray,
    training_patients: Iterable[str],
    alert_budget: float,
    seed: int,
) -> tuple[ReadmissionPredictor, dict[str, float]]:
    """The fitted ``pipeline`` served: calibrated (:func:`calibrate`) on the labelled raw ``rows``
    of patients it was not trained on, its threshold flagging the ``alert_budget`` share of every
    row (returning patients included: they are part of the population it will serve).

    The one rule for both retraining paths: ``train`` (on ``initial_validation``, or on the
    newest matured batch's calibration part when given ``calibration_uri``) and the replay's
    in-process refits (``steps.orchestration.refits``); and the Brier score of each option.
    """
    engineered = features.engineer_features(features.clean_data(rows))
    unseen = ~np.isin(patients.patient_ids(rows, "the calibration rows"), list(training_patients))
    calibrated, briers = calibrate(pipeline, engineered[unseen], labels[unseen], seed)
    probability = (calibrated or pipeline).predict_proba(engineered)[:, 1]
    predictor = ReadmissionPredictor(
        estimator=pipeline,
        threshold=evaluate.alert_budget_threshold(probability, alert_budget),
        family=family,
        calibrated=calibrated,
    )
    return predictor, briers


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
                "threshold_rule": f"flags the top {alert_budget:.0%} of "
                f"{'calibration' if CALIBRATION_SPLIT in data.raw else 'validation'} "
                "discharges by risk (alert budget)",
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
            if family in reasons.FAMILIES_WITH_REASONS:  # the model card's global view
                importance = reasons.global_importance(predictor, data.raw["initial_test"])
                metrics.update(
                    {f"{reasons.GLOBAL_METRIC_PREFIX}{k}": v for k, v in importance.items()}
                )
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
        return run.info.run_id, metrics[tracking.SELECTION_METRIC]
