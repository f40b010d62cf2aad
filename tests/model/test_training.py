"""A small real HPO run (Ray Tune, 2 families): nested MLflow runs, artifacts, a loadable model."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.training import data as training_data
from steps.training import trainer

pytestmark = pytest.mark.slow

FAMILY_BEST_METRICS = (
    "val_roc_auc", "val_raw_roc_auc", "val_pr_auc", "val_brier", "test_roc_auc", "test_pr_auc",
    "test_brier", "test_recall", "test_precision", "test_f1", "test_ece", "test_lift",
    "test_calibration_slope", "test_calibration_intercept", "maxf1_threshold",
    "test_onehot_logreg_roc_auc", "test_onehot_xgboost_roc_auc",
    "test_minus_best_baseline_roc_auc_ci_low", "test_minus_best_baseline_roc_auc_ci_high",
)  # fmt: skip


def _children(run_id: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(
        experiment_names=[config.TRAINING_EXPERIMENT],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
        output_format="list",
    )


def _role(run) -> str:
    return run.data.tags.get(tracking.ROLE_TAG)


def test_training_run_has_one_family_parent_with_trials_and_one_family_best_per_family(
    trained_model,
):
    parent = mlflow.get_run(trained_model.train_run_id)
    assert _role(parent) == "training"
    assert 0 < parent.data.metrics["hpo_efficiency"] <= 1.0
    children = _children(trained_model.train_run_id)
    for family in trained_model.families:
        searches = [
            r for r in children
            if _role(r) == "family_parent" and r.data.tags[tracking.FAMILY_TAG] == family
        ]  # fmt: skip
        assert len(searches) == 1, family
        trials = _children(searches[0].info.run_id)
        assert trials and all(_role(t) == "trial" for t in trials)
        for trial in trials:
            assert 0.5 < trial.data.metrics["val_roc_auc"] < 1.0
            assert trial.data.metrics["train_time_s"] > 0
            assert trial.data.params  # the sampled hyperparameters
            assert trial.info.end_time >= trial.info.start_time
        best = [r for r in children if _role(r) == "family_best"]
        assert {r.data.tags[tracking.FAMILY_TAG] for r in best} == set(trained_model.families)


def test_family_best_runs_carry_metrics_hashes_threshold_and_artifacts(
    trained_model, processed_data_uri
):
    manifest = storage.read_json(storage.join(processed_data_uri, config.PROCESSED_MANIFEST_KEY))
    best_runs = [r for r in _children(trained_model.train_run_id) if _role(r) == "family_best"]
    for run in best_runs:
        for metric in FAMILY_BEST_METRICS:
            assert metric in run.data.metrics, metric
        assert 0 < float(run.data.params["threshold"]) < 1
        for name in training_data.SPLIT_FILES:
            tag = run.data.tags[f"health_predict.data.{name}_sha256"]
            assert tag == manifest["files"][name]["sha256"]
        artifacts = {
            a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")
        }
        for name in ("subgroups.csv", "roc_curve.png", "pr_curve.png", "calibration.png"):
            assert f"evaluation/{name}" in artifacts
        subgroups = pd.read_csv(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="evaluation/subgroups.csv"
            )
        )
        assert set(subgroups["attribute"]) == {"race", "gender", "age_group"}
        assert subgroups.groupby("attribute")["rows"].sum().nunique() == 1  # same rows each
        model_id = run.data.tags[tracking.MODEL_URI_TAG].removeprefix("models:/")
        linked = {(m.key, m.dataset_name) for m in mlflow.get_logged_model(model_id).metrics}
        assert {("val_roc_auc", "initial_validation"), ("test_roc_auc", "initial_test")} <= linked
        assert {d.dataset.name for d in run.inputs.dataset_inputs} == set(training_data.SPLIT_FILES)


def test_best_model_scores_real_test_rows_like_its_logged_metric(trained_model, processed_data_uri):
    test_uri = storage.join(processed_data_uri, config.INITIAL_TEST_KEY)
    frame = columns.read_encounters_csv(io.BytesIO(storage.read_bytes(test_uri)))
    frame = frame[columns.is_label_eligible(frame).to_numpy()]
    labels = columns.make_label(frame).to_numpy()
    loaded = mlflow.pyfunc.load_model(trained_model.model_uri)
    output = loaded.predict(frame.drop(columns=[columns.LABEL_COLUMN]))
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(labels, output["probability_score"])
    logged = mlflow.get_run(trained_model.best_run_id).data.metrics["test_roc_auc"]
    assert auc == pytest.approx(logged, abs=1e-9)
    assert auc > 0.6
    threshold = float(mlflow.get_run(trained_model.best_run_id).data.params["threshold"])
    np.testing.assert_array_equal(
        output["prediction"], (output["probability_score"] >= threshold).astype(int)
    )


def test_unknown_family_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown model families"):
        trainer.train(families="logreg,deep_forest")


def test_threshold_flags_the_alert_budget_on_validation_and_family_is_chosen_on_raw_scores(
    trained_model,
):
    runs = [r for r in _children(trained_model.train_run_id) if _role(r) == "family_best"]
    for run in runs:
        budget = float(run.data.params["alert_budget"])
        # Isotonic plateaus can make the closest achievable share differ a little from the budget.
        assert run.data.metrics["val_flag_rate"] == pytest.approx(budget, abs=0.02)
        assert run.data.metrics["maxf1_threshold"] != float(run.data.params["threshold"])
    best = max(runs, key=lambda r: r.data.metrics[tracking.SELECTION_METRIC])
    assert best.info.run_id == trained_model.best_run_id
