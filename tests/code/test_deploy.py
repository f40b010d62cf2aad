"""The ``deploy`` step: the hardened Dockerfile, the local target, and stopping cleanly.

Real parts: the MLflow registry and ``mlflow models generate-dockerfile`` on the session's freshly
trained model, MLflow's scoring server for ``target=local``, and the real absence of a Docker
engine, AWS credentials and a Kubernetes cluster on this machine (the environment is pinned so
that a developer's own credentials cannot leak in). Fakes, each named where used, stand in only
for what cannot exist here: a Docker engine, AWS (moto) and a cluster's API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import mlflow
import pytest

from steps.core import config
from steps.deployment import kubernetes, model_image, rollout

pytestmark = pytest.mark.slow

TEST_MODEL_NAME = "health-predict-deploy-test"

NO_CLOUD_ENV = {
    "DOCKER_HOST": "unix:///nonexistent/docker.sock",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_EC2_METADATA_DISABLED": "true",
    "KUBECONFIG": "/nonexistent/kubeconfig",
}
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(scope="module")
def champion_uri(trained_model) -> str:
    """The trained model registered under a test-only name with the ``champion`` alias."""
    config.configure_mlflow()
    version = mlflow.register_model(trained_model.model_uri, TEST_MODEL_NAME).version
    mlflow.MlflowClient().set_registered_model_alias(TEST_MODEL_NAME, "champion", version)
    return f"models:/{TEST_MODEL_NAME}@champion"


@pytest.fixture
def no_cloud(monkeypatch):
    """No Docker engine, AWS credentials or kubeconfig, whatever the developer's machine has."""
    for name, value in NO_CLOUD_ENV.items():
        monkeypatch.setenv(name, value)
    for name in AWS_SECRETS:
        monkeypatch.delenv(name, raising=False)


def assert_hardened(dockerfile) -> None:
    text = dockerfile.read_text()
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "127.0.0.1:8080/ping" in text
    assert "MLFLOW_MODELS_WORKERS=2" in text
    assert "chmod o+rwX" not in text
    assert text.index("USER 10001") < text.index("ENTRYPOINT")
    assert (dockerfile.parent / "nginx.conf").read_text() == model_image.NGINX_CONF.read_text()
    assert (dockerfile.parent / "model_dir").is_dir()


def test_resolve_model_pins_the_alias_to_its_version(champion_uri):
    resolved = model_image.resolve_model(champion_uri)
    assert resolved.uri == f"models:/{TEST_MODEL_NAME}/{resolved.version}"
    assert resolved.image_tag == f"v{resolved.version}"
    with pytest.raises(model_image.DeployError, match="cannot resolve"):
        model_image.resolve_model(f"models:/{TEST_MODEL_NAME}@no-such-alias")


def test_local_target_writes_hardened_dockerfile_and_smoke_tests(champion_uri, tmp_path):
    result = rollout.deploy(target="local", model_uri=champion_uri, output_dir=tmp_path / "serving")
    assert_hardened(result.dockerfile)
    assert len(result.predictions) == 1
    assert result.predictions[0]["prediction"] in (0, 1)


def test_k8s_target_stops_before_building_with_one_error_line(champion_uri, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in AWS_SECRETS} | NO_CLOUD_ENV
    output_dir = tmp_path / "serving"
    completed = subprocess.run(
        [sys.executable, "-m", "steps.deploy", "--target", "k8s", "--model-uri", champion_uri,
         "--output-dir", str(output_dir)],
        env=env, cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 1
    last_line = completed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: stopped before building")
    for missing in ("no Docker engine", "no usable AWS credentials", "no Kubernetes cluster"):
        assert missing in last_line
    assert_hardened(output_dir / "Dockerfile")


def test_each_missing_prerequisite_is_named_alone(no_cloud, monkeypatch):
    from moto import mock_aws

    problems = rollout.missing_prerequisites("us-east-1", "health-predict", "health-predict-api")
    assert [p.split(" (")[0] for p in problems] == [
        "no Docker engine reachable",
        "no usable AWS credentials",
        "no Kubernetes cluster configured",
    ]
    # Fake: a Docker engine cannot run here, so its check is made to pass.
    monkeypatch.setattr(rollout, "check_docker", lambda: None)
    problems = rollout.missing_prerequisites("us-east-1", "health-predict", "health-predict-api")
    assert [p.split(" (")[0] for p in problems] == [
        "no usable AWS credentials", "no Kubernetes cluster configured",
    ]  # fmt: skip
    # Fake: AWS is moto's in-process emulator with dummy credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        problems = rollout.missing_prerequisites(
            "us-east-1", "health-predict", "health-predict-api"
        )
    assert [p.split(" (")[0] for p in problems] == ["no Kubernetes cluster configured"]


class FakeAppsApi:
    """Fake of the kubernetes AppsV1Api (no cluster can run here): a Deployment whose pods
    become ready only for images in ``healthy_images``."""

    def __init__(self, image: str, healthy_images: set[str]):
        self.image, self.healthy_images, self.patched = image, healthy_images, []
        self.generation = 1

    def read_namespaced_deployment(self, name, namespace):
        container = SimpleNamespace(name="api", image=self.image)
        spec = SimpleNamespace(
            template=SimpleNamespace(spec=SimpleNamespace(containers=[container]))
        )
        return SimpleNamespace(spec=spec)

    def patch_namespaced_deployment(self, name, namespace, body):
        (container,) = body["spec"]["template"]["spec"]["containers"]
        self.image = container["image"]
        self.patched.append(self.image)
        self.generation += 1

    def read_namespaced_deployment_status(self, name, namespace):
        ready = 2 if self.image in self.healthy_images else 0
        status = SimpleNamespace(
            observed_generation=self.generation, updated_replicas=2, available_replicas=ready,
            unavailable_replicas=2 - ready,
        )  # fmt: skip
        return SimpleNamespace(
            status=status, spec=SimpleNamespace(replicas=2),
            metadata=SimpleNamespace(generation=self.generation),
        )  # fmt: skip


def test_rollout_waits_for_ready_replicas():
    apps = FakeAppsApi("repo:v1", healthy_images={"repo:v1", "repo:v2"})
    kubernetes.roll_out(apps, "ns", "api", "repo:v2", timeout_s=1, poll_s=0.01)
    assert apps.patched == ["repo:v2"]


def test_rollout_that_never_becomes_ready_is_rolled_back():
    apps = FakeAppsApi("repo:v1", healthy_images={"repo:v1"})
    with pytest.raises(model_image.DeployError, match="rolled back to repo:v1"):
        kubernetes.roll_out(apps, "ns", "api", "repo:v2", timeout_s=0.05, poll_s=0.01)
    assert apps.patched == ["repo:v2", "repo:v1"]
    assert apps.image == "repo:v1"
