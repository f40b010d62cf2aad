"""``python -m steps.serve`` leaves nothing running however it stops (issue 15, item 5).

Runs the real command on the session's trained model with 2 workers, then stops it with SIGTERM
(what systemd, Kubernetes and ``timeout`` send) or SIGKILL, and checks that every process it
started (the ``mlflow models serve`` CLI, uvicorn and its workers) is gone. SIGHUP (a closed
terminal) goes to the same handler as SIGTERM (``steps/serve.py``), so it is not run again here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from steps.core import config

pytestmark = pytest.mark.slow


def _started_server(process: subprocess.Popen, timeout_s: float = 600) -> list[psutil.Process]:
    """Wait for the 'serving ... at' line, then return every descendant of ``process``."""
    deadline = time.monotonic() + timeout_s
    for line in process.stdout:
        if line.startswith("serving "):
            break
        assert time.monotonic() < deadline, "steps.serve did not report serving in time"
    else:
        pytest.fail(f"steps.serve exited with {process.wait()} before serving")
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert len(descendants) >= 4  # mlflow CLI, uvicorn supervisor, 2 workers
    return descendants


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_serve_leaves_nothing_running_however_it_stops(request, signum):
    if os.environ.get("API_BASE_URL"):
        pytest.skip("API_BASE_URL is set: this tests the local launcher")
    model_uri = request.getfixturevalue("trained_model").model_uri
    command = [sys.executable, "-m", "steps.serve", "--model-uri", model_uri, "--workers", "2"]
    command += ["--startup-timeout-s", "600"]  # a loaded 2-core machine loads models slowly
    process = subprocess.Popen(
        command,
        cwd=config.PROJECT_ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    descendants: list[psutil.Process] = []
    try:
        descendants = _started_server(process)
        os.kill(process.pid, signum)
        process.wait(timeout=60)
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert alive == [], [p.pid for p in alive]
    finally:
        if process.poll() is None:
            process.kill()
        for started in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                started.kill()
        process.wait()
