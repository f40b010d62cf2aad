"""Per-prediction reasons: each input column's exact contribution to the model's log-odds.

Contributions are the fitted model's own, not sampled: TreeSHAP from LightGBM
(``pred_contrib``), XGBoost (``pred_contribs``) and CatBoost (``ShapValues``); for logistic
regression ``coef × (x − mean of the training matrix)``, whose base value is the log-odds of that
mean row. For every family ``base value + sum of contributions = the model's log-odds``, before
calibration (calibration is monotone, so the reasons explain the ranking of the served
probabilities). The contributions of the encoded features of one input column (one-hot
indicators, category code and target encoding, ICD-9 group, age ordinal, tested/high flags) are
summed back to that column; an engineered feature built from several input columns is a reason of
its own under its name (:data:`COMBINED_FEATURES`). Identifiers are never model features, so
they are never reasons. A random forest averages probabilities, so its log-odds have no exact
additive split: it serves no reasons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from custom_pyfunc import columns, features, preprocessing
from custom_pyfunc.predictor import ReadmissionPredictor

PARAM = "reasons"
# Each row answers with at most this many reasons each way (there are ~50 input columns).
MAX_REASONS = 10
RAISED, LOWERED = "risk_raised_by", "risk_lowered_by"
FAMILIES_WITH_REASONS = ("logreg", "xgboost", "lightgbm", "catboost")
# Family-best runs log the mean |contribution| of each reason on the test split under this prefix.
GLOBAL_METRIC_PREFIX = "test_mean_abs_reason_"

# Engineered features computed from several input columns: a reason under their own name.
COMBINED_FEATURES: dict[str, tuple[str, ...]] = {
    "total_prior_visits": ("number_outpatient", "number_emergency", "number_inpatient"),
    "medications_changed": columns.MEDICATION_COLUMNS,
    "medications_active": columns.MEDICATION_COLUMNS,
    "diabetes_any_diagnosis": columns.DIAGNOSIS_COLUMNS,
    "service_intensity": ("num_lab_procedures", "num_procedures", "num_medications"),
}
# Every other engineered feature comes from exactly one input column.
_SINGLE_SOURCE = {
    features.WEIGHT_RECORDED: "weight",
    "age_ordinal": "age",
    "a1c_tested": "A1Cresult",
    "a1c_high": "A1Cresult",
    "glucose_tested": "max_glu_serum",
    "glucose_high": "max_glu_serum",
    **dict(zip(features.DIAGNOSIS_GROUP_COLUMNS, columns.DIAGNOSIS_COLUMNS, strict=True)),
}


class InvalidParams(ValueError):
    """Inference params the model refuses; the message names the param, never a patient value."""


def reason_name(feature: str) -> str:
    """The input column (or combined feature) an engineered feature's contribution goes to."""
    name = _SINGLE_SOURCE.get(feature, feature)
    if name not in columns.INPUT_COLUMNS and name not in COMBINED_FEATURES:
        raise ValueError(f"engineered feature {feature!r} has no input column to report")
    return name


REASON_NAMES = tuple(dict.fromkeys(reason_name(f) for f in preprocessing.NATIVE_COLUMNS))


def requested_reasons(params: dict | None) -> int:
    """How many reasons each way ``params`` asks for (0: none); anything else is refused."""
    params = params or {}
    if unknown := [key for key in params if key != PARAM]:  # not echoed: any text may be sent
        raise InvalidParams(f"{len(unknown)} unknown param(s): the only param is '{PARAM}'.")
    value = params.get(PARAM, 0)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidParams(f"params.{PARAM} must be an integer from 0 to {MAX_REASONS}.")
    if not 0 <= value <= MAX_REASONS:
        raise InvalidParams(
            f"params.{PARAM} must be an integer from 0 to {MAX_REASONS} (the number of reasons "
            "raising and lowering the risk per encounter)."
        )
    return int(value)


