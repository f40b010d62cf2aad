"""A bounded soak of the real scoring server (issue 15, item 7): half a minute of mixed valid and
bad traffic at concurrency 8 against 2 workers, on loopback. ``python -m benchmarks.soak`` runs the
same for longer (10 minutes by default) and prints the figures."""

from __future__ import annotations

import os

import pytest

from benchmarks import soak
from steps.deployment import server
from tests.api.test_scoring_api import encounter_records

pytestmark = pytest.mark.slow

DURATION_S = 30


def test_soak_has_no_5xx_no_dropped_connection_flat_rss_and_fast_ping(request):
    if os.environ.get("API_BASE_URL"):
        pytest.skip("API_BASE_URL is set: soak the deployed service with benchmarks.soak")
    model_uri = request.getfixturevalue("trained_model").model_uri
    with server.serve_model(model_uri, workers=soak.WORKERS, startup_timeout_s=600) as base_url:
        result = soak.soak(base_url, encounter_records(200, seed=13), DURATION_S)
    print(result)
    assert result.requests > 100 and result.ok > 0 and result.client_errors > 0
    assert result.server_errors == 0
    assert result.dropped_connections == 0
    assert result.worker_rss_growth < 0.10
    assert result.ping_p99_ms < 200
