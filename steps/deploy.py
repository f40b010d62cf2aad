"""Deploy the champion: hardened serving image → ECR → Kubernetes rollout, or a local smoke test.

Always writes the serving Dockerfile (``mlflow models generate-dockerfile``, then hardened: non-root
user, HEALTHCHECK on /ping, explicit workers, our nginx config). For ``target=k8s`` it checks that
a Docker engine, AWS credentials and a Kubernetes cluster are all available *before* doing anything
else, so a missing one stops the step with a one-line ``error:`` and nothing half-deployed. Then it
builds the image, tags it with the model version, pushes it to ECR with boto3-issued credentials,
sets the Deployment's image with the kubernetes client, waits for the rollout and rolls back if it
does not become ready. ``target=local`` serves the champion with MLflow's scoring server and
smoke-tests it with the model's own input example.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from custom_pyfunc import validation
from steps import serve
from steps.core import config

NGINX_CONF = config.PROJECT_ROOT / "docker" / "serving" / "nginx.conf"
APP_UID = 10001
DEFAULT_MODEL_URI = f"models:/{config.MODEL_NAME}@{config.CHAMPION_ALIAS}"


class DeployError(RuntimeError):
    """The deployment stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to a registry version (``version`` is None outside the registry)."""

    uri: str
    name: str | None = None
    version: str | None = None

    @property
    def image_tag(self) -> str:
        if self.version is None:
            raise DeployError(f"{self.uri} is not a registered model version: cannot tag an image")
        return f"v{self.version}"


@dataclass
class DeployResult:
    """What ``deploy`` did: the pinned model, the Dockerfile, and the image or local answers."""

    target: str
    model: ResolvedModel
    dockerfile: Path
    image: str | None = None
    predictions: list[dict] = field(default_factory=list)


def resolve_model(model_uri: str) -> ResolvedModel:
    """``models:/name@alias`` and ``models:/name/version`` pinned to their version; others as is."""
    config.configure_mlflow()
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not match:
        return ResolvedModel(uri=model_uri)
    name, alias, version = match.groups()
    client = mlflow.MlflowClient()
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias).version
        else:
            client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as error:
        raise DeployError(
            f"cannot resolve {model_uri} in the registry at {config.tracking_uri()}: "
            f"{error.message.splitlines()[0]} (train and register a model first)"
        ) from None
    return ResolvedModel(uri=f"models:/{name}/{version}", name=name, version=str(version))


def harden_dockerfile(dockerfile: str, workers: int) -> str:
    """MLflow's generated Dockerfile with our hardening inserted before its ENTRYPOINT.

    Replaces nginx's config with ours (docker/serving/nginx.conf), drops MLflow's world-writable
    chmod, runs as an unprivileged user, pins the worker count and request limits, and adds a
    HEALTHCHECK on /ping.
    """
    head, entrypoint = dockerfile.rsplit("ENTRYPOINT", 1)
    head = re.sub(
        r"# granting read/write access.*?RUN chmod o\+rwX /opt/mlflow/",
        "# Hardened: nothing world-writable (MLflow opens /opt/mlflow for SageMaker Serverless).\n"
        "RUN chmod -R o-w /opt/mlflow/",
        head,
        flags=re.DOTALL,
    )
    hardening = f"""# --- Health Predict hardening (written by steps/deploy.py) ---
COPY nginx.conf /opt/health-predict/nginx.conf
RUN cp /opt/health-predict/nginx.conf "$(python -c 'import pathlib, mlflow.models; \\
print(pathlib.Path(mlflow.models.__file__).parent / "container/scoring_server/nginx.conf")')" \\
 && groupadd --system --gid {APP_UID} app \\
 && useradd --system --uid {APP_UID} --gid app --no-create-home --shell /usr/sbin/nologin app \\
 && mkdir -p /var/log/nginx /var/lib/nginx \\
 && chown -R app:app /var/log/nginx /var/lib/nginx
ENV MLFLOW_MODELS_WORKERS={workers} \\
    MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=30 \\
    {validation.MAX_BATCH_ROWS_ENV}={validation.DEFAULT_MAX_BATCH_ROWS} \\
    HOME=/tmp \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
EXPOSE 8080
USER {APP_UID}:{APP_UID}
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]

