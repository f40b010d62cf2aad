"""Orchestration overhead: each DAG's trigger-to-success time under Airflow's real scheduler
against the same work run directly, side by side on one machine, one at a time.

Starts a throwaway ``scripts/local_stack.sh`` (Postgres, ``mlflow server``, Airflow api-server,
scheduler with LocalExecutor, dag-processor, triggerer) with a data store of its own, prepares
the split with the ``ingest`` and ``split`` entry points, then for each DAG:

- ``health_predict_training_hpo`` (no split, no deployment) vs ``mlflow run . -e train`` then
  ``mlflow run . -e register`` with the same parameters;
- ``health_predict_api_deployment`` (``target=local``) vs the same ``serve_model`` +
  ``smoke_test`` of ``steps.serve`` in a fresh Python process;
- ``health_predict_monitoring_retraining`` (one batch, no retraining) vs ``mlflow run . -e
  monitor`` on the same stored batch with the same model version and thresholds.

Every DAG run is triggered and watched through the REST API v2 (poll every second). The direct
runs go first, so that the DAG run of the same work never profits from a warmer cache. Prints
one line per DAG and a final JSON line with the seconds and the ratios (DAG / direct).

    python -m benchmarks.orchestration [--families logreg] [--trials-per-family 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps.core import config, storage
from steps.core.config import PROJECT_ROOT
from tests.integration.conftest import AirflowApi, LocalStack, read_env_file

TRAINING_DAG = "health_predict_training_hpo"
DEPLOYMENT_DAG = "health_predict_api_deployment"
MONITORING_DAG = "health_predict_monitoring_retraining"
LENIENT_GATE = {"auc_floor": 0.5, "margin": 0.2, "max_subgroup_recall_gap": 1.0}
NEVER_ALERT = {"z": 1000.0}  # no figure is 1,000 standard errors out
BATCH_SIZE = 2000
BIN = Path(sys.executable).parent


def _mlflow_run(entry_point: str, parameters: dict, env: dict) -> str:
    """``mlflow run . -e <entry_point>``; returns its output."""
    command = [str(BIN / "mlflow"), "run", str(PROJECT_ROOT), "-e", entry_point,
               "--env-manager", "local"]  # fmt: skip
    for name, value in parameters.items():
        command += ["-P", f"{name}={value}"]
    done = subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"mlflow run -e {entry_point} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def _timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def _dag_run(api: AirflowApi, dag_id: str, run_id: str, conf: dict) -> float:
    """Trigger a DAG run and poll it every second; returns trigger-to-success seconds."""
    started = time.perf_counter()
    api.trigger(dag_id, run_id, conf)
    while (state := api.run(dag_id, run_id)["state"]) not in ("success", "failed"):
        time.sleep(1)
    if state != "success":
        raise RuntimeError(api.why(dag_id, run_id))
    return time.perf_counter() - started


def benchmark(stack: LocalStack, api: AirflowApi, training: dict) -> dict:
    """Time the three DAGs and their direct equivalents; returns the measurements."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": stack.env["MLFLOW_TRACKING_URI"],
        "HEALTH_PREDICT_DATA_URI": stack.data_uri,
        "PATH": os.pathsep.join([str(BIN), os.environ["PATH"]]),
    }
    _mlflow_run("ingest", {}, env)
    _mlflow_run("split", {}, env)
    api.wait_for_dags([TRAINING_DAG, DEPLOYMENT_DAG, MONITORING_DAG])
    for dag_id in (TRAINING_DAG, DEPLOYMENT_DAG, MONITORING_DAG):
        api.set_paused(dag_id, False)
    # Unpausing the monitoring DAG starts a scheduled run: let it finish before timing anything.
    for run in api.runs(MONITORING_DAG):
        api.wait_for_run(MONITORING_DAG, run["dag_run_id"])
    results = {}

    def direct_training() -> None:
        _mlflow_run("train", training, env)
        # Without train_run_id: the newest training run, found by its tags (the README's way).
        _mlflow_run("register", LENIENT_GATE, env)

    direct, _ = _timed(direct_training)
    dag = _dag_run(api, TRAINING_DAG, "bench_training", {
        **training, **LENIENT_GATE, "deploy_target": "none"})  # fmt: skip
    results["training"] = (dag, direct)

    version = api.xcom(TRAINING_DAG, "bench_training", "register")["champion_after"]
    model_uri = config.model_version_uri(version)
    serve = (
        "from steps.deployment.server import serve_model, serving_input_example, smoke_test\n"
        f"payload = serving_input_example({model_uri!r})\n"
        f"with serve_model({model_uri!r}) as url:\n    smoke_test(url, payload)\n"
    )
    direct, _ = _timed(
        lambda: subprocess.run(
            [sys.executable, "-c", serve], env=env, cwd=PROJECT_ROOT, check=True,
            capture_output=True,
        )
    )  # fmt: skip
    dag = _dag_run(api, DEPLOYMENT_DAG, "bench_deployment", {
        "target": "local", "model_version": version})  # fmt: skip
    results["deployment"] = (dag, direct)

    batch = storage.join(stack.data_uri, "bench_batch.csv")
    future = storage.read_bytes(storage.join(stack.data_uri, config.FUTURE_DATA_KEY))
    lines = future.splitlines(keepends=True)
    storage.write_bytes(batch, b"".join(lines[: BATCH_SIZE + 1]))
    monitor = {
        "batch_uri": batch,
        "model_uri": model_uri,
        "baseline_uri": storage.join(stack.data_uri, config.INITIAL_TEST_KEY),
        "report_uri": storage.join(stack.data_uri, "bench_report"),
        **NEVER_ALERT,
    }
    direct, _ = _timed(_mlflow_run, "monitor", monitor, env)
    dag = _dag_run(api, MONITORING_DAG, "bench_monitoring", {
        "batch_size": BATCH_SIZE, "retrain_mode": "trigger", "deploy_target": "none",
        **NEVER_ALERT})  # fmt: skip
    results["monitoring"] = (dag, direct)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="logreg")
    parser.add_argument("--trials-per-family", type=int, default=2)
    parser.add_argument("--time-budget-s", type=float, default=120)
    args = parser.parse_args(argv)
    training = {
        "families": args.families,
        "trials_per_family": args.trials_per_family,
        "time_budget_s": args.time_budget_s,
    }
    directory = Path(tempfile.mkdtemp(prefix="health-predict-bench-stack-"))
    directory.chmod(0o755)
    stack = LocalStack(directory=directory)
    os.environ["HEALTH_PREDICT_DATA_URI"] = stack.data_uri  # the stack's tasks inherit it
    try:
        started = time.perf_counter()
        done = stack.script("start")
        if done.returncode != 0:
            raise RuntimeError(f"local stack did not start:\n{done.stderr[-3000:]}")
        stack.env = read_env_file(directory / "stack.env")
        print(f"stack started in {time.perf_counter() - started:.1f} s", flush=True)
        password = json.loads(Path(stack.env["AIRFLOW_ADMIN_PASSWORDS_FILE"]).read_text())["admin"]
        results = benchmark(stack, AirflowApi(stack.env["AIRFLOW_URL"], password), training)
    finally:
        stack.script("stop", timeout_s=180)
        shutil.rmtree(directory, ignore_errors=True)
    summary = {"cpus": os.cpu_count(), "training": training}
    for name, (dag, direct) in results.items():
        print(f"{name}: DAG {dag:.1f} s, direct {direct:.1f} s, ratio {dag / direct:.2f}")
        summary[name] = {"dag_s": round(dag, 1), "direct_s": round(direct, 1),
                         "ratio": round(dag / direct, 2)}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
