"""Serving image build step: MLflow's scoring server, run once on the model's own example.

The packages are installed without bytecode (most of their modules are never imported by a
scoring server); this run makes Python write the bytecode of exactly the modules serving imports,
so a container starts as fast as with everything compiled. The server is the one the container
runs (uvicorn with 2 workers, from ``mlflow.pyfunc.scoring_server.get_cmd``); it answers the
model's ``serving_input_example.json`` without and with reasons, or the build stops here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from mlflow.models import container  # the ENTRYPOINT's import
from mlflow.pyfunc import scoring_server

MODEL = Path(container.MODEL_PATH)
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answer(url: str, body: dict | None = None) -> int:
    """The HTTP status of a GET (no ``body``) or a JSON POST to ``url``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


def main() -> None:
    port = free_port()
    command, env = scoring_server.get_cmd(model_uri=str(MODEL), port=port, nworkers=2)
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], env=env)
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                sys.exit(f"warm-up: the scoring server exited ({server.returncode})")
            try:
                if answer(f"http://127.0.0.1:{port}/ping") == 200:
                    break
            except OSError:
                if time.monotonic() - started > START_TIMEOUT_S:
                    sys.exit(f"warm-up: no answer on /ping within {START_TIMEOUT_S} s")
                time.sleep(0.5)
        example = json.loads((MODEL / "serving_input_example.json").read_text())
        for params in ({}, {"params": {"reasons": 3}}):
            status = answer(f"http://127.0.0.1:{port}/invocations", example | params)
            print(f"warm-up: /invocations {sorted(params) or 'plain'}: {status}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
