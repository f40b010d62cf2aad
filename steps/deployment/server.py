"""Serve a model with MLflow's own scoring server on a free loopback port, and smoke-test it.

``serve_model`` runs ``mlflow models serve --env-manager local`` (no hand-written web API) as its
own process group, waits until ``/ping`` answers, yields the base URL and stops the whole group on
exit. Used by the API tests, ``main``, the ``deploy`` step's ``local`` target and the benchmark.
Run as ``python -m steps.serve`` it serves until stopped: Ctrl-C, SIGTERM or SIGHUP stop the
server first, and a SIGKILL takes the server down with it (Linux parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from steps.core import config

_PR_SET_PDEATHSIG = 1


class ServingError(RuntimeError):
    """The scoring server did not start, or did not answer a smoke test as expected."""


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate the server's process group (uvicorn and its workers), killing it if it lingers."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _terminate_with_parent() -> None:
    """In the child before exec: receive SIGTERM when the parent dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_ready(process: subprocess.Popen, base_url: str, log_path: Path, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise ServingError(
                f"the scoring server exited with code {process.returncode} before answering /ping; "
                "last log lines:\n" + "\n".join(tail)
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/ping", timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise ServingError(f"the scoring server did not answer /ping within {timeout_s:.0f} s")


@contextlib.contextmanager
def serve_model(
    model_uri: str,
    workers: int = 1,
    startup_timeout_s: float = 180.0,
    log_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Yield the base URL of ``model_uri`` served by ``mlflow models serve`` on 127.0.0.1.

    The server's stdout and stderr go to ``log_path`` (a temporary file if not given), so tests
    can check what it logged. The process group is stopped when the block exits.
    """
    config.configure_mlflow()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_cli), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port), "-w", str(workers),
    ]  # fmt: skip
    env = {
        **os.environ,
        # MLflow execs `uvicorn` by name: make this interpreter's scripts directory win.
        "PATH": os.pathsep.join([str(mlflow_cli.parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": config.tracking_uri(),
        **(extra_env or {}),
    }
    if log_path is None:
        log_path = Path(tempfile.mkstemp(prefix="scoring-server-", suffix=".log")[1])
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
    try:
        _wait_until_ready(process, base_url, log_path, startup_timeout_s)
        yield base_url
    finally:
        _stop(process)


def smoke_test(base_url: str, payload: dict, timeout_s: float = 30.0) -> list[dict]:
    """Predictions for ``payload`` after checking /ping and the shape of the answer.

    Raises :class:`ServingError` unless /ping is 200 and /invocations returns one prediction per
    input row with ``prediction`` in {0, 1} and ``probability_score`` in [0, 1].
    """
    ping = requests.get(f"{base_url}/ping", timeout=timeout_s)
    if ping.status_code != 200:
        raise ServingError(f"/ping answered {ping.status_code}")
    response = requests.post(f"{base_url}/invocations", json=payload, timeout=timeout_s)
    if response.status_code != 200:
        raise ServingError(f"/invocations answered {response.status_code}: {response.text[:500]}")
    predictions = response.json()["predictions"]
    inputs = payload.get("dataframe_records") or payload.get("dataframe_split", {}).get("data", [])
    if len(predictions) != len(inputs):
        raise ServingError(f"{len(predictions)} predictions for {len(inputs)} rows")
    for row in predictions:
        if row.get("prediction") not in (0, 1) or not 0.0 <= row.get("probability_score", -1) <= 1:
            raise ServingError("a prediction is outside {0, 1} or its probability outside [0, 1]")
    return predictions


def serving_input_example(model_uri: str) -> dict:
    """The request body MLflow saved with the model (``serving_input_example.json``)."""
    # lazy: mlflow takes ~7 s to import; serving and smoke-testing a model do not need it
    import mlflow

    config.configure_mlflow()
    local_dir = Path(mlflow.artifacts.download_artifacts(model_uri))
    example = local_dir / "serving_input_example.json"
    if not example.exists():
        raise ServingError(f"{model_uri} was logged without an input example to smoke-test with")
    return json.loads(example.read_text())