def _encoded_sources(encoder: preprocessing.FeatureEncoder) -> list[str]:
    """The engineered feature behind each column of ``encoder``'s output matrix."""
    numeric = list(features.FEATURE_NUMERIC_COLUMNS)
    if encoder.encoding == "native":
        return list(preprocessing.NATIVE_COLUMNS)
    if encoder.encoding == "onehot":
        indicators = [
            c for c, vocab in encoder.vocabularies_.items() for _ in range(len(vocab) + 1)
        ]
        return numeric + indicators
    return numeric + list(encoder.vocabularies_) + list(preprocessing.TARGET_ENCODED_COLUMNS)


def _feature_contributions(predictor: ReadmissionPredictor, matrix) -> np.ndarray:
    """Per row, each encoded feature's contribution and, last, the base value (log-odds)."""
    model = predictor.estimator.named_steps["model"]
    if predictor.family == "lightgbm":
        return model.predict(matrix, pred_contrib=True)
    if predictor.family == "xgboost":
        # lazy: the served model imports only its own family's library (xgboost 9.6 s)
        from xgboost import DMatrix

        booster = model.get_booster()
        return booster.predict(DMatrix(matrix, missing=model.missing), pred_contribs=True)
    if predictor.family == "catboost":
        # lazy: the served model imports only its own family's library (catboost 4.4 s)
        from catboost import Pool

        pool = Pool(matrix, cat_features=list(features.FEATURE_CATEGORICAL_COLUMNS))
        return model.get_feature_importance(pool, type="ShapValues")
    means = predictor.estimator.named_steps["features"].training_means_  # logreg
    coef = model.coef_[0]
    base = model.intercept_[0] + coef @ means
    return np.column_stack([coef * (matrix - means), np.full(len(matrix), base)])


def contributions(
    predictor: ReadmissionPredictor, engineered: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """Each row's contribution per reason (:data:`REASON_NAMES` columns) and its base value, for
    encounters through ``predictor.engineered``; the row sums plus the base value are the
    model's log-odds before calibration."""
    if predictor.family not in FAMILIES_WITH_REASONS:
        raise InvalidParams(
            f"params.{PARAM}: a {predictor.family} model has no exact per-column contributions "
            "(it averages probabilities, so its log-odds do not split additively); reasons are "
            f"served for {', '.join(FAMILIES_WITH_REASONS)} models."
        )
    encoder = predictor.estimator.named_steps["features"]
    if encoder.encoding == "onehot" and not hasattr(encoder, "training_means_"):
        raise InvalidParams(
            f"params.{PARAM}: this {predictor.family} model was trained before reasons were "
            "served (its training averages are not stored); retrain it to serve reasons."
        )
    values = _feature_contributions(predictor, encoder.transform(engineered))
    sources = [reason_name(f) for f in _encoded_sources(encoder)]
    group = np.zeros((len(sources), len(REASON_NAMES)))
    group[np.arange(len(sources)), [REASON_NAMES.index(s) for s in sources]] = 1.0
    index = engineered.index
    per_reason = pd.DataFrame(values[:, :-1] @ group, columns=list(REASON_NAMES), index=index)
    return per_reason, values[:, -1]


def top_reasons(per_reason: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per row, the ``k`` reasons that raised the log-odds most and the ``k`` that lowered it
    most, each ``{"column", "contribution"}``, strongest first (zero contributions left out)."""
    values = per_reason.to_numpy()
    names = per_reason.columns.to_numpy()
    order = np.argsort(values, axis=1, kind="stable")
    raised, lowered = [], []
    for row, ranked in zip(values, order, strict=True):
        up = [j for j in ranked[::-1][:k] if row[j] > 0]
        down = [j for j in ranked[:k] if row[j] < 0]
        raised.append([{"column": names[j], "contribution": float(row[j])} for j in up])
        lowered.append([{"column": names[j], "contribution": float(row[j])} for j in down])
    return pd.DataFrame({RAISED: raised, LOWERED: lowered}, index=per_reason.index)


def global_importance(predictor: ReadmissionPredictor, frame: pd.DataFrame) -> pd.Series:
    """Mean absolute contribution per reason over ``frame``'s rows, largest first."""
    per_reason, _ = contributions(predictor, predictor.engineered(frame))
    return per_reason.abs().mean().sort_values(ascending=False)
