"""A real MLflow tracking server backed by a throwaway Postgres, for tests (see tests/conftest.py).

Postgres is started with ``initdb``/``pg_ctl`` in a temporary folder on a free loopback port; when
the tests run as root, Postgres runs as an unprivileged user (``postgres`` if it exists, else
``nobody``), because it refuses to run as root. ``mlflow server`` then runs as a child process with
that database as its backend store and a temporary folder as its proxied artifact destination.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

DATABASE = "mlflow"
DATABASE_USER = "mlflow"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_os_user() -> str | None:
    """The unprivileged account to run Postgres as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _as_user(os_user: str | None, command: list[str]) -> list[str]:
    return command if os_user is None else ["runuser", "-u", os_user, "--", *command]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a fresh Postgres cluster, yield its SQLAlchemy URI, then stop it and delete it."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH: install the PostgreSQL server binaries")
    os_user = _postgres_os_user()
    root = Path(tempfile.mkdtemp(prefix="health-predict-pg-"))
    if os_user is not None:
        shutil.chown(root, user=os_user)
    data_dir, port = root / "data", free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    try:
        subprocess.run(
            _as_user(os_user, ["initdb", "-D", str(data_dir), "-U", DATABASE_USER,
                               "--auth=trust", "-E", "UTF8", "--no-sync"]),
            **quiet,
        )  # fmt: skip
        # -F: no fsync (throwaway data); -k: the Unix socket stays inside our folder.
        server_options = f"-h 127.0.0.1 -p {port} -k {root} -F"
        subprocess.run(
            _as_user(os_user, ["pg_ctl", "-D", str(data_dir), "-o", server_options,
                               "-l", str(root / "postgres.log"), "-w", "-t", "60", "start"]),
            **quiet,
        )  # fmt: skip
        try:
            subprocess.run(
                _as_user(os_user, ["createdb", "-h", "127.0.0.1", "-p", str(port),
                                   "-U", DATABASE_USER, DATABASE]),
                **quiet,
            )  # fmt: skip
            yield f"postgresql+psycopg2://{DATABASE_USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            subprocess.run(
                _as_user(os_user, ["pg_ctl", "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {process.returncode}:\n"
                + log_path.read_text(errors="replace")[-3000:]
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s:.0f} s")


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts_destination: Path) -> Iterator[str]:
    """Run ``mlflow server`` on a free loopback port; yield its URL; stop it."""
    port = free_port()
    log_path = artifacts_destination.parent / "mlflow-server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(artifacts_destination),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # Job execution (a huey consumer for GenAI jobs) is not needed and doubles the start-up cost.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        # Own process group: the server forks uvicorn workers, and we stop them all together.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(url, process, log_path, timeout_s=180)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def mlflow_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI of a real ``mlflow server`` with a Postgres backend store (session-wide)."""
    artifacts = tmp_path_factory.mktemp("mlflow-server") / "artifacts"
    with throwaway_postgres() as database_uri, mlflow_server(database_uri, artifacts) as url:
        yield url
