"""scripts/local_stack.sh end to end: the services stack of docker-compose.yml as real processes
(Postgres via initdb/pg_ctl, ``mlflow server`` on it, ``airflow standalone`` on it), a small
training and a registration against its MLflow server, then ``stop``.

The stack runs in its own temporary folder on free ports, and is stopped and deleted even when a
test fails. Docker itself cannot run here, so this is the closest the compose stack gets to running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import psycopg2
import pytest
import requests
from mlflow import MlflowClient

from steps import register, train
from steps.core import config
from steps.core.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "local_stack.sh"
SERVICES = ("mlflow", "airflow")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("initdb") is None, reason="PostgreSQL server binaries absent"),
]


@dataclass(frozen=True)
class LocalStack:
    """A running local stack: its folder, the variables of its env file and its start time."""

    directory: Path
    env: dict[str, str]
    start_s: float

    def script(self, command: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env={**os.environ, "LOCAL_STACK_DIR": str(self.directory)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def pid(self, service: str) -> int | None:
        path = self.directory / f"{service}.pid"
        return int(path.read_text()) if path.exists() else None


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME='value'`` lines of the stack's env file."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value.strip("'")
    return env


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    # Not pytest's tmp_path: Postgres runs as an unprivileged user and must reach this folder.
    directory = Path(tempfile.mkdtemp(prefix="health-predict-stack-"))
    directory.chmod(0o755)
    stack = LocalStack(directory=directory, env={}, start_s=0.0)
    try:
        started = time.monotonic()
        result = stack.script("start")
        assert result.returncode == 0, f"start failed:\n{result.stderr[-4000:]}"
        stack = LocalStack(
            directory=directory,
            env=read_env_file(directory / "stack.env"),
            start_s=time.monotonic() - started,
        )
        print(f"\nlocal stack started in {stack.start_s:.1f} s")
        yield stack
    finally:
        stack.script("stop", timeout_s=180)
        shutil.rmtree(directory, ignore_errors=True)


def test_status_reports_every_service_up(local_stack: LocalStack):
    result = local_stack.script("status", timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("postgres", *SERVICES):
        assert f"{service}: up" in result.stdout


def test_env_file_is_private_and_points_at_loopback(local_stack: LocalStack):
    env_file = local_stack.directory / "stack.env"
    assert env_file.stat().st_mode & 0o077 == 0, "the env file holds passwords: mode 600"
    for name in ("MLFLOW_TRACKING_URI", "AIRFLOW_URL"):
        assert urlsplit(local_stack.env[name]).hostname == "127.0.0.1"


def test_airflow_runs_on_the_stack_postgres(local_stack: LocalStack):
    health = requests.get(f"{local_stack.env['AIRFLOW_URL']}/api/v2/monitor/health", timeout=10)
    assert health.ok
    assert health.json()["metadatabase"]["status"] == "healthy"
    dsn = local_stack.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM alembic_version")
        assert cursor.fetchone()[0] == 1, "Airflow's migrations ran on the stack's database"


@pytest.fixture
def stack_tracking(local_stack: LocalStack) -> Iterator[str]:
    """Point this process's MLflow client at the stack's server for one test, then restore."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = local_stack.env["MLFLOW_TRACKING_URI"]
    config.configure_mlflow()
    try:
        yield local_stack.env["MLFLOW_TRACKING_URI"]
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
        config.configure_mlflow()


def test_training_and_registration_against_the_stack(
    local_stack: LocalStack, stack_tracking: str, processed_data_uri: str
):
    started = time.monotonic()
    train_run_id = train.train(
        data_uri=processed_data_uri, families="logreg", trials_per_family=2, time_budget_s=300
    )
    decision = register.register(train_run_id=train_run_id)
    print(f"\ntrain + register against the local stack: {time.monotonic() - started:.1f} s")

    client = MlflowClient(tracking_uri=stack_tracking, registry_uri=stack_tracking)
    assert client.get_run(train_run_id).data.tags["health_predict.role"] == "training"
    version = client.get_model_version(config.MODEL_NAME, decision.version)
    assert version.status == "READY"
    # First model on a fresh registry: the gate has no champion to beat.
    assert decision.promoted, decision.reason
    champion = client.get_model_version_by_alias(config.MODEL_NAME, config.CHAMPION_ALIAS)
    assert champion.version == decision.version

    # The runs and the registry live in the stack's Postgres ...
    dsn = local_stack.env["MLFLOW_BACKEND_STORE_URI"].replace("+psycopg2", "")
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (train_run_id,))
        assert cursor.fetchone()[0] == 1
        cursor.execute(
            "SELECT count(*) FROM model_versions WHERE name = %s AND version = %s",
            (config.MODEL_NAME, int(decision.version)),
        )
        assert cursor.fetchone()[0] == 1
    # ... and the model's files went through the server into its artifact destination.
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/{config.MODEL_NAME}/{decision.version}")
    )
    assert (model_dir / "MLmodel").is_file()
    stored = list((local_stack.directory / "mlflow-artifacts").rglob("MLmodel"))
    assert stored, "no model landed in the stack's artifact destination"


def test_stop_ends_every_process(local_stack: LocalStack):
    pids = {service: local_stack.pid(service) for service in SERVICES}
    assert all(pids.values()), pids
    result = local_stack.script("stop", timeout_s=180)
    assert result.returncode == 0, result.stderr
    for service, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # signal 0: does any process of the group still exist?
        assert not (local_stack.directory / f"{service}.pid").exists()
    status = local_stack.script("status", timeout_s=60)
    assert status.returncode == 3
    assert "postgres: down" in status.stdout
