"""Fixtures for the serving area (see tests/conftest.py).

- ``scoring_service``: a real ``mlflow models serve`` process on a free loopback port serving the
  session's freshly trained model (``trained_model``), with its log captured to a file. With
  ``API_BASE_URL`` set, the same API tests run against that deployed service instead (then
  ``API_MODEL_URI`` names the model it serves, for the in-process comparison, and
  ``API_MAX_BATCH_ROWS`` its batch limit, default 10,000).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from custom_pyfunc import validation
from steps import serve

# A small batch limit keeps the oversized-batch test cheap against the local server.
LOCAL_MAX_BATCH_ROWS = 200


@dataclass(frozen=True)
class ScoringService:
    """A running scoring server: where it is, what it serves, where its log goes (local only)."""

    base_url: str
    model_uri: str | None
    log_path: Path | None
    max_batch_rows: int


@pytest.fixture(scope="session")
def scoring_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoringService]:
    """The scoring server under test: local (freshly trained model) or ``API_BASE_URL``."""
    if base_url := os.environ.get("API_BASE_URL"):
        yield ScoringService(
            base_url=base_url.rstrip("/"),
            model_uri=os.environ.get("API_MODEL_URI") or None,
            log_path=None,
            max_batch_rows=int(
                os.environ.get("API_MAX_BATCH_ROWS", validation.DEFAULT_MAX_BATCH_ROWS)
            ),
        )
        return
    trained_model = request.getfixturevalue("trained_model")
    log_path = tmp_path_factory.mktemp("serving") / "scoring-server.log"
    limit = {validation.MAX_BATCH_ROWS_ENV: str(LOCAL_MAX_BATCH_ROWS)}
    with serve.serve_model(
        trained_model.model_uri, workers=1, log_path=log_path, extra_env=limit
    ) as base_url:
        yield ScoringService(base_url, trained_model.model_uri, log_path, LOCAL_MAX_BATCH_ROWS)
