"""Fixtures for the container area (see tests/conftest.py): all real, nothing faked.

- ``docker_client``: the Docker engine (under ``CI=true`` a missing engine is an error; elsewhere
  the container tests skip with the reason).
- ``container_model``: the session's trained model registered under a test-only name, pinned to
  its version (``models:/health-predict-container-test/<n>``).
- ``serving_image``: that model's hardened serving image, built once per session by the same code
  as ``deploy`` (base image from debootstrap here, wheelhouse when the build cannot reach PyPI).
- ``serving_container``: the image running read-only with a tmpfs ``/tmp``, healthy.
- ``oci_registry``: Debian's ``docker-registry`` (the distribution registry) as a process on a
  free loopback port with a throwaway storage folder.
- ``services_image``: the compose stack's services image (``make images`` builds the same). Its
  build can start in the background earlier (``services_image_build``): tests/integration starts
  it when the session will run the compose stack, so the build overlaps the Airflow scenario.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import mlflow
import pytest
import requests

from steps.core import config
from steps.deployment import docker_run, images, model_image, server

CONTAINER_MODEL_NAME = "health-predict-container-test"


@pytest.fixture(scope="session")
def docker_client():
    """A client of the running Docker engine."""
    try:
        return images.engine()
    except images.ImageError as error:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{error} (under CI a missing Docker engine is an error)") from None
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def container_model(trained_model, docker_client) -> str:
    """The trained model as a registered version of a test-only model name."""
    config.configure_mlflow()
    version = mlflow.register_model(trained_model.model_uri, CONTAINER_MODEL_NAME).version
    return f"models:/{CONTAINER_MODEL_NAME}/{version}"


@pytest.fixture(scope="session")
def serving_image(container_model, tmp_path_factory) -> model_image.ServingImage:
    """The model's serving image (built once; reused while its content is unchanged)."""
    return model_image.build_serving_image(
        container_model, tmp_path_factory.mktemp("serving-build")
    )


@pytest.fixture(scope="session")
def serving_container(serving_image) -> Iterator[tuple[object, str]]:
    """(container, base URL) of the serving image running as deploy runs it; removed after."""
    container, base_url = docker_run.run_container(serving_image.tag)
    yield container, base_url
    container.remove(force=True)


def _registry_binary() -> str:
    found = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None
    )
    if found is None:
        message = "Debian's docker-registry is not installed (.ci/apt-packages.txt lists it)"
        if os.environ.get("CI") == "true":
            raise RuntimeError(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def oci_registry(docker_client, tmp_path_factory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a real distribution registry, stopped and deleted after."""
    binary = _registry_binary()
    root = tmp_path_factory.mktemp("registry")
    port = server.free_port()
    settings = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (root / "config.yml").write_text(json.dumps(settings))  # YAML is a superset of JSON
    with (root / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "docker-registry did not start: " + (root / "registry.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def services_image_build(docker_client) -> Iterator[Future]:
    """The services image build, running in a background thread (its own Docker client)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="services-image") as executor:
        yield executor.submit(lambda: images.build_services_image(images.engine()))


@pytest.fixture(scope="session")
def services_image(services_image_build) -> str:
    """The services image's content-addressed tag, once built."""
    return services_image_build.result()
