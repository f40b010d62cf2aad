"""``deploy`` on a real Docker engine and a real OCI registry (Debian's docker-registry).

- ``target=docker`` through ``mlflow run``: builds (the session's image is reused when nothing
  changed), runs detached on a free loopback port, waits healthy, smoke-tests, and ends with
  ``SERVING_URL=... CONTAINER=...``.
- ``target=k8s`` pushes through the same code that pushes to ECR (the registry host is
  configuration; no AWS credentials are asked for a non-ECR host), then stops at the cluster step
  with one ``error:`` line saying what was done (no Kubernetes cluster can run here). The image is
  pulled back by digest and run. Tags are immutable: a second deploy of the same version skips
  the push; a tag holding another image stops the deployment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import requests

from steps.core import config
from steps.deployment import docker_run, images, oci
from tests.api.test_scoring_api import encounter_records

pytestmark = pytest.mark.slow

NO_CLUSTER_ENV = {
    "KUBECONFIG": "/nonexistent/kubeconfig",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def run_deploy(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in AWS_SECRETS} | NO_CLUSTER_ENV
    return subprocess.run(
        [sys.executable, "-m", "steps.deploy", *args],
        cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_docker_target_via_mlflow_run_serves_on_loopback(serving_image, container_model, tmp_path):
    import docker

    # A previous deploy's container (created, never started): the new deploy removes it.
    previous = docker.from_env().containers.create(
        serving_image.tag, labels={docker_run.SERVING_LABEL: "models:/previous/1"}
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_EXPERIMENT_ID"}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    completed = subprocess.run(
        ["mlflow", "run", ".", "-e", "deploy", "--env-manager", "local",
         "--experiment-name", config.DEPLOYMENT_EXPERIMENT, "-P", "target=docker",
         "-P", f"model_uri={container_model}", "-P", f"output_dir={tmp_path / 'serving'}"],
        cwd=config.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    last = completed.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"SERVING_URL=(http://127\.0\.0\.1:\d+) CONTAINER=([0-9a-f]{64})", last)
    assert match, last
    url, container_id = match.groups()
    with pytest.raises(docker.errors.NotFound):
        previous.reload()
    container = docker.from_env().containers.get(container_id)
    try:
        assert container.attrs["HostConfig"]["Memory"] == 2 * 1024**3
        assert container.image.id == serving_image.id  # nothing changed: the image was reused
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
        response = requests.post(
            f"{url}/invocations", json={"dataframe_records": encounter_records(3)}, timeout=30
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    finally:
        container.remove(force=True)


def test_k8s_target_pushes_then_stops_at_the_cluster_step(
    serving_image, container_model, oci_registry, docker_client, tmp_path
):
    version = container_model.rsplit("/", 1)[1]
    args = (
        "--target", "k8s", "--model-uri", container_model, "--registry", oci_registry,
        "--ecr-repository", "health-predict", "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    first = run_deploy(*args)
    assert first.returncode == 1, first.stderr[-3000:]
    last_line = first.stderr.strip().splitlines()[-1]
    reference = f"{oci_registry}/health-predict:v{version}"
    assert last_line.startswith(f"error: built {serving_image.tag} and pushed it as {reference}")
    assert "stopped at the cluster step" in last_line and "no Kubernetes cluster" in last_line
    assert "AWS" not in last_line  # a non-ECR registry asks for no AWS credentials
    digest = re.search(r"@(sha256:[0-9a-f]{64})", last_line).group(1)

    registry = oci.Registry(oci_registry, "health-predict")
    remote_digest, manifest = registry.manifest(f"v{version}")
    assert remote_digest == digest
    assert manifest["config"]["digest"] == serving_image.id

    # Pull back by digest (the local copy is dropped first) and run it.
    docker_client.images.remove(reference)
    pulled = docker_client.images.pull(f"{oci_registry}/health-predict@{digest}")
    assert pulled.id == serving_image.id
    container, base_url = docker_run.run_container(f"{oci_registry}/health-predict@{digest}")
    try:
        assert requests.get(base_url + "/ping", timeout=10).status_code == 200
    finally:
        container.remove(force=True)

    # Same version again: the tag already holds this image, so nothing is pushed.
    second = run_deploy(*args)
    assert second.returncode == 1
    assert "already holds this image" in second.stderr and "push skipped" in second.stderr
    assert second.stderr.strip().splitlines()[-1] == last_line


def test_a_tag_holding_another_image_stops_the_deployment(
    serving_image, container_model, oci_registry, docker_client, tmp_path
):
    version = container_model.rsplit("/", 1)[1]
    # Another image (the base image) already sits under this model version's tag.
    other = docker_client.images.get(images.base_image(docker_client))
    other.tag(f"{oci_registry}/taken", f"v{version}")
    for line in docker_client.images.push(
        f"{oci_registry}/taken", tag=f"v{version}", stream=True, decode=True
    ):
        assert "error" not in line, line
    completed = run_deploy(
        "--target", "k8s", "--model-uri", container_model, "--registry", oci_registry,
        "--ecr-repository", "taken", "--output-dir", str(tmp_path / "serving"),
    )  # fmt: skip
    assert completed.returncode == 1
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {oci_registry}/taken:v{version} already holds another")
    assert "tags are immutable" in last_line
    _, manifest = oci.Registry(oci_registry, "taken").manifest(f"v{version}")
    assert manifest["config"]["digest"] == other.id  # left as it was
