"""Session-wide test environment: the real dataset, and throwaway MLflow and data stores.

Nothing a test does lands in the project's own ``data/``, ``mlflow.db`` or ``mlartifacts/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from steps.core import config

# Fixture modules, one per area, so that each area's fixtures live beside each other.
pytest_plugins = [
    "tests.fixtures_data",
    "tests.fixtures_model",
    "tests.fixtures_mlflow_server",
    "tests.fixtures_serving",
    "tests.fixtures_airflow",
    "tests.fixtures_docker",
]

SHARED_ZIP = config.PROJECT_ROOT.parent / "shared" / "data" / "dataset_diabetes.zip"


def _raw_data_source() -> str:
    source = os.environ.get("HEALTH_PREDICT_RAW_DATA")
    if not source:
        source = str(SHARED_ZIP) if SHARED_ZIP.exists() else config.UCI_DATASET_URL
    is_url = source.startswith(("http://", "https://"))
    if not is_url and not Path(source).exists():
        message = f"HEALTH_PREDICT_RAW_DATA points at {source}, which does not exist"
        if os.environ.get("CI") == "true":
            raise RuntimeError(message + " (under CI a missing dataset is an error)")
        pytest.exit(message, returncode=2)
    return source


@pytest.fixture(scope="session", autouse=True)
def session_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Point every store at a per-session temporary folder and the raw data at the real dataset."""
    root = tmp_path_factory.mktemp("stores")
    env = {
        "HEALTH_PREDICT_RAW_DATA": _raw_data_source(),
        "HEALTH_PREDICT_DATA_URI": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "HEALTH_PREDICT_ARTIFACT_URI": (root / "mlartifacts").as_uri(),
        "RAY_USAGE_STATS_ENABLED": "0",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    config.configure_mlflow()
    yield env
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def raw_data_source(session_stores: dict[str, str]) -> str:
    """Path or URL of the real dataset (the shared zip in CI)."""
    return session_stores["HEALTH_PREDICT_RAW_DATA"]


QUARANTINE = Path(__file__).with_name("quarantine.txt")


def _quarantined() -> dict[str, str]:
    """Test node-id prefixes listed in tests/quarantine.txt, with the reason after ``#``."""
    entries = {}
    for line in QUARANTINE.read_text().splitlines():
        prefix, _, reason = line.partition("#")
        if prefix.strip():
            entries[prefix.strip()] = reason.strip()
    return entries


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the recorded reason, each test listed in tests/quarantine.txt (all of them run
    when HEALTH_PREDICT_RUN_QUARANTINED=1)."""
    entries = {} if os.environ.get("HEALTH_PREDICT_RUN_QUARANTINED") == "1" else _quarantined()
    for item in items:
        for prefix, reason in entries.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.skip(reason=f"quarantined: {reason}"))
