"""One ``scripts/local_stack.sh`` stack per session (Postgres, ``mlflow server``, Airflow's
api-server, scheduler, dag-processor and triggerer as real processes), shared by every test that
needs it: starting Airflow costs about a minute, so it is started once.

The stack runs in its own temporary folder on free loopback ports, with a data store of its own
(``HEALTH_PREDICT_DATA_URI`` of the Airflow tasks), and is stopped and deleted at the end of the
session even when a test fails. ``AirflowApi`` drives Airflow only through its REST API v2, as a
user or a CI job would, with a JWT from SimpleAuthManager's ``/auth/token``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from steps.core.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "local_stack.sh"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED = {"success", "failed"}
# So that the scheduler-kill scenario fits the test budget (Airflow's defaults: 300 s each): a
# running task whose process died with the killed scheduler is noticed after 60 s without a
# heartbeat, and a task still queued on the dead scheduler's executor is reset by the restarted
# scheduler's orphan check, which runs every 30 s instead of every 5 minutes.
STACK_SETTINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
}


@dataclass
class LocalStack:
    """A running local stack: its folder, the variables of its env file and its start time."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    start_s: float = 0.0

    def script(self, command: str, timeout_s: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env={**os.environ, **STACK_SETTINGS, "LOCAL_STACK_DIR": str(self.directory)},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def pid(self, service: str) -> int | None:
        path = self.directory / f"{service}.pid"
        return int(path.read_text()) if path.exists() else None

    @property
    def data_uri(self) -> str:
        """The data store the stack's Airflow tasks use by default."""
        return str(self.directory / "data")

    def secrets(self) -> dict[str, str]:
        lines = (self.directory / "secrets.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME='value'`` lines of the stack's env file."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value.strip("'")
    return env


@pytest.fixture(scope="package", autouse=True)
def services_image_in_background(request: pytest.FixtureRequest) -> None:
    """Start building the compose stack's services image (about 4 minutes, mostly the Docker
    engine's work) as this package's tests begin, when the session will run the compose stack:
    the build then overlaps the Airflow scenario, which mostly waits on its scheduler."""
    wanted = os.environ.get("HEALTH_PREDICT_STACK_TEST") == "1"
    if wanted and any("test_compose_stack.py" in item.nodeid for item in request.session.items):
        # No Docker engine: the compose tests themselves skip, or fail under CI.
        with contextlib.suppress(pytest.skip.Exception, RuntimeError):
            request.getfixturevalue("services_image_build")


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    if shutil.which("initdb") is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not on PATH"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (under CI a missing component is an error)")
        pytest.skip(message)
    # Not pytest's tmp_path: Postgres runs as an unprivileged user and must reach this folder.
    directory = Path(tempfile.mkdtemp(prefix="health-predict-stack-"))
    directory.chmod(0o755)
    stack = LocalStack(directory=directory)
    previous = os.environ.get("HEALTH_PREDICT_DATA_URI")
    os.environ["HEALTH_PREDICT_DATA_URI"] = stack.data_uri  # inherited by the stack's processes
    try:
        started = time.monotonic()
        result = stack.script("start")
        assert result.returncode == 0, f"start failed:\n{result.stderr[-4000:]}"
        stack.env = read_env_file(directory / "stack.env")
        stack.start_s = time.monotonic() - started
        print(f"\nlocal stack started in {stack.start_s:.1f} s")
        yield stack
    finally:
        if previous is None:
            os.environ.pop("HEALTH_PREDICT_DATA_URI", None)
        else:
            os.environ["HEALTH_PREDICT_DATA_URI"] = previous
        stack.script("stop", timeout_s=180)
        shutil.rmtree(directory, ignore_errors=True)


class AirflowApi:
    """Airflow's REST API v2, authenticated with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, password: str):
        self.base_url = base_url
        answer = requests.post(
            f"{base_url}/auth/token", json={"username": "admin", "password": password}, timeout=60
        )
        assert answer.status_code in (200, 201), answer.text
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        answer = self.session.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
        answer.raise_for_status()
        return answer

    def wait_for_dags(self, dag_ids: list[str], timeout_s: float = 300) -> None:
        """Wait until the dag-processor has parsed every DAG."""
        deadline = time.monotonic() + timeout_s
        while True:
            known = {d["dag_id"] for d in self.request("GET", "/dags").json()["dags"]}
            if set(dag_ids) <= known:
                return
            assert time.monotonic() < deadline, f"DAGs not parsed: {set(dag_ids) - known}"
            time.sleep(3)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, run_id: str, conf: dict) -> dict:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body).json()

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/dags/{dag_id}/dagRuns").json()["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 900) -> str:
        """Poll the run until it finishes; return its state."""
        deadline = time.monotonic() + timeout_s
        while (state := self.run(dag_id, run_id)["state"]) not in FINISHED:
            assert time.monotonic() < deadline, f"{dag_id} {run_id} still {state}"
            time.sleep(3)
        return state

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return {
            ti["task_id"]: ti["state"] for ti in self.request("GET", path).json()["task_instances"]
        }

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.request("GET", path, params={"deserialize": True}).json()["value"]

    def log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The log of the task instance's latest try."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        try_number = self.request("GET", path).json()["try_number"]
        path = f"{path}/logs/{try_number}"
        answer = self.request("GET", path, headers={"Accept": "application/json"}).json()
        content = answer.get("content", "")
        if not isinstance(content, list):
            return str(content)
        lines = []  # structured log: one line per event, with the exception it carries
        for event in content:
            errors = event.get("error_detail") or []
            lines.append(" ".join([str(event.get("event", ""))] + [
                f"[{error.get('exc_type')}: {error.get('exc_value')}]" for error in errors
            ]))  # fmt: skip
        return "\n".join(lines)

    def why(self, dag_id: str, run_id: str) -> str:
        """Task states and the logs of the failed tasks: the message of a failed assertion."""
        states = self.task_states(dag_id, run_id)
        logs = [
            f"--- {task_id}:\n{self.log(dag_id, run_id, task_id)[-3000:]}"
            for task_id, state in states.items()
            if state in ("failed", "upstream_failed", "up_for_retry")
        ]
        return f"{dag_id} {run_id}: {states}\n" + "\n".join(logs)


@pytest.fixture(scope="session")
def airflow_api(local_stack: LocalStack) -> AirflowApi:
    """The stack's Airflow REST API, logged in as the admin user."""
    passwords = Path(local_stack.env["AIRFLOW_ADMIN_PASSWORDS_FILE"]).read_text()
    return AirflowApi(local_stack.env["AIRFLOW_URL"], json.loads(passwords)["admin"])
