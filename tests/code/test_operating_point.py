"""Issue 14 training side on made-up rows: alert-budget threshold, patient-disjoint gate data,
the CatBoost family with its frozen-estimator calibration, and the fair baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from custom_pyfunc import columns, features
from custom_pyfunc.model import pinned_requirements
from custom_pyfunc.predictor import ReadmissionPredictor
from custom_pyfunc.preprocessing import FeatureEncoder
from steps.core import storage
from steps.core.tracking import DATA_TAG_PREFIX
from steps.evaluation import baselines, evaluate, patients
from steps.registry import candidates
from steps.training import families, fitting
from tests.fixtures_data import synthetic_encounters


@pytest.mark.parametrize("budget", [0.05, 0.1, 0.25])
def test_alert_budget_threshold_flags_the_budget_share_of_validation(budget):
    scores = np.random.default_rng(0).beta(2, 12, size=3000)
    threshold = evaluate.alert_budget_threshold(scores, budget)
    assert (scores >= threshold).mean() == pytest.approx(budget, abs=1 / 3000)


def test_alert_budget_threshold_with_tied_scores_flags_the_closest_share():
    # Isotonic calibration makes plateaus: 30% of rows tie at the top score, 40% at the next.
    scores = np.repeat([0.4, 0.2, 0.1, 0.05], [300, 400, 200, 100])
    assert evaluate.alert_budget_threshold(scores, 0.1) == 0.4  # 30% flagged beats 70%
    with pytest.raises(ValueError, match="alert budget"):
        evaluate.alert_budget_threshold(scores, 1.5)


def test_metrics_at_the_budget_report_flag_rate_precision_recall_and_lift():
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.1, 0.1, 0.2, 0.1, 0.1])
    values = evaluate.classification_metrics(labels, scores, threshold=0.8)
    assert values["flag_rate"] == 0.2
    assert values["precision"] == 0.5 and values["recall"] == 0.5
    assert values["lift"] == pytest.approx(0.5 / 0.2)


def test_patient_overlap_is_excluded_counted_and_asserted():
    evaluation = synthetic_encounters(200, seed=1)
    training = synthetic_encounters(300, seed=2)
    training.loc[:4, "patient_nbr"] = evaluation["patient_nbr"].iloc[:5].to_numpy()  # inject
    training_ids = set(patients.patient_ids(training, "training"))
    with pytest.raises(patients.PatientOverlapError, match=r"patient\(s\) of the evaluation") as e:
        patients.assert_disjoint(evaluation, training_ids)
    assert not any(str(p) in str(e.value) for p in evaluation["patient_nbr"])  # counts only
    disjoint = patients.exclude_training_patients(evaluation, training_ids)
    shared = evaluation["patient_nbr"].isin(training["patient_nbr"])
    assert disjoint.rows_excluded == int(shared.sum()) >= 5
    assert disjoint.patients_excluded == evaluation.loc[shared, "patient_nbr"].nunique()
    patients.assert_disjoint(evaluation[disjoint.keep], training_ids)  # nothing left to find


def test_gate_data_loses_the_patients_of_every_training_file(tmp_path):
    evaluation_frame = synthetic_encounters(300, seed=3)
    train_frame, validation_frame = synthetic_encounters(200, seed=4), synthetic_encounters(100, 5)
    train_frame.loc[:2, "patient_nbr"] = evaluation_frame["patient_nbr"].iloc[:3].to_numpy()
    validation_frame.loc[:1, "patient_nbr"] = evaluation_frame["patient_nbr"].iloc[3:5].to_numpy()
    tags = {}
    for name, frame in (("initial_train", train_frame), ("initial_validation", validation_frame)):
        uri = str(tmp_path / f"{name}.csv")
        storage.write_bytes(uri, columns.to_raw_csv_bytes(frame))
        tags[f"{DATA_TAG_PREFIX}{name}_uri"] = uri
    eval_uri = str(tmp_path / "eval.csv")
    storage.write_bytes(eval_uri, columns.to_raw_csv_bytes(evaluation_frame))
    evaluation = candidates.load_evaluation_data(eval_uri)
    kept, counts = candidates.disjoint_from_training(evaluation, tags)
    seen = set(train_frame["patient_nbr"]) | set(validation_frame["patient_nbr"])
    assert not set(kept.frame["patient_nbr"]) & seen
    assert int(counts["eval_rows_excluded_patient_overlap"]) == len(evaluation.frame) - len(
        kept.frame
    )
    assert int(counts["eval_patients_excluded_overlap"]) >= 5
    assert kept.summary.rows == len(kept.labels) == len(kept.frame)
    assert counts["patient_overlap_check"] == "passed"
    # A training file changed since training cannot vouch for disjointness.
    tags[f"{DATA_TAG_PREFIX}initial_train_sha256"] = "0" * 64
    with pytest.raises(candidates.RegistrationError, match="changed since training"):
        candidates.disjoint_from_training(evaluation, tags)


def _engineered(frame: pd.DataFrame):
    rows, labels = evaluate.labelled_rows(frame)
    return rows, features.engineer_features(features.clean_data(rows)), labels


def test_catboost_family_fits_calibrates_and_predicts_single_rows():
    _, x_train, y_train = _engineered(synthetic_encounters(600, seed=6))
    raw_val, x_val, y_val = _engineered(synthetic_encounters(400, seed=7))
    params = {"n_estimators": 20, "learning_rate": 0.1, "depth": 3, "l2_leaf_reg": 3.0}
    pipeline = Pipeline(
        [
            ("features", FeatureEncoder(encoding=families.ENCODING["catboost"])),
            ("model", families.build_estimator("catboost", params, seed=0, n_jobs=1)),
        ]
    ).fit(x_train, y_train)
    calibrated, briers = fitting.calibrate(pipeline, x_val, y_val, seed=0)
    assert set(briers) == {"none", "sigmoid", "isotonic"}
    best = min(briers, key=briers.get)
    assert (calibrated.method if calibrated is not None else "none") == best
    predictor = ReadmissionPredictor(
        pipeline, threshold=0.5, family="catboost", calibrated=calibrated
    )
    batch = predictor.predict(raw_val)
    single = predictor.predict(raw_val.iloc[[3]])
    assert single["probability_score"].iloc[0] == pytest.approx(batch["probability_score"].iloc[3])
    assert batch["probability_score"].between(0, 1).all()
    assert any(r.startswith("catboost==") for r in pinned_requirements(predictor))


@pytest.mark.parametrize("family", ["logreg", "lightgbm", "catboost"])
@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibrated_probability_is_scikit_learns_own(family, method):
    """The served shortcut through the calibrators equals ``CalibratedClassifierCV``'s answer,
    for a family with a decision function (logreg, lightgbm) and one without (catboost)."""
    _, x_train, y_train = _engineered(synthetic_encounters(600, seed=6))
    _, x_val, y_val = _engineered(synthetic_encounters(400, seed=7))
    params = {"logreg": {"C": 1.0}, "lightgbm": {"n_estimators": 20, "num_leaves": 7},
              "catboost": {"n_estimators": 20, "depth": 3}}[family]  # fmt: skip
    pipeline = Pipeline(
        [
            ("features", FeatureEncoder(encoding=families.ENCODING[family])),
            ("model", families.build_estimator(family, params, seed=0, n_jobs=1)),
        ]
    ).fit(x_train, y_train)
    calibrated = CalibratedClassifierCV(FrozenEstimator(pipeline), method=method).fit(x_val, y_val)
    predictor = ReadmissionPredictor(pipeline, threshold=0.5, family=family, calibrated=calibrated)
    expected = calibrated.predict_proba(x_val)[:, 1]
    np.testing.assert_allclose(predictor._probability(x_val), expected, rtol=0, atol=1e-12)
    assert np.ptp(expected) > 0


def test_baselines_score_raw_rows_and_compare_with_a_paired_interval():
    frame = synthetic_encounters(800, seed=8)
    rows, labels = evaluate.labelled_rows(frame)
    fitted = baselines.fit_baselines(rows.iloc[:500], labels[:500])
    scores = baselines.baseline_scores(fitted, rows.iloc[500:])
    assert set(scores) == set(baselines.BASELINES)
    held_out = labels[500:]
    best, metrics = baselines.comparison_metrics(held_out, scores["onehot_xgboost"], scores, "t")
    low, high = (
        metrics["t_minus_best_baseline_roc_auc_ci_low"],
        metrics["t_minus_best_baseline_roc_auc_ci_high"],
    )
    assert low <= metrics["t_minus_best_baseline_roc_auc"] <= high
    if best == "onehot_xgboost":
        assert metrics["t_minus_best_baseline_roc_auc"] == 0
