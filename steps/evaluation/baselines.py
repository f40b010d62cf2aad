"""Fair baselines: one-hot logistic regression and one-hot XGBoost with fixed, usual settings.

A reviewer's yardstick for the tuned model: the raw input columns (no engineered features),
categories seen fewer than ``MIN_FREQUENCY`` times in training pooled into one, and settings
chosen in advance, never tuned (XGBoost: learning rate 0.05, depth 4, 300 trees; logistic
regression: scikit-learn's defaults on standardised counts). Same training rows and the same
death/hospice exclusions as the pipeline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from custom_pyfunc import columns
from steps.evaluation import gate

CATEGORICAL = [*columns.STRING_INPUT_COLUMNS, *columns.CODED_ID_COLUMNS]
NUMERIC = list(columns.COUNT_RANGES)
MIN_FREQUENCY = 20
BASELINES = ("onehot_logreg", "onehot_xgboost")


def baseline_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw input columns: categories as text (missing as ``missing``), counts as float."""
    out = frame[CATEGORICAL + NUMERIC].copy()
    text = out[CATEGORICAL].astype(object)
    out[CATEGORICAL] = text.where(text.notna(), "missing").astype(str)
    out[NUMERIC] = out[NUMERIC].astype("float64")
    return out


def baseline_model(name: str, seed: int = 0, n_jobs: int = 1) -> Pipeline:
    """An unfitted baseline pipeline (``onehot_logreg`` or ``onehot_xgboost``) on raw frames."""
    one_hot = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=MIN_FREQUENCY)
    if name == "onehot_logreg":
        encoder = make_column_transformer((one_hot, CATEGORICAL), (StandardScaler(), NUMERIC))
        model = LogisticRegression(max_iter=3000)
    elif name == "onehot_xgboost":
        encoder = make_column_transformer((one_hot, CATEGORICAL), ("passthrough", NUMERIC))
        model = XGBClassifier(
            learning_rate=0.05, max_depth=4, n_estimators=300, random_state=seed, n_jobs=n_jobs
        )
    else:
        raise ValueError(f"unknown baseline {name!r}: choose from {', '.join(BASELINES)}")
    return make_pipeline(encoder, model)


def fit_baselines(
    frame: pd.DataFrame, labels: np.ndarray, seed: int = 0, n_jobs: int = 1
) -> dict[str, Pipeline]:
    """Every baseline fitted on the raw training ``frame`` and its ``labels``."""
    x = baseline_frame(frame)
    return {name: baseline_model(name, seed, n_jobs).fit(x, labels) for name in BASELINES}


def baseline_scores(models: dict[str, Pipeline], frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each fitted baseline's probability of the positive class on the raw ``frame``."""
    x = baseline_frame(frame)
    return {name: model.predict_proba(x)[:, 1] for name, model in models.items()}


def versus_best_baseline(
    labels: np.ndarray, ours: np.ndarray, scores: dict[str, np.ndarray]
) -> tuple[str, gate.Interval]:
    """The baseline with the highest ROC-AUC on these rows (the conservative choice) and ours
    minus its ROC-AUC, with the gate's paired bootstrap 95% interval."""
    best = max(scores, key=lambda name: gate.roc_auc(labels, scores[name]))
    return best, gate.compare_auc(labels, ours, scores[best]).difference


def comparison_metrics(
    labels: np.ndarray, ours: np.ndarray, scores: dict[str, np.ndarray], prefix: str
) -> tuple[str, dict[str, float]]:
    """The best baseline's name and metrics ``<prefix>_<baseline>_roc_auc`` per baseline and
    ``<prefix>_minus_best_baseline_roc_auc`` (``_ci_low``, ``_ci_high``)."""
    best, difference = versus_best_baseline(labels, ours, scores)
    metrics = {f"{prefix}_{name}_roc_auc": gate.roc_auc(labels, s) for name, s in scores.items()}
    metrics[f"{prefix}_minus_best_baseline_roc_auc"] = difference.estimate
    metrics[f"{prefix}_minus_best_baseline_roc_auc_ci_low"] = difference.low
    metrics[f"{prefix}_minus_best_baseline_roc_auc_ci_high"] = difference.high
    return best, metrics
