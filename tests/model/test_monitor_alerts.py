"""The monitor's alerts (``steps.monitoring.decision.judge``) on real encounters: a null batch
raises none, each injected harm raises its kind, drift never alerts.

Scores come from a logistic regression on the count columns of ``initial_train``, fitted here
(a second; the session's Ray-trained model is for the slow end-to-end test in test_monitor.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from custom_pyfunc import columns
from steps.core import config, storage
from steps.evaluation import evaluate
from steps.monitoring import decision, performance, quality

ROWS = 5000
BUDGET = 0.1
COUNTS = list(columns.COUNT_RANGES)


def _read(data_uri: str, key: str) -> pd.DataFrame:
    return columns.read_encounters_csv(storage.read_bytes(storage.join(data_uri, key)))


@pytest.fixture(scope="module")
def setting(processed_data_uri):
    """A model, its baseline on one half of initial_test's rows and the other half to draw
    batches from (both with the model's threshold set at the budget on the baseline)."""
    train, label = evaluate.labelled_rows(_read(processed_data_uri, config.INITIAL_TRAIN_KEY))
    model = LogisticRegression(max_iter=1000).fit(train[COUNTS], label)
    test = _read(processed_data_uri, config.INITIAL_TEST_KEY)
    patients = test["patient_nbr"].drop_duplicates().sample(frac=0.5, random_state=1)
    half = test["patient_nbr"].isin(patients)
    base_rows, base_label = evaluate.labelled_rows(test[half])
    base_p = model.predict_proba(base_rows[COUNTS])[:, 1]
    threshold = evaluate.alert_budget_threshold(base_p, BUDGET)
    baseline = {"target": base_label, "probability_score": base_p,
                "prediction": (base_p >= threshold).astype(int)}  # fmt: skip
    return model, threshold, baseline, test[~half].reset_index(drop=True)


def _draw(pool: pd.DataFrame, seed: int) -> pd.DataFrame:
    return pool.sample(ROWS, replace=True, random_state=seed).reset_index(drop=True)


def _arrays(model, threshold, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    rows, label = evaluate.labelled_rows(frame)
    p = model.predict_proba(rows[COUNTS])[:, 1]
    return {"target": label, "probability_score": p, "prediction": (p >= threshold).astype(int)}


def _judge(setting, batch, matured=None, target=None, recent=None):
    """The sections of ``batch`` (its own labels mature unless ``matured`` is given)."""
    model, threshold, baseline, pool = setting
    labelled = _arrays(model, threshold, batch if matured is None else matured)
    if target is not None:
        labelled["target"] = target
    scored = _arrays(model, threshold, batch)
    recent = recent if recent is not None else [_draw(pool, 101), _draw(pool, 102)]
    thresholds = decision.Thresholds.defaults()
    return decision.judge(batch, scored["prediction"], scored["probability_score"], recent,
                          labelled, baseline, BUDGET, thresholds)  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_null_batch_raises_no_alert(setting, seed):
    sections = _judge(setting, _draw(setting[3], seed))
    assert decision.alerts(sections) == [], [s["reasons"] for s in sections.values() if s]
    assert sections["performance"]["roc_auc"]["batch"] > 0.55
    assert sections["estimated_performance"]["rows"] > 0.9 * ROWS


def test_permuted_labels_raise_a_performance_alert(setting):
    batch = _draw(setting[3], 4)
    target = np.random.default_rng(0).permutation(evaluate.labelled_rows(batch)[1])
    sections = _judge(setting, batch, target=target)
    assert decision.alerts(sections) == ["performance"]
    assert any("ROC-AUC" in reason for reason in sections["performance"]["reasons"])


def test_a_halved_observed_rate_raises_a_calibration_alert(setting):
    batch = _draw(setting[3], 5)
    target = evaluate.labelled_rows(batch)[1].copy()
    positives = np.flatnonzero(target)
    target[positives[::2]] = 0
    sections = _judge(setting, batch, target=target)
    assert decision.alerts(sections) == ["performance"]
    assert any("calibration" in reason for reason in sections["performance"]["reasons"])
    assert sections["performance"]["calibration"]["observed_over_expected"] < 0.7


def test_a_unit_change_raises_a_data_quality_alert(setting):
    batch = _draw(setting[3], 6)
    batch["num_lab_procedures"] = batch["num_lab_procedures"] // 3  # whole, within range
    sections = _judge(setting, batch)
    assert "data_quality" in decision.alerts(sections)
    reasons = sections["data_quality"]["reasons"]
    assert reasons and all(r.startswith("num_lab_procedures: mean moved") for r in reasons)


def test_an_emptied_column_raises_a_data_quality_alert(setting):
    batch = _draw(setting[3], 7)
    batch["race"] = None
    sections = _judge(setting, batch)
    assert decision.alerts(sections) == ["data_quality"]
    assert any(r.startswith("race: entirely empty") for r in sections["data_quality"]["reasons"])


def test_the_missing_share_bound_accounts_for_batch_size(setting):
    """The same 12-point jump in a column's missing share alerts on 5,000 rows, not on 60."""
    pool = setting[3]
    recent = [_draw(pool, 103)]
    for rows, alert in ((5000, True), (60, False)):
        batch = pool.sample(rows, replace=True, random_state=8).reset_index(drop=True)
        batch.loc[: int(0.12 * rows) - 1, "diag_3"] = None
        found = quality.assess_quality(batch, recent, margin=0.05, unit_factor=2.0, z=3.0)
        assert found["alert"] is alert, found["reasons"]


def test_drift_never_alerts_and_the_status_line_names_the_kinds():
    sections = {"drift": {"alert": True}, "performance": {"alert": True},
                "data_quality": {"alert": True}, "estimated_performance": None}  # fmt: skip
    assert decision.alerts(sections) == ["data_quality", "performance"]
    assert decision.status_line(decision.alerts(sections)) == "ALERT data_quality,performance"
    assert decision.status_line([]) == "OK"


def test_delong_standard_error_matches_the_spread_of_resampled_auc():
    rng = np.random.default_rng(3)
    target = rng.random(4000) < 0.1
    scores = rng.normal(size=4000) + 0.8 * target
    _, se = performance.delong_auc(target, scores)
    draws = [rng.integers(0, 4000, 4000) for _ in range(300)]
    spread = np.std([performance.delong_auc(target[i], scores[i])[0] for i in draws])
    assert se == pytest.approx(spread, rel=0.2)


def test_a_batch_of_empty_inputs_names_every_emptied_column(setting):
    batch = _draw(setting[3], 9)
    batch[list(columns.INPUT_COLUMNS)] = None
    found = quality.assess_quality(batch, [_draw(setting[3], 104)], 0.05, 2.0, 3.0)
    emptied = {r.split(":")[0] for r in found["reasons"] if "entirely empty" in r}
    held_values = {c for c in columns.INPUT_COLUMNS if _draw(setting[3], 104)[c].notna().any()}
    assert found["alert"] and emptied == held_values
