"""Fixtures for the serving area (see tests/conftest.py).

- ``scoring_service``: a real ``mlflow models serve`` process on a free loopback port serving the
  session's freshly trained model (``trained_model``), with its log captured to a file. With
  ``API_BASE_URL`` set, the same API tests run against that deployed service instead (then
  ``API_MODEL_URI`` names the model it serves, for the in-process comparison, and
  ``API_MAX_BATCH_ROWS`` its batch limit, default 10,000, and ``API_MAX_BODY_BYTES`` its body
  limit, default ``serving.DEFAULT_MAX_BODY_BYTES``).
- ``nginx_front``: the serving image's ``docker/serving/nginx.conf`` run by this host's nginx on
  a free loopback port in front of ``scoring_service`` (ports and writable paths rewritten, nothing
  else), so that what the image passes is tested without building it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from custom_pyfunc import serving, validation
from steps.deployment import model_image, server

# A small batch limit keeps the oversized-batch test cheap against the local server.
LOCAL_MAX_BATCH_ROWS = 200


@dataclass(frozen=True)
class ScoringService:
    """A running scoring server: where it is, what it serves, where its log goes (local only)."""

    base_url: str
    model_uri: str | None
    log_path: Path | None
    max_batch_rows: int
    max_body_bytes: int = serving.DEFAULT_MAX_BODY_BYTES


@pytest.fixture(scope="session")
def scoring_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoringService]:
    """The scoring server under test: local (freshly trained model) or ``API_BASE_URL``."""
    if base_url := os.environ.get("API_BASE_URL"):
        yield ScoringService(
            base_url=base_url.rstrip("/"),
            model_uri=os.environ.get("API_MODEL_URI") or None,
            log_path=None,
            max_batch_rows=int(
                os.environ.get("API_MAX_BATCH_ROWS", validation.DEFAULT_MAX_BATCH_ROWS)
            ),
            max_body_bytes=int(
                os.environ.get("API_MAX_BODY_BYTES", serving.DEFAULT_MAX_BODY_BYTES)
            ),
        )
        return
    trained_model = request.getfixturevalue("trained_model")
    log_path = tmp_path_factory.mktemp("serving") / "scoring-server.log"
    limit = {validation.MAX_BATCH_ROWS_ENV: str(LOCAL_MAX_BATCH_ROWS)}
    with server.serve_model(
        trained_model.model_uri, workers=1, log_path=log_path, extra_env=limit
    ) as base_url:
        yield ScoringService(base_url, trained_model.model_uri, log_path, LOCAL_MAX_BATCH_ROWS)


def _nginx_conf_for_this_host(upstream: str, port: int, root: Path) -> str:
    """The image's nginx.conf on ``port`` in front of ``upstream``, writing under ``root``."""
    text = model_image.NGINX_CONF.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server {upstream};",
        "listen 8080 deferred;": f"listen 127.0.0.1:{port};",
    }
    for old, new in replacements.items():
        assert old in text, f"nginx.conf no longer holds {old!r}: update this fixture"
        text = text.replace(old, new)
    for writable in ("/tmp/", "/var/log/nginx/", "/var/lib/nginx/"):
        text = text.replace(writable, f"{root}/")
    if os.geteuid() == 0:  # workers would run as nobody, unable to write under root's tmp
        text = "user root root;\n" + text
    return text


@pytest.fixture(scope="session")
def nginx_front(
    scoring_service: ScoringService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScoringService]:
    """``scoring_service`` behind the image's nginx config (local server only)."""
    if scoring_service.log_path is None:
        pytest.skip("API_BASE_URL is set: the deployed service is tested as it is")
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("nginx is missing (.ci/apt-packages.txt installs nginx-light)")
        pytest.skip("nginx is not installed")
    root = tmp_path_factory.mktemp("nginx")
    port = server.free_port()
    conf = root / "nginx.conf"
    upstream = scoring_service.base_url.removeprefix("http://")
    conf.write_text(_nginx_conf_for_this_host(upstream, port, root))
    log = (root / "nginx.log").open("ab")
    process = subprocess.Popen(
        [nginx, "-c", str(conf), "-p", str(root), "-e", str(root / "startup.log")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base_url + "/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = (root / "nginx.log").read_text(errors="replace")
                raise RuntimeError(f"nginx did not start: {output[-2000:]}")
            time.sleep(0.2)
        yield ScoringService(
            base_url, scoring_service.model_uri, None, scoring_service.max_batch_rows
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
