"""Fixtures for the model area (see tests/conftest.py).

- ``trained_model``: a small but real ``steps.train.train`` run on the session's processed data
  (real Ray Tune, 2 families x 2 trials, real MLflow store), shared by every test that needs a
  logged pyfunc.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pytest

from steps.core import tracking
from steps.training import trainer

SMALL_FAMILIES = ("logreg", "lightgbm")


@dataclass(frozen=True)
class TrainedModel:
    """The training run, its best family-best run and that run's logged pyfunc URI."""

    train_run_id: str
    best_run_id: str
    model_uri: str
    families: tuple[str, ...]


@pytest.fixture(scope="session")
def trained_model(processed_data_uri: str) -> TrainedModel:
    """Train 2 families with 2 trials each on the real processed data (about a minute)."""
    train_run_id = trainer.train(
        data_uri=processed_data_uri,
        families=",".join(SMALL_FAMILIES),
        trials_per_family=2,
        time_budget_s=120,
        seed=7,
    )
    tags = mlflow.get_run(train_run_id).data.tags
    best_run_id = tags["health_predict.best_run_id"]
    model_uri = mlflow.get_run(best_run_id).data.tags[tracking.MODEL_URI_TAG]
    return TrainedModel(train_run_id, best_run_id, model_uri, SMALL_FAMILIES)
