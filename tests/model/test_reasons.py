"""Per-prediction reasons: exact contributions on real rows for every family with reasons.

Small models (a few thousand real training rows, few trees) keep this to seconds; the
contribution code is the one the served model runs.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from custom_pyfunc import columns, reasons, serving
from steps.core import config
from steps.training import data as training_data
from steps.training import fitting

SMALL_PARAMS = {
    "logreg": {"C": 0.1},
    "random_forest": {"n_estimators": 20, "max_depth": 6, "min_samples_leaf": 20},
    "xgboost": {"n_estimators": 40, "max_depth": 3, "learning_rate": 0.1},
    "lightgbm": {"n_estimators": 40, "num_leaves": 7, "learning_rate": 0.1},
    "catboost": {"n_estimators": 40, "depth": 4, "learning_rate": 0.1},
}
TRAIN_ROWS, VALIDATION_ROWS, SCORED_ROWS = 4000, 1500, 300
# XGBoost computes margins and contributions in float32 (epsilon 1.2e-7): on log-odds of about
# -2 summed over ~50 features its own rounding reaches ~2e-6, so it is held to 1e-5.
TOLERANCE = {"logreg": 1e-6, "lightgbm": 1e-6, "catboost": 1e-6, "xgboost": 1e-5}


@pytest.fixture(scope="module")
def real_slice(processed_data_uri: str) -> training_data.TrainingData:
    """The first rows of each real split (training rows, validation rows, scored rows)."""
    data = training_data.load_training_data(processed_data_uri, "30d")
    sizes = {"initial_train": TRAIN_ROWS, "initial_validation": VALIDATION_ROWS,
             "initial_test": SCORED_ROWS}  # fmt: skip
    return training_data.TrainingData(
        frames={k: data.frames[k].iloc[:n] for k, n in sizes.items()},
        labels={k: data.labels[k][:n] for k, n in sizes.items()},
        raw={k: data.raw[k].iloc[:n] for k, n in sizes.items()},
    )


def _fit(family: str, real_slice: training_data.TrainingData):
    alert_budget = config.project_defaults("train")["alert_budget"]
    predictor, _ = fitting.fit_family_best(
        family, SMALL_PARAMS[family], real_slice, seed=0, alert_budget=alert_budget
    )
    return predictor


def _library_log_odds(predictor, frame) -> np.ndarray:
    """The fitted model's own margin (log-odds before calibration), from its library."""
    pipeline = predictor.estimator
    matrix = pipeline.named_steps["features"].transform(predictor.engineered(frame))
    model = pipeline.named_steps["model"]
    if predictor.family == "lightgbm":
        return model.predict(matrix, raw_score=True)
    if predictor.family == "xgboost":
        return model.predict(matrix, output_margin=True)
    if predictor.family == "catboost":
        return model.predict(matrix, prediction_type="RawFormulaVal")
    return model.decision_function(matrix)


@pytest.mark.parametrize("family", reasons.FAMILIES_WITH_REASONS)
def test_contributions_plus_base_value_equal_the_log_odds(family, real_slice):
    predictor = _fit(family, real_slice)
    frame = real_slice.raw["initial_test"][list(columns.INPUT_COLUMNS)]
    per_reason, base = reasons.contributions(predictor, predictor.engineered(frame))
    log_odds = _library_log_odds(predictor, frame)
    np.testing.assert_allclose(
        per_reason.sum(axis=1) + base, log_odds, rtol=0, atol=TOLERANCE[family]
    )
    # The margin is the one the served (uncalibrated) probability comes from.
    np.testing.assert_allclose(expit(log_odds), predictor.raw_probability(frame), atol=1e-6)
    assert np.ptp(per_reason.to_numpy(), axis=0).max() > 0  # real rows differ in their reasons
    assert not set(per_reason.columns) & set(columns.ID_COLUMNS)
    assert set(per_reason.columns) <= set(columns.INPUT_COLUMNS) | set(reasons.COMBINED_FEATURES)

    top = reasons.top_reasons(per_reason, 3)
    for row, raised, lowered in zip(
        per_reason.to_dict(orient="records"), top[reasons.RAISED], top[reasons.LOWERED], strict=True
    ):
        assert len(raised) <= 3 and len(lowered) <= 3
        up = [r["contribution"] for r in raised]
        down = [r["contribution"] for r in lowered]
        assert up == sorted(up, reverse=True) and all(c > 0 for c in up)
        assert down == sorted(down) and all(c < 0 for c in down)
        positives = sorted((c for c in row.values() if c > 0), reverse=True)
        assert up == positives[: len(up)] and len(up) == min(3, len(positives))
        assert all(row[r["column"]] == r["contribution"] for r in raised + lowered)

    # The scoring server's answer encoding is MLflow's own, byte for byte, with and without reasons.
    from mlflow.pyfunc.scoring_server import predictions_to_json

    plain = predictor.predict(frame)
    for answer in (plain, pd.concat([plain, top], axis=1)):
        expected = io.StringIO()
        predictions_to_json(answer, expected)
        assert serving.predictions_json(answer) == expected.getvalue()


def test_a_random_forest_refuses_reasons_naming_the_param(real_slice):
    predictor = _fit("random_forest", real_slice)
    frame = real_slice.raw["initial_test"][list(columns.INPUT_COLUMNS)].head(5)
    with pytest.raises(reasons.InvalidParams, match=r"params\.reasons.*random_forest"):
        reasons.contributions(predictor, predictor.engineered(frame))


@pytest.mark.parametrize(
    ("params", "problem"),
    [({"reasons": -1}, "from 0 to"), ({"reasons": 10**6}, "from 0 to"),
     ({"reasons": "three"}, "integer"), ({"reasons": True}, "integer"),
     ({"reasons": 2.5}, "integer"), ({"why": 3}, "unknown param")],
)  # fmt: skip
def test_bad_reasons_params_are_refused_naming_the_param(params, problem):
    with pytest.raises(reasons.InvalidParams, match=problem) as refused:
        reasons.requested_reasons(params)
    assert "reasons" in str(refused.value)


def test_every_engineered_feature_reports_to_an_input_column_or_a_combined_feature():
    for combined, inputs in reasons.COMBINED_FEATURES.items():
        assert set(inputs) <= set(columns.INPUT_COLUMNS), combined
    assert set(reasons.REASON_NAMES) >= set(reasons.COMBINED_FEATURES)
    assert reasons.requested_reasons(None) == 0 and reasons.requested_reasons({"reasons": 3}) == 3
