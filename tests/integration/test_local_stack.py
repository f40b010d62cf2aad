"""scripts/local_stack.sh end to end: the services stack of docker-compose.yml as real processes
(Postgres via initdb/pg_ctl, ``mlflow server`` on it, Airflow's api-server, scheduler,
dag-processor and triggerer on it), its secrets kept off command lines and its ports on loopback,
then ``stop``. Training and registration against its MLflow server are checked on the Airflow
scenario's own training run (tests/integration/test_airflow_stack.py), which runs on this stack.

The stack is the session's shared one (tests/integration/conftest.py); ``stop`` is tested last.
Docker itself cannot run here, so this is the closest the compose stack gets to running.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import psutil
import psycopg2
import pytest
import requests

from tests.integration.conftest import AIRFLOW_COMPONENTS, LocalStack

SERVICES = ("mlflow", *(f"airflow-{component}" for component in AIRFLOW_COMPONENTS))

pytestmark = pytest.mark.slow


def test_status_reports_every_service_up(local_stack: LocalStack):
    result = local_stack.script("status", timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("postgres", "mlflow", "airflow", *(f"airflow {c}" for c in AIRFLOW_COMPONENTS)):
        assert f"{service}: up" in result.stdout


def _stack_pids(local_stack: LocalStack) -> set[int]:
    """Every process of the stack: each service's process group and the Postgres server."""
    groups = {local_stack.pid(service) for service in SERVICES}
    postmaster = local_stack.directory / "postgres" / "data" / "postmaster.pid"
    postgres = psutil.Process(int(postmaster.read_text().split()[0]))
    pids = {postgres.pid, *(child.pid for child in postgres.children(recursive=True))}
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in groups:
                pids.add(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return pids


def test_secrets_never_appear_on_a_command_line(local_stack: LocalStack):
    secrets = {
        name: value
        for name, value in local_stack.secrets().items()
        if "PASSWORD" in name or "SECRET" in name or "KEY" in name
    }
    assert len(secrets) >= 6, sorted(secrets)
    pids = _stack_pids(local_stack)
    assert len(pids) >= 6
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        leaked = [name for name, value in secrets.items() if value in cmdline]
        assert not leaked, f"{leaked} on the command line of pid {process.info['pid']}"


def test_every_service_listens_on_loopback_only(local_stack: LocalStack):
    pids = _stack_pids(local_stack)
    listening = [
        c for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]  # fmt: skip
    ports = {int(local_stack.secrets()[f"LOCAL_STACK_{name}_PORT"]) for name in
             ("PG", "MLFLOW", "AIRFLOW")}  # fmt: skip
    assert ports <= {c.laddr.port for c in listening}
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, [
        (c.pid, c.laddr) for c in listening if c.laddr.ip != "127.0.0.1"
    ]


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
        cursor.execute("SELECT slots FROM slot_pool WHERE pool = 'health_predict_register'")
        assert cursor.fetchone() == (1,), "the register pool (docker/airflow/pools.sh), one slot"


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
