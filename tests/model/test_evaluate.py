"""Evaluation helpers on constructed scores with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.evaluation import calibration, evaluate, subgroups
from tests.fixtures_data import synthetic_encounters


def test_expected_calibration_error_is_zero_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    probability = rng.uniform(0, 1, 200_000)
    outcomes = (rng.uniform(0, 1, probability.size) < probability).astype(int)
    assert calibration.expected_calibration_error(outcomes, probability) < 0.01
    assert calibration.expected_calibration_error(outcomes, probability / 2) == pytest.approx(
        0.25, abs=0.01
    )


def test_best_f1_threshold_separates_perfectly_separable_scores():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    threshold = evaluate.best_f1_threshold(labels, scores)
    assert 0.3 < threshold <= 0.7
    assert evaluate.classification_metrics(labels, scores, threshold)["f1"] == 1.0


def test_subgroup_table_counts_recall_and_auc_per_group():
    frame = synthetic_encounters(300, seed=4)
    labels = columns.make_label(frame).to_numpy()
    scores = labels * 0.9 + 0.05  # perfect ranking
    groups = subgroups.subgroups_of(frame)
    table = subgroups.subgroup_table(labels, scores, scores >= 0.5, groups, min_positives=5)
    for attribute in subgroups.ATTRIBUTES:
        assert table.loc[table["attribute"] == attribute, "rows"].sum() == len(frame)
    with_positives = table[table["positives"] > 0]
    assert (with_positives["recall"] == 1.0).all()
    assert table["roc_auc"].dropna().eq(1.0).all()
    assert table["judged"].eq(table["positives"] >= 5).all()


def test_missing_race_gender_and_age_are_one_unknown_group():
    frame = pd.DataFrame(
        {"race": [None, "Asian"], "gender": ["Male", None], "age": ["[50-60)", "[100-110)"]}
    )
    groups = subgroups.subgroups_of(frame)
    assert list(groups["race"]) == [subgroups.UNKNOWN, "Asian"]
    assert list(groups["gender"]) == ["Male", subgroups.UNKNOWN]
    assert list(groups["age_group"]) == ["40-59", subgroups.UNKNOWN]


def test_calibration_table_has_quantile_bins_and_gives_the_ece():
    rng = np.random.default_rng(3)
    probability = rng.uniform(0, 1, 10_000)
    outcomes = (rng.uniform(0, 1, probability.size) < probability / 2).astype(int)
    table = calibration.calibration_table(outcomes, probability)
    assert len(table) == 10 and table["rows"].eq(1000).all()
    gap = (table["mean_predicted"] - table["observed_rate"]).abs().mean()
    assert calibration.expected_calibration_error(outcomes, probability) == pytest.approx(gap)


def test_labelled_rows_drop_death_and_hospice():
    frame = synthetic_encounters(200, seed=2)
    eligible, labels = evaluate.labelled_rows(frame)
    dispositions = pd.to_numeric(eligible["discharge_disposition_id"])
    assert not dispositions.isin(columns.DEATH_OR_HOSPICE_DISPOSITIONS).any()
    assert len(eligible) == len(labels) < len(frame)


def test_write_evaluation_produces_metrics_plots_and_subgroups(tmp_path):
    frame = synthetic_encounters(200, seed=6)
    labels = columns.make_label(frame).to_numpy()
    scores = np.random.default_rng(1).uniform(0, 1, len(frame))
    written = evaluate.write_evaluation(frame, labels, scores, 0.5, tmp_path, "random scores")
    assert 0.3 < written["roc_auc"] < 0.7
    for name in (
        "metrics.json",
        "subgroups.csv",
        "roc_curve.png",
        "pr_curve.png",
        "calibration.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
