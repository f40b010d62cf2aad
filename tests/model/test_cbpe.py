"""CBPE (``steps.monitoring.cbpe``): performance estimated without labels, against realised labels.

On simulated labels drawn from known probabilities (the method's premise), and on a real held-out
batch (``initial_test``, never seen by the model) scored by a real trained pyfunc.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from custom_pyfunc import columns
from steps.core import config, storage
from steps.evaluation import evaluate
from steps.monitoring import cbpe

# Needs the session's trained model (real Ray Tune training): not part of make test-fast.
pytestmark = pytest.mark.slow


def test_estimate_equals_the_mean_realised_roc_auc_when_probabilities_are_calibrated():
    rng = np.random.default_rng(0)
    probability = rng.beta(1.2, 8.0, 3000)  # labels below are drawn from these: calibrated
    realised = [roc_auc_score(rng.random(probability.size) < probability, probability)
                for _ in range(300)]  # fmt: skip
    # The mean of 300 realised values has a standard error of about 0.001; 0.004 is 4 of them.
    assert cbpe.estimated_roc_auc(probability) == pytest.approx(np.mean(realised), abs=0.004)
    assert cbpe.estimate(probability)["observed_rate"] == pytest.approx(probability.mean())


def test_estimate_refuses_values_that_are_not_probabilities():
    with pytest.raises(ValueError, match="probabilities in"):
        cbpe.estimated_roc_auc(np.array([0.2, 1.3]))
    with pytest.raises(ValueError, match="non-empty"):
        cbpe.estimated_roc_auc(np.array([]))


def test_estimate_on_a_real_held_out_batch_is_within_its_sampling_error(
    trained_model, processed_data_uri
):
    uri = storage.join(processed_data_uri, config.INITIAL_TEST_KEY)
    rows, labels = evaluate.labelled_rows(columns.read_encounters_csv(storage.read_bytes(uri)))
    model = mlflow.pyfunc.load_model(trained_model.model_uri)
    probability = model.predict(rows[list(columns.INPUT_COLUMNS)])["probability_score"].to_numpy()
    realised = roc_auc_score(labels, probability)
    positives = int(labels.sum())
    se = cbpe.hanley_mcneil_se(realised, positives, labels.size - positives)
    # The realised ROC-AUC is one draw around the value CBPE estimates; on ~3,000 rows its
    # standard error is about 0.015, so a calibrated model's estimate lies within 3 of them
    # (a 0.3% chance of failing by bad luck).
    estimated = cbpe.estimate(probability)
    assert abs(estimated["roc_auc"] - realised) < 3 * se, (estimated, realised, se)
    rate_se = np.sqrt(labels.mean() * (1 - labels.mean()) / labels.size)
    assert abs(estimated["observed_rate"] - labels.mean()) < 3 * rate_se
    # CBPE trusts the calibration: the same ranking with distorted probabilities is misjudged.
    distorted = cbpe.estimated_roc_auc(probability**0.3)
    assert abs(distorted - realised) > 3 * se
