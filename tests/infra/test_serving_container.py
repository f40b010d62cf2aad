"""The serving image on a real Docker engine: built, run, probed and compared with the model.

Everything is real: the image is built by ``deploy``'s own code (MLflow's generated Dockerfile,
hardened) from the session's freshly trained model, and runs as ``deploy`` runs it: read-only
root filesystem, a tmpfs on /tmp, all capabilities dropped (what k8s/deployment.yaml sets).
One image and one container are shared by the session (tests/fixtures_docker.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests

from custom_pyfunc import reasons
from steps.core import config
from steps.deployment import model_image
from tests.api.test_scoring_api import encounter_records

pytestmark = pytest.mark.slow

IMAGE_LIMIT_MB = 700
# What the base image itself installs beside Python (python:3.11-slim adds wheel).
BASE_DISTRIBUTIONS = {"pip", "setuptools", "wheel"}
INSTALLED = (
    "import importlib.metadata as m; from packaging.utils import canonicalize_name as c; "
    "print(*{f'{c(d.name)}=={d.version}' for d in m.distributions()})"
)
# Is there bytecode for a module serving imports, and for one it never imports?
BYTECODE = (
    "import os, importlib.util as u, pandas, sklearn.base; "
    "tests = os.path.join(os.path.dirname(pandas.__file__), 'tests', '__init__.py'); "
    "print(*(os.path.exists(u.cache_from_source(f)) for f in (sklearn.base.__file__, tests)))"
)


def run_in(container, command: list[str]) -> tuple[int, str]:
    exit_code, output = container.exec_run(command)
    return exit_code, output.decode(errors="replace")


def test_health_check_turns_healthy(serving_container, serving_image, docker_client):
    container, base_url = serving_container
    container.reload()
    assert container.attrs["State"]["Health"]["Status"] == "healthy"
    check = docker_client.images.get(serving_image.tag).attrs["Config"]["Healthcheck"]["Test"]
    assert any("127.0.0.1:8080/ping" in part for part in check)
    assert requests.get(base_url + "/ping", timeout=10).status_code == 200


def test_runs_as_the_non_root_uid_on_a_read_only_root(serving_container):
    container, _ = serving_container
    assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert run_in(container, ["id", "-u"]) == (0, f"{model_image.APP_UID}\n")
    users = {process[-1] for process in container.top(ps_args="-eo pid,user")["Processes"]}
    assert users == {str(model_image.APP_UID)}, users
    code, output = run_in(container, ["touch", "/opt/ml/model/written"])
    assert code != 0 and "Read-only file system" in output


def test_nginx_config_passes_nginx_t_inside(serving_container):
    container, _ = serving_container
    code, output = run_in(
        container, ["python", "-c", "import mlflow.models as m; print(m.__file__)"]
    )
    assert code == 0
    conf = output.strip().rsplit("/", 1)[0] + "/container/scoring_server/nginx.conf"
    code, output = run_in(container, ["nginx", "-t", "-c", conf])
    assert code == 0, output
    assert "syntax is ok" in output and "test is successful" in output
    code, shipped = run_in(container, ["cat", conf])
    assert shipped == model_image.NGINX_CONF.read_text()


def test_image_holds_only_the_saved_model(serving_container, trained_model):
    container, _ = serving_container
    code, output = run_in(
        container,
        ["sh", "-c", "find / -xdev \\( -name MLproject -o -name requirements.lock "
         "-o -name deploy.py -o -name dags \\) -print 2>/dev/null"],
    )  # fmt: skip
    assert output.strip() == "", output
    code, _ = run_in(container, ["python", "-c", "import steps"])
    assert code != 0, "the project's steps package must not be in the image"
    code, listing = run_in(container, ["ls", "/opt/ml/model"])
    assert code == 0 and "MLmodel" in listing.split()
    # No pip cache, no compiler or build tool (as root, which can look everywhere).
    code, output = container.exec_run(
        ["sh", "-c", "find / -xdev -path '*/.cache/pip' -print; command -v gcc cc make"], user="0"
    )
    assert output.decode().strip() == "", output


def test_image_installs_exactly_the_model_requirements_and_stays_small(
    serving_container, serving_image, container_model, docker_client
):
    container, _ = serving_container
    requirements = mlflow.pyfunc.get_model_dependencies(container_model)
    pins = Path(requirements).read_text().split()
    for library in ("xgboost", "lightgbm", "catboost"):
        wanted = any(pin.startswith(f"{library}==") for pin in pins)
        code, _ = run_in(container, ["python", "-c", f"import {library}"])
        assert (code == 0) == wanted, f"{library}: in requirements {wanted}, importable {code == 0}"
    # Installed: the model's pinned requirements (mlflow-skinny, not the tracking server's
    # dependencies) and the base's own pip, nothing else.
    code, output = run_in(container, ["python", "-c", INSTALLED])
    installed = dict(line.split("==") for line in output.split())
    assert code == 0 and dict(pin.split("==") for pin in pins) == {
        name: version for name, version in installed.items() if name not in BASE_DISTRIBUTIONS
    }, output
    assert not {"mlflow", "pyarrow", "sqlalchemy", "matplotlib", "plotly", "gunicorn"} & set(
        installed
    )
    # Bytecode only for what serving imports (compiled by the build's run of the server).
    code, output = run_in(container, ["python", "-c", BYTECODE])
    assert (code, output.split()) == (0, ["True", "False"]), output
    size_mb = docker_client.images.get(serving_image.tag).attrs["Size"] / 1e6
    assert size_mb <= IMAGE_LIMIT_MB, f"serving image {size_mb:.0f} MB"


def test_answers_equal_in_process_predict(serving_container, container_model):
    _, base_url = serving_container
    records = encounter_records(60, seed=21)
    response = requests.post(
        f"{base_url}/invocations", json={"dataframe_records": records}, timeout=60
    )
    assert response.status_code == 200, response.text[:300]
    served = pd.DataFrame(response.json()["predictions"])
    in_process = mlflow.pyfunc.load_model(container_model).predict(pd.DataFrame(records))
    assert served["prediction"].tolist() == in_process["prediction"].tolist()
    assert served["probability_score"].tolist() == pytest.approx(
        in_process["probability_score"].tolist(), abs=1e-9
    )
    # Reasons through the image: the same columns and contributions as in-process.
    body = {"dataframe_records": records, "params": {"reasons": 3}}
    explained = requests.post(f"{base_url}/invocations", json=body, timeout=60)
    assert explained.status_code == 200, explained.text[:300]
    served = pd.DataFrame(explained.json()["predictions"])
    in_process = mlflow.pyfunc.load_model(container_model).predict(
        pd.DataFrame(records), params={"reasons": 3}
    )
    for side in (reasons.RAISED, reasons.LOWERED):
        for got, want in zip(served[side], in_process[side], strict=True):
            assert [r["column"] for r in got] == [r["column"] for r in want]
            assert [r["contribution"] for r in got] == pytest.approx(
                [r["contribution"] for r in want], abs=1e-9
            )
    assert served[reasons.RAISED].map(len).sum() > 0


def test_api_suite_passes_against_the_container(serving_container, container_model, tmp_path):
    """The whole tests/api suite, in its own pytest process, against the container's port."""
    _, base_url = serving_container
    model_dir = mlflow.artifacts.download_artifacts(container_model, dst_path=str(tmp_path))
    env = {
        **os.environ,
        "API_BASE_URL": base_url,
        "API_MODEL_URI": model_dir,
        "API_MAX_BATCH_ROWS": "10000",
    }
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/api", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "api"), "-x"],
        cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    summary = completed.stdout.strip().splitlines()[-1] if completed.stdout.strip() else ""
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary, summary