"""  # noqa: E501
    return head + hardening + "ENTRYPOINT" + entrypoint


def write_hardened_dockerfile(model_uri: str, output_dir: Path, workers: int) -> Path:
    """``output_dir/Dockerfile`` (hardened) with the model and nginx config beside it.

    Generated in a sibling temporary folder and moved into place only when complete.
    """
    output_dir = Path(output_dir).resolve()
    partial = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(mlflow_cli.parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": config.tracking_uri(),
    }
    command = [
        str(mlflow_cli), "models", "generate-dockerfile", "-m", model_uri, "-d", str(partial),
        "--env-manager", "local",
    ]  # fmt: skip
    generated = subprocess.run(command, env=env, capture_output=True, text=True)
    if generated.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        last_line = (generated.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployError(f"mlflow models generate-dockerfile failed: {last_line}")
    dockerfile = partial / "Dockerfile"
    dockerfile.write_text(harden_dockerfile(dockerfile.read_text(), workers))
    shutil.copy(NGINX_CONF, partial / "nginx.conf")
    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(output_dir)
    return output_dir / "Dockerfile"


def check_docker() -> str | None:
    """None if a Docker engine answers, else what is missing and how to provide it."""
    import docker

    try:
        docker.from_env(timeout=10).ping()
    except docker.errors.DockerException:
        return "no Docker engine reachable (start Docker, or set DOCKER_HOST to a running engine)"
    return None


def check_aws(region: str) -> str | None:
    """None if AWS credentials work (STS GetCallerIdentity), else how to provide them."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        boto3.Session(region_name=region).client("sts").get_caller_identity()
    except (BotoCoreError, ClientError):
        return (
            "no usable AWS credentials (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run on the instance with the project's IAM role)"
        )
    return None


def check_cluster(namespace: str, deployment: str) -> str | None:
    """None if a cluster is configured and holds the Deployment, else how to get there."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        kube_config.load_kube_config()
    except (ConfigException, FileNotFoundError):
        try:
            kube_config.load_incluster_config()
        except ConfigException:
            return (
                "no Kubernetes cluster configured (set KUBECONFIG or ~/.kube/config, e.g. "
                "`kind export kubeconfig`, or run inside the cluster)"
            )
    try:
        client.AppsV1Api().read_namespaced_deployment(deployment, namespace, _request_timeout=10)
    except ApiException as error:
        if error.status == 404:
            return f"Deployment {namespace}/{deployment} not found (run `kubectl apply -k k8s/`)"
        return f"the Kubernetes API refused access (HTTP {error.status}): check your kubeconfig"
    except Exception:  # urllib3 connection errors, DNS, TLS
        return "the Kubernetes cluster in your kubeconfig is not reachable"
    return None


def missing_prerequisites(aws_region: str, namespace: str, deployment: str) -> list[str]:
    """Everything a k8s deployment needs that is missing here (empty when all is in place)."""
    checks = (
        check_docker(),
        check_aws(aws_region),
        check_cluster(namespace, deployment),
    )
    return [problem for problem in checks if problem]


def build_and_push(build_dir: Path, repository: str, tag: str, aws_region: str) -> str:
    """Build ``build_dir`` and push it to ECR as ``<repository>:<tag>``; returns the image.

    An already pushed tag is reused (ECR tags are immutable), so a retry does not rebuild.
    """
    import boto3

    import docker

    ecr = boto3.Session(region_name=aws_region).client("ecr")
    repository_uri = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0][
        "repositoryUri"
    ]
    image = f"{repository_uri}:{tag}"
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return image
    except ecr.exceptions.ImageNotFoundException:
        pass
    engine = docker.from_env()
    engine.images.build(path=str(build_dir), tag=image, rm=True, pull=True)
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    username, password = base64.b64decode(token).decode().split(":", 1)
    auth = {"username": username, "password": password}
    for line in engine.images.push(
        repository_uri, tag=tag, auth_config=auth, stream=True, decode=True
    ):
        if "error" in line:
            raise DeployError(f"pushing {image} failed: {line['error']}")
    return image


def _set_image(apps, namespace: str, deployment: str, container: str, image: str) -> None:
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}}}
    apps.patch_namespaced_deployment(deployment, namespace, patch)


def _rollout_ready(apps, namespace: str, deployment: str, timeout_s: float, poll_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        current = apps.read_namespaced_deployment_status(deployment, namespace)
        status, wanted = current.status, current.spec.replicas or 0
        if (
            (status.observed_generation or 0) >= (current.metadata.generation or 0)
            and (status.updated_replicas or 0) == wanted
            and (status.available_replicas or 0) == wanted
            and not status.unavailable_replicas
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def roll_out(
    apps, namespace: str, deployment: str, image: str, timeout_s: float, poll_s: float = 2.0
) -> None:
    """Set the Deployment's image and wait until every replica runs it; roll back if not."""
    current = apps.read_namespaced_deployment(deployment, namespace)
    container = current.spec.template.spec.containers[0]
    previous_image = container.image
    _set_image(apps, namespace, deployment, container.name, image)
    if _rollout_ready(apps, namespace, deployment, timeout_s, poll_s):
        return
    _set_image(apps, namespace, deployment, container.name, previous_image)
    restored = _rollout_ready(apps, namespace, deployment, timeout_s, poll_s)
    raise DeployError(
        f"{image} did not become ready within {timeout_s:.0f} s; rolled back to {previous_image}"
        + ("" if restored else " (the rollback is not ready yet either: check the cluster)")
    )


