"""Fixtures for the airflow area: a throwaway Airflow home with a real (SQLite) metadata DB.

Airflow reads its configuration when first imported and configures logging process-wide, so every
Airflow action runs in a subprocess (``python -m tests.fixtures_airflow``) with its own
``AIRFLOW_HOME``; the pytest process never imports Airflow. DAG runs use ``dag.test()``: the
scheduler's dependency logic and a real metadata DB, tasks executed in-process, no scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Not steps.core.config (it imports mlflow): the DagBag check asserts parsing loads no such module.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGS_FOLDER = PROJECT_ROOT / "dags"
RESULT_MARKER = "@@dag-result@@ "


@dataclass
class DagRunResult:
    """What one ``dag.test()`` run left in the metadata DB."""

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str | None]
    xcoms: dict[str, object]
    triggered: list[dict] = field(default_factory=list)


@dataclass
class AirflowHarness:
    """Runs Airflow actions in subprocesses against one metadata DB."""

    env: dict[str, str]

    def _run(self, command: dict, env: dict[str, str], timeout: float):
        return subprocess.run(
            [sys.executable, "-m", "tests.fixtures_airflow"],
            input=json.dumps(command),
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def dagbag(self) -> dict:
        """Import errors, DAG ids and heavy modules loaded while parsing ``dags/``."""
        done = self._run({"action": "dagbag"}, self.env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.split(RESULT_MARKER)[-1])

    def cli(self, *args: str) -> object:
        """``airflow <args> -o json`` as a user runs it (the console script, from the Airflow
        home rather than the project, so only ``PYTHONPATH`` makes the project importable)."""
        done = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args, "-o", "json"],
            env=self.env,
            cwd=self.env["AIRFLOW_HOME"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def run_dags(
        self,
        runs: list[tuple[str, dict]],
        crash_before_advance: bool = False,
        extra_env: dict[str, str] | None = None,
        timeout: float = 900,
    ) -> tuple[list[DagRunResult], int, str]:
        """``dag.test()`` each (dag_id, conf) in order in one process.

        With ``crash_before_advance`` the process SIGKILLs itself where the monitoring loop would
        advance its state. Returns the finished runs, the exit code and the log tail.
        """
        command = {
            "action": "test",
            "runs": [{"dag_id": dag_id, "conf": conf} for dag_id, conf in runs],
            "crash_before_advance": crash_before_advance,
        }
        done = self._run(command, {**self.env, **(extra_env or {})}, timeout)
        results = [
            DagRunResult(**json.loads(line.split(RESULT_MARKER, 1)[1]))
            for line in done.stdout.splitlines()
            if line.startswith(RESULT_MARKER)
        ]
        return results, done.returncode, (done.stdout + done.stderr)[-6000:]


@pytest.fixture(scope="session")
def airflow_harness(
    tmp_path_factory: pytest.TempPathFactory, session_stores: dict[str, str]
) -> AirflowHarness:
    """An Airflow home with a migrated SQLite metadata DB and ``dags/`` as the DAGs folder."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    migrated = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return AirflowHarness(env=env)


# ---- subprocess side: everything below runs inside ``python -m tests.fixtures_airflow`` ----

HEAVY_MODULES = ("mlflow", "sklearn", "ray", "lightgbm", "xgboost", "evidently")


def _dagbag():
    """The DAGs parsed as Airflow's dag-processor parses them: the ``dags-folder`` bundle through
    ``BundleDagBag``, which puts the bundle folder on ``sys.path`` (so the DAGs' shared module
    imports as it does in every parsing component; a plain ``DagBag`` would not find it)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag

    bundle = DagBundlesManager().get_bundle("dags-folder")
    bundle.initialize()
    assert Path(bundle.path).resolve() == DAGS_FOLDER.resolve(), bundle.path
    return BundleDagBag(bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)


def _describe(dag_id: str, run_id: str, runs_before: set[tuple[str, str]]) -> dict:
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
        task_states = {
            ti.task_id: (getattr(ti.state, "value", ti.state) if ti.state else None)
            for ti in dag_run.get_task_instances(session=session)
        }
        xcoms = {
            row.task_id: XComModel.deserialize_value(row)
            for row in session.scalars(
                XComModel.get_many(run_id=run_id, dag_ids=dag_id, key="return_value")
            )
        }
        triggered = [
            {
                "dag_id": run.dag_id,
                "run_id": run.run_id,
                "conf": run.conf,
                "state": getattr(run.state, "value", run.state),
            }
            for run in session.query(DagRun).all()
            if (run.dag_id, run.run_id) not in runs_before and run.dag_id != dag_id
        ]
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "state": getattr(dag_run.state, "value", dag_run.state),
            "task_states": task_states,
            "xcoms": xcoms,
            "triggered": triggered,
        }


def _all_runs() -> set[tuple[str, str]]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(run.dag_id, run.run_id) for run in session.query(DagRun).all()}


def _crash_at_advance() -> None:
    """Make the loop's state advance kill this process, as a machine failure at that point would."""
    # lazy: the DagBag check runs in this module and must load no MLflow.
    from steps.orchestration import loop

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    loop.advance = killed


def _harness_main() -> int:
    command = json.loads(sys.stdin.read())
    bag = _dagbag()
    if command["action"] == "dagbag":
        result = {
            "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
            "dag_ids": sorted(bag.dags),
            "heavy_modules_loaded": [m for m in HEAVY_MODULES if m in sys.modules],
            "docs": {dag_id: bool(dag.doc_md) for dag_id, dag in bag.dags.items()},
            "tasks_without_timeout": [
                f"{dag_id}.{task.task_id}"
                for dag_id, dag in bag.dags.items()
                for task in dag.tasks
                if task.execution_timeout is None
            ],
        }
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0
    if command["crash_before_advance"]:
        _crash_at_advance()
    for run in command["runs"]:
        dag = bag.dags[run["dag_id"]]
        for task in dag.tasks:  # a failing task fails the test now, not after retry delays
            task.retries = 0
        before = _all_runs()
        dag_run = dag.test(run_conf=run["conf"])
        result = _describe(dag.dag_id, dag_run.run_id, before)
        print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_harness_main())
