"""The custom pyfunc: log → load → predict equals in-process predict, on synthetic encounters."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns, features, model, requirements
from steps.core import config
from steps.evaluation import evaluate
from steps.training import data as training_data
from steps.training import fitting
from tests.fixtures_data import synthetic_encounters


def _training_data(seed: int) -> training_data.TrainingData:
    raw, frames, labels = {}, {}, {}
    for offset, name in enumerate(training_data.SPLIT_FILES):
        raw[name], labels[name] = evaluate.labelled_rows(synthetic_encounters(500, seed + offset))
        frames[name] = features.engineer_features(features.clean_data(raw[name]))
    return training_data.TrainingData(frames=frames, labels=labels, raw=raw)


@pytest.fixture(scope="module")
def synthetic_predictor():
    params = {"n_estimators": 30, "num_leaves": 7, "min_child_samples": 10, "learning_rate": 0.1}
    alert_budget = config.project_defaults("train")["alert_budget"]
    predictor, details = fitting.fit_family_best(
        "lightgbm", params, _training_data(11), seed=0, alert_budget=alert_budget
    )
    assert details["refit_time_s"] > 0
    return predictor


@pytest.fixture(scope="module")
def logged_model_uri(synthetic_predictor) -> str:
    config.ensure_experiment("HealthPredict_Tests")
    with mlflow.start_run():
        return model.log_readmission_model(synthetic_predictor).model_uri


def test_round_trip_predictions_equal_in_process(synthetic_predictor, logged_model_uri):
    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(50, seed=99).drop(columns=[columns.LABEL_COLUMN])
    served = loaded.predict(frame)
    in_process = synthetic_predictor.predict(frame[list(columns.INPUT_COLUMNS)])
    assert list(served.columns) == ["prediction", "probability_score"]
    np.testing.assert_array_equal(served["prediction"], in_process["prediction"])
    np.testing.assert_allclose(served["probability_score"], in_process["probability_score"])
    assert served["prediction"].isin([0, 1]).all()
    assert served["probability_score"].between(0, 1).all()


def test_predictions_keep_input_order_and_single_rows_agree(logged_model_uri):
    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(30, seed=5).drop(columns=[columns.LABEL_COLUMN])
    batch = loaded.predict(frame)["probability_score"].to_numpy()
    reversed_batch = loaded.predict(frame.iloc[::-1])["probability_score"].to_numpy()
    np.testing.assert_allclose(batch, reversed_batch[::-1])
    singles = [loaded.predict(frame.iloc[[i]])["probability_score"].iloc[0] for i in range(5)]
    np.testing.assert_allclose(batch[:5], singles)


def test_missing_values_in_nullable_columns_are_not_errors(logged_model_uri):
    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(3, seed=8).drop(columns=[columns.LABEL_COLUMN])
    frame = frame.astype(object)
    for name in columns.NULLABLE_COLUMNS:
        frame[name] = None
    output = loaded.predict(frame)
    assert output["probability_score"].notna().all()


def test_logged_model_declares_signature_example_and_pinned_requirements(logged_model_uri):
    info = mlflow.models.get_model_info(logged_model_uri)
    input_names = set(info.signature.inputs.input_names())
    assert set(columns.INPUT_COLUMNS) <= input_names
    assert info.signature.outputs.input_names() == ["prediction", "probability_score"]
    assert info.signature.params.to_dict() == [
        {"name": "reasons", "type": "long", "default": 0, "shape": None}
    ]
    pins = Path(mlflow.pyfunc.get_model_dependencies(logged_model_uri)).read_text().split()
    # Complete (the scoring server's own fastapi and uvicorn are there), mlflow-skinny not mlflow.
    for name in ("mlflow-skinny", "scikit-learn", "lightgbm", "pandas", "fastapi", "uvicorn"):
        assert any(pin.startswith(f"{name}==") for pin in pins), name
    assert requirements.is_complete(pins)
    # Only the fitted family's library (a LightGBM model does not pull in xgboost), nothing of
    # the tracking server or the project's other stages.
    names = {pin.split("==")[0] for pin in pins}
    unwanted = {"mlflow", "xgboost", "catboost", "pyarrow", "sqlalchemy", "ray", "evidently"}
    assert not names & (unwanted | {"apache-airflow"}), names
    example = model.example_input()
    assert example.shape == (1, len(columns.INPUT_COLUMNS))


def test_example_input_is_synthetic_and_valid():
    example = model.example_input()
    assert not set(columns.ID_COLUMNS) & set(example.columns)
    for name, allowed in columns.CATEGORY_VALUES.items():
        value = example[name].iloc[0]
        assert allowed is None or value is None or value in allowed, name


def test_loaded_model_rejects_a_frame_missing_a_required_column(logged_model_uri):
    from custom_pyfunc import validation

    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(2, seed=1).drop(columns=[columns.LABEL_COLUMN, "age"])
    with pytest.raises(validation.InvalidModelInput, match="age"):
        loaded.predict(pd.DataFrame(frame))


def test_null_lab_result_predicts_as_not_measured(logged_model_uri):
    """A null ``max_glu_serum`` / ``A1Cresult`` (what ``pd.read_csv`` makes of ``None``) is
    read as "not measured": the same answers as the text ``None``."""
    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(200, seed=5).drop(columns=[columns.LABEL_COLUMN])
    nulled = frame.copy()
    for name in columns.NOT_MEASURED_COLUMNS:
        assert (frame[name] == columns.NOT_MEASURED).any()
        nulled[name] = frame[name].astype(object).mask(frame[name] == columns.NOT_MEASURED)
    pd.testing.assert_frame_equal(loaded.predict(nulled), loaded.predict(frame))


def test_reasons_param_is_optional_validated_and_adds_reasons(logged_model_uri):
    from mlflow.exceptions import MlflowException

    from custom_pyfunc import reasons

    loaded = mlflow.pyfunc.load_model(logged_model_uri)
    frame = synthetic_encounters(40, seed=12).drop(columns=[columns.LABEL_COLUMN])
    plain = loaded.predict(frame)
    pd.testing.assert_frame_equal(loaded.predict(frame, params={"reasons": 0}), plain)
    explained = loaded.predict(frame, params={"reasons": 2})
    pd.testing.assert_frame_equal(explained[list(plain.columns)], plain)
    assert explained[reasons.RAISED].map(len).between(0, 2).all()
    assert explained[reasons.LOWERED].map(len).max() == 2
    with pytest.raises(MlflowException, match="reasons"):  # MLflow's own ParamSchema check
        loaded.predict(frame, params={"reasons": "three"})
    with pytest.raises(reasons.InvalidParams, match=r"params\.reasons"):
        loaded.predict(frame, params={"reasons": -1})
