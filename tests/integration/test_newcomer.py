"""The README's way in, on a fresh store: every entry point through a real ``mlflow run``,
configured only by the documented environment variables, with no ``--experiment-name``. ``deploy``
is left out: its ``mlflow run`` is tests/infra/test_deploy_docker.py's, and its local target
tests/code/test_deploy.py's.

Regressions covered: ``register`` after ``mlflow run . -e train`` found no training run (it
landed in ``Default``); ``simulate`` with ``HEALTH_PREDICT_DATA_URI`` crashed logging the resolved
``data_uri`` under the parameter ``mlflow run`` had already logged as empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from steps.core import config, storage, tracking

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).parent / "mlflow")
SMALL_TRAINING = ("families=logreg", "trials_per_family=2", "time_budget_s=120")
BATCH_ROWS = 1000
# Entry point -> the -P parameters given (everything else left to MLproject / the environment).
CHAIN = {
    "ingest": (),
    "split": (),
    "train": SMALL_TRAINING,
    "register": (),
    "monitor": ("batch_uri={batch_uri}",),
    "simulate": ("max_batches=1", f"batch_size={BATCH_ROWS}", *SMALL_TRAINING[:2]),
    "rollback": (),
}
STAGE_EXPERIMENT = tracking.ENTRY_POINT_EXPERIMENTS


@dataclass
class Newcomer:
    """A fresh store set up by environment variables only, and what each ``mlflow run`` did."""

    env: dict[str, str]
    data_uri: str
    artifact_root: Path
    workdir: Path
    done: dict[str, subprocess.CompletedProcess]

    def client(self) -> mlflow.MlflowClient:
        uri = self.env["MLFLOW_TRACKING_URI"]
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def stub_run_id(self, entry_point: str) -> str:
        """The run ``mlflow run`` created: the last run id it prints (the entry points a stage
        runs itself, like simulate's, print theirs before)."""
        output = self.done[entry_point].stdout + self.done[entry_point].stderr
        return output.rsplit("=== Run (ID '", 1)[1].split("'", 1)[0]


def _mlflow_run(env: dict[str, str], cwd: Path, entry_point: str, params: tuple[str, ...]):
    command = [MLFLOW, "run", str(config.PROJECT_ROOT), "-e", entry_point, "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory, raw_data_source: str) -> Newcomer:
    """Every entry point in order on a fresh data store, MLflow store and artifact root."""
    root = tmp_path_factory.mktemp("newcomer")
    workdir = root / "cwd"
    workdir.mkdir()
    env = {
        **os.environ,
        "HEALTH_PREDICT_RAW_DATA": raw_data_source,
        "HEALTH_PREDICT_DATA_URI": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "HEALTH_PREDICT_ARTIFACT_URI": (root / "artifacts").as_uri(),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    newcomer = Newcomer(env, env["HEALTH_PREDICT_DATA_URI"], root / "artifacts", workdir, {})
    batch_uri = storage.join(newcomer.data_uri, config.CURRENT_BATCH_DIR, "newcomer.csv")
    for entry_point, params in CHAIN.items():
        if entry_point == "monitor":  # a slice of the project's own future data, as split wrote it
            future = storage.read_bytes(storage.join(newcomer.data_uri, config.FUTURE_DATA_KEY))
            storage.write_bytes(batch_uri, b"\n".join(future.split(b"\n")[: BATCH_ROWS + 1]))
        params = tuple(p.format(batch_uri=batch_uri) for p in params)
        newcomer.done[entry_point] = _mlflow_run(env, workdir, entry_point, params)
        if entry_point != "rollback":
            assert newcomer.done[entry_point].returncode == 0, (
                f"mlflow run -e {entry_point} failed:\n" + newcomer.done[entry_point].stderr[-4000:]
            )
    return newcomer


def test_every_entry_point_runs_on_environment_configuration_alone(newcomer):
    for entry_point, done in newcomer.done.items():
        assert "Changing param values is not allowed" not in done.stderr, entry_point
    rollback = newcomer.done["rollback"]
    assert rollback.returncode != 0
    assert "error: no 'previous-champion' alias to roll back to" in rollback.stderr


def test_register_finds_the_training_run_that_mlflow_run_filed_by_itself(newcomer):
    client = newcomer.client()
    register_run = tracking_runs(newcomer, "register")[0]
    train_run = tracking_runs(newcomer, "train")[0]
    assert register_run.data.tags["health_predict.training_run_id"] == train_run.info.run_id
    assert client.get_model_version_by_alias(config.MODEL_NAME, config.CHAMPION_ALIAS)


def tracking_runs(newcomer: Newcomer, entry_point: str) -> list:
    """Runs of the stage's own experiment in the newcomer's store, newest first."""
    client = newcomer.client()
    experiment = client.get_experiment_by_name(STAGE_EXPERIMENT[entry_point])
    assert experiment is not None, f"no experiment {STAGE_EXPERIMENT[entry_point]}"
    role = f" and tags.`{tracking.ROLE_TAG}` = 'training'" if entry_point == "train" else ""
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'FINISHED'{role}",
        order_by=["attributes.start_time DESC"],
    )


@pytest.mark.parametrize("entry_point", [e for e in CHAIN if e != "rollback"])
def test_each_stage_files_its_run_under_its_experiment_and_says_so(newcomer, entry_point):
    client = newcomer.client()
    stub = client.get_run(newcomer.stub_run_id(entry_point))
    assert stub.info.experiment_id == config.DEFAULT_EXPERIMENT_ID
    assert stub.data.tags[config.FILED_UNDER_TAG] == STAGE_EXPERIMENT[entry_point]
    assert f"filed under experiment '{STAGE_EXPERIMENT[entry_point]}'" in (
        newcomer.done[entry_point].stderr
    )
    run = tracking_runs(newcomer, entry_point)[0]
    assert run.info.artifact_uri.startswith(newcomer.artifact_root.as_uri())
    assert not (newcomer.workdir / "mlruns").exists()


def test_resolved_values_are_logged_under_their_own_keys(newcomer):
    simulate_run = tracking_runs(newcomer, "simulate")[0]
    assert simulate_run.data.params["resolved.data_uri"] == newcomer.data_uri
    stub = newcomer.client().get_run(newcomer.stub_run_id("simulate"))
    assert stub.data.params["data_uri"] in ("", "''")  # mlflow run logs the empty default quoted
    train_run = tracking_runs(newcomer, "train")[0]
    assert train_run.data.params["resolved.data_uri"] == newcomer.data_uri
