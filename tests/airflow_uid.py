"""Run the deploy step's cluster check as the Airflow uid (50000), as the EC2 scheduler does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from steps.core.config import PROJECT_ROOT

AIRFLOW_UID = 50000


def _as_airflow_uid(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={AIRFLOW_UID}", "--regid=0", "--clear-groups", sys.executable,
         "-c", code],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", **env},
    )  # fmt: skip


def check_cluster_as_airflow_uid(kubeconfig: str) -> subprocess.CompletedProcess:
    """``check_cluster`` run as uid 50000 with ``kubeconfig``; skips, with the reason, where this
    process cannot switch uid or the checkout is private to its owner (a folder above it without
    the execute bit for others, e.g. a clone under /root): uid 50000 cannot import it there."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("runs the check as uid 50000: needs root and setpriv")
    probe = _as_airflow_uid("import steps.deployment.kubernetes", {})
    if probe.returncode != 0:
        last_line = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        pytest.skip(f"uid {AIRFLOW_UID} cannot import this checkout: {last_line}")
    return _as_airflow_uid(
        "from steps.deployment.kubernetes import check_cluster; "
        "print(check_cluster('health-predict', 'health-predict-api'))",
        {"KUBECONFIG": kubeconfig},
    )