def deploy(
    target: str = "k8s",
    model_uri: str = DEFAULT_MODEL_URI,
    output_dir: str | Path = "build/serving",
    ecr_repository: str = "health-predict",
    aws_region: str = "us-east-1",
    namespace: str = "health-predict",
    deployment: str = "health-predict-api",
    rollout_timeout_s: float = 300,
    workers: int = 2,
) -> DeployResult:
    """Deploy ``model_uri`` to ``target`` (``k8s`` or ``local``); see the module docstring."""
    if target not in ("k8s", "local"):
        raise DeployError(f"unknown target {target!r}: use 'k8s' or 'local'")
    config.ensure_experiment(config.DEPLOYMENT_EXPERIMENT)
    model = resolve_model(model_uri)
    with mlflow.start_run(run_name=f"deploy-{target}"):
        mlflow.set_tags({"health_predict.role": "deployment", "health_predict.target": target})
        config.log_resolved_params({"model_uri": model.uri, "model_version": model.version or ""})
        dockerfile = write_hardened_dockerfile(model.uri, Path(output_dir), workers)
        mlflow.log_artifact(str(dockerfile), artifact_path="serving")
        result = DeployResult(target=target, model=model, dockerfile=dockerfile)
        if target == "local":
            with serve.serve_model(model.uri, workers=workers) as base_url:
                result.predictions = serve.smoke_test(
                    base_url, serve.serving_input_example(model.uri)
                )
        else:
            tag = model.image_tag
            missing = missing_prerequisites(aws_region, namespace, deployment)
            if missing:
                raise DeployError(
                    f"stopped before building (Dockerfile written to {dockerfile}; nothing "
                    f"built, pushed or changed): {'; '.join(missing)}"
                )
            from kubernetes import client

            result.image = build_and_push(dockerfile.parent, ecr_repository, tag, aws_region)
            roll_out(client.AppsV1Api(), namespace, deployment, result.image, rollout_timeout_s)
            mlflow.set_tag("health_predict.image", result.image)
        mlflow.set_tag("health_predict.status", "deployed")
    return result


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m steps.deploy --target local``; exits 1 with ``error: ...`` on failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="k8s", choices=("k8s", "local"))
    parser.add_argument("--model-uri", default="")
    parser.add_argument("--output-dir", default="")
    parser.add_argument("--ecr-repository", default="")
    parser.add_argument("--aws-region", default="")
    parser.add_argument("--namespace", default="")
    parser.add_argument("--deployment", default="")
    parser.add_argument("--rollout-timeout-s", type=float, default=300)
    parser.add_argument("--workers", type=float, default=2)
    args = parser.parse_args(argv)
    try:
        result = deploy(
            target=args.target,
            model_uri=args.model_uri or DEFAULT_MODEL_URI,
            output_dir=args.output_dir or "build/serving",
            ecr_repository=args.ecr_repository or "health-predict",
            aws_region=args.aws_region or "us-east-1",
            namespace=args.namespace or "health-predict",
            deployment=args.deployment or "health-predict-api",
            rollout_timeout_s=args.rollout_timeout_s,
            workers=int(args.workers),
        )
    except DeployError as error:
        raise SystemExit(f"error: {error}") from None
    print(
        f"model {result.model.uri} (version {result.model.version}); Dockerfile {result.dockerfile}"
    )
    if result.image:
        print(f"deployed {result.image} to {args.namespace or 'health-predict'}")
    for prediction in result.predictions:
        print(f"smoke test: {prediction}")


if __name__ == "__main__":
    main()
