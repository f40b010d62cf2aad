"""Deploy the champion: serving image → registry → Kubernetes rollout, a local container, or a
local scoring server.

Always writes the serving Dockerfile (``mlflow models generate-dockerfile``, then hardened: non-root
user, HEALTHCHECK on /ping, explicit workers, our nginx config, read-only root filesystem ready) and
builds it through :mod:`steps.images` (content-addressed tag, reused when nothing changed).

- ``target=k8s``: a missing Docker engine (or, for an ECR registry, AWS credentials) stops the step
  before building. Otherwise it builds, pushes ``<registry>/<repository>:v<version>`` (the registry
  host is configuration; ECR hosts get boto3-issued credentials; tags are immutable: the push is
  skipped when the tag holds the same image and refused when it holds another), then sets the
  Deployment's image, waits for the rollout and rolls back if it does not become ready. With no
  cluster it stops after the push with one ``error:`` line saying what was done.
- ``target=docker``: runs the image detached on a free loopback port (read-only, tmpfs /tmp),
  waits until healthy, smoke-tests it and prints ``SERVING_URL=... CONTAINER=...``.
- ``target=local``: serves with ``mlflow models serve`` and smoke-tests it with the model's own
  input example.
"""

from __future__ import annotations

import base64
import json
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
from steps import images, serve
from steps.core import config, tracking

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
    url: str | None = None
    container: str | None = None


def resolve_model(model_uri: str) -> ResolvedModel:
    """``models:/name@alias`` and ``models:/name/version`` pinned to their version; others as is."""
    config.configure_mlflow()
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if not match:
        return ResolvedModel(uri=model_uri)
    name, alias, version = match.groups()
    try:
        if alias:
            version = tracking.alias_version(alias, name)
            if version is None:
                raise DeployError(
                    f"cannot resolve {model_uri} in the registry at {config.tracking_uri()}: "
                    f"no alias '{alias}' on model '{name}' (train and register a model first)"
                )
        else:
            mlflow.MlflowClient().get_model_version(name, version)
    except mlflow.exceptions.MlflowException as error:
        raise DeployError(
            f"cannot resolve {model_uri} in the registry at {config.tracking_uri()}: "
            f"{error.message.splitlines()[0]} (train and register a model first)"
        ) from None
    return ResolvedModel(uri=f"models:/{name}/{version}", name=name, version=str(version))


def harden_dockerfile(dockerfile: str, workers: int) -> str:
    """MLflow's generated Dockerfile with our hardening inserted before its ENTRYPOINT.

    ``FROM`` the ``BASE_IMAGE`` build argument (default: MLflow's choice, ``python:3.11-slim``);
    pip reads ``PIP_NO_INDEX``/``PIP_FIND_LINKS`` build arguments when given (offline builds from
    a wheelhouse); nginx and the OpenMP runtime (libgomp1, for the boosted families) are
    installed only if the base lacks them. Replaces nginx's config with ours
    (docker/serving/nginx.conf), links nginx's log and state folders to /tmp (the only writable
    path under a read-only root filesystem), drops MLflow's world-writable chmod, runs as an
    unprivileged user, pins the worker count and request limits, and adds a HEALTHCHECK on /ping.
    """
    head, entrypoint = dockerfile.rsplit("ENTRYPOINT", 1)
    head = re.sub(
        r"^FROM (\S+)\n",
        r"ARG BASE_IMAGE=\1\n# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build argument, "
        r"whose default (MLflow's choice) is a version tag\n"
        r"FROM ${BASE_IMAGE}\nARG PIP_NO_INDEX\nARG PIP_FIND_LINKS\n"
        r"ARG PIP_NO_CACHE_DIR=1\n",
        head,
        count=1,
        flags=re.MULTILINE,
    )
    head = re.sub(
        r"^RUN (apt-get -y update && apt-get install -y --no-install-recommends nginx)$",
        r"RUN (command -v nginx >/dev/null && ldconfig -p | grep -q libgomp.so.1) "
        r"|| (\1 libgomp1)",
        head,
        flags=re.MULTILINE,
    )
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
 && rm -rf /var/log/nginx /var/lib/nginx \\
 && ln -s /tmp /var/log/nginx && ln -s /tmp /var/lib/nginx
ENV MLFLOW_MODELS_WORKERS={workers} \\
    MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=30 \\
    {validation.MAX_BATCH_ROWS_ENV}={validation.DEFAULT_MAX_BATCH_ROWS} \\
    HOME=/tmp \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
EXPOSE 8080
USER {APP_UID}:{APP_UID}
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \\
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


def missing_prerequisites(
    aws_region: str, namespace: str, deployment: str, needs_aws: bool = True
) -> list[str]:
    """Everything a k8s deployment needs that is missing here (empty when all is in place);
    AWS credentials only when the registry is ECR (``needs_aws``)."""
    checks = (
        check_docker(),
        check_aws(aws_region) if needs_aws else None,
        check_cluster(namespace, deployment),
    )
    return [problem for problem in checks if problem]


@dataclass(frozen=True)
class ServingImage:
    """A built serving image: its content-addressed tag and id, and the model it serves."""

    tag: str
    id: str
    model: ResolvedModel
    dockerfile: Path


def build_serving_image(
    model_uri: str,
    output_dir: str | Path = "build/serving",
    workers: int = 2,
    nocache: bool = False,
) -> ServingImage:
    """The hardened serving image of ``model_uri``, built unless the engine already has it.

    The Dockerfile comes from ``mlflow models generate-dockerfile`` (hardened); the image holds
    only the saved model and what its requirements name (see :mod:`steps.images`).
    """
    model = resolve_model(model_uri)
    dockerfile = write_hardened_dockerfile(model.uri, Path(output_dir), workers)
    client = images.engine()
    model_dirs = [p.parent for p in (dockerfile.parent / "model_dir").rglob("requirements.txt")]
    requirements = images.model_requirements(model_dirs[0]) if model_dirs else []
    tag = images.build(
        client, dockerfile.parent, images.SERVING_IMAGE_REPOSITORY, requirements, nocache=nocache
    )
    return ServingImage(tag=tag, id=client.images.get(tag).id, model=model, dockerfile=dockerfile)


ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])  # fmt: skip


@dataclass(frozen=True)
class Registry:
    """Where images are pushed: ``host/repository``; ECR hosts get boto3-issued credentials."""

    host: str
    repository: str
    aws_region: str = "us-east-1"

    @property
    def is_ecr(self) -> bool:
        return ECR_HOST.match(self.host) is not None

    @property
    def image_repository(self) -> str:
        return f"{self.host}/{self.repository}"

    def _ecr(self):
        import boto3

        return boto3.Session(region_name=self.aws_region).client("ecr")

    def auth_config(self) -> dict | None:
        """Docker push credentials: a boto3 ECR token for ECR hosts, else the engine's own."""
        if not self.is_ecr:
            return None
        token = self._ecr().get_authorization_token()["authorizationData"][0]
        username, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
        return {"username": username, "password": password}

    def manifest(self, tag: str) -> tuple[str, dict] | None:
        """(digest, manifest) of ``tag`` in the registry, None when the tag does not exist."""
        if self.is_ecr:
            found = self._ecr().batch_get_image(
                repositoryName=self.repository,
                imageIds=[{"imageTag": tag}],
                acceptedMediaTypes=MANIFEST_TYPES.split(", "),
            )["images"]
            if not found:
                return None
            return found[0]["imageId"]["imageDigest"], json.loads(found[0]["imageManifest"])
        import requests

        scheme = "http" if self.host.split(":")[0] in ("127.0.0.1", "localhost") else "https"
        url = f"{scheme}://{self.host}/v2/{self.repository}/manifests/{tag}"
        response = requests.get(url, headers={"Accept": MANIFEST_TYPES}, timeout=30)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise DeployError(f"registry {self.host} answered {response.status_code} for {url}")
        return response.headers["Docker-Content-Digest"], response.json()


def resolve_registry(registry: str, repository: str, aws_region: str) -> Registry:
    """``registry`` (a host, e.g. ``127.0.0.1:5000`` or an ECR host) or, when empty, the ECR
    repository ``repository`` of the AWS account in use."""
    if registry:
        return Registry(registry.rstrip("/"), repository, aws_region)
    import boto3

    ecr = boto3.Session(region_name=aws_region).client("ecr")
    uri = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0][
        "repositoryUri"
    ]
    host, name = uri.split("/", 1)
    return Registry(host, name, aws_region)


def push_image(image: ServingImage, registry: Registry, tag: str) -> str:
    """Push ``image`` as ``<registry>/<repository>:<tag>``; returns ``repository@digest``.

    Tags are immutable (as on ECR): when the tag already holds this image (same config digest)
    the push is skipped; when it holds another image the deployment stops.
    """
    client = images.engine()
    reference = f"{registry.image_repository}:{tag}"
    existing = registry.manifest(tag)
    if existing is not None:
        digest, manifest = existing
        if manifest.get("config", {}).get("digest") != image.id:
            raise DeployError(
                f"{reference} already holds another image ({digest}); tags are immutable: "
                "register a new model version instead of overwriting this one"
            )
        images.log(f"{reference} already holds this image ({digest}): push skipped")
        return f"{registry.image_repository}@{digest}"
    client.images.get(image.tag).tag(registry.image_repository, tag)
    digest = None
    for line in client.images.push(
        registry.image_repository, tag=tag, auth_config=registry.auth_config(),
        stream=True, decode=True,
    ):  # fmt: skip
        if "error" in line:
            raise DeployError(f"pushing {reference} failed: {line['error']}")
        digest = line.get("aux", {}).get("Digest", digest)
    if digest is None:
        raise DeployError(f"pushing {reference} returned no digest")
    images.log(f"pushed {reference} ({digest})")
    return f"{registry.image_repository}@{digest}"


def run_container(
    image: str, port: int | None = None, timeout_s: float = 180, **options
) -> tuple[object, str]:
    """Start ``image`` detached on 127.0.0.1:``port`` (free if None), read-only with a tmpfs
    /tmp as in k8s/deployment.yaml, and wait until its health check says healthy.

    Returns (container, base URL). A container that exits, or is not healthy within
    ``timeout_s``, is removed and the error carries its last log lines.
    """
    client = images.engine()
    port = port or serve.free_port()
    container = client.containers.run(
        image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True,
        tmpfs={"/tmp": "rw,size=256m,mode=1777"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], **options,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    status = "starting"
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status == "healthy":
            return container, f"http://127.0.0.1:{port}"
        if container.status in ("exited", "dead"):
            break
        time.sleep(1)
    tail = container.logs(tail=15).decode(errors="replace")
    container.remove(force=True)
    raise DeployError(f"{image} did not become healthy (health {status}); last log lines:\n{tail}")


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


TARGETS = ("k8s", "docker", "local")


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
    registry: str = "",
) -> DeployResult:
    """Deploy ``model_uri`` to ``target`` (``k8s``, ``docker`` or ``local``); see the module
    docstring. ``registry`` is the image registry host (empty: the ECR repository
    ``ecr_repository`` of the AWS account in use)."""
    if target not in TARGETS:
        raise DeployError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    config.ensure_experiment(config.DEPLOYMENT_EXPERIMENT)
    model = resolve_model(model_uri)
    with mlflow.start_run(run_name=f"deploy-{target}"):
        mlflow.set_tags({tracking.STEP_TAG: "deploy", "health_predict.target": target})
        config.log_resolved_params({"model_uri": model.uri, "model_version": model.version or ""})
        if target == "local":
            dockerfile = write_hardened_dockerfile(model.uri, Path(output_dir), workers)
            mlflow.log_artifact(str(dockerfile), artifact_path="serving")
            result = DeployResult(target=target, model=model, dockerfile=dockerfile)
            with serve.serve_model(model.uri, workers=workers) as base_url:
                result.predictions = serve.smoke_test(
                    base_url, serve.serving_input_example(model.uri)
                )
        elif target == "docker":
            result = _deploy_docker(model, Path(output_dir), workers)
        else:
            result = _deploy_k8s(
                model, Path(output_dir), workers, registry, ecr_repository, aws_region,
                namespace, deployment, rollout_timeout_s,
            )  # fmt: skip
        mlflow.set_tag("health_predict.status", "deployed")
    return result


def _deploy_docker(model: ResolvedModel, output_dir: Path, workers: int) -> DeployResult:
    """Build the image, run it detached on a free loopback port, wait healthy, smoke-test."""
    if problem := check_docker():
        raise DeployError(problem)
    image = build_serving_image(model.uri, output_dir, workers)
    mlflow.log_artifact(str(image.dockerfile), artifact_path="serving")
    mlflow.set_tag("health_predict.image", image.tag)
    container, base_url = run_container(image.tag)
    try:
        predictions = serve.smoke_test(base_url, serve.serving_input_example(model.uri))
    except serve.ServingError:
        container.remove(force=True)
        raise
    mlflow.set_tags({"health_predict.container": container.id, "health_predict.url": base_url})
    return DeployResult(
        target="docker", model=model, dockerfile=image.dockerfile, image=image.tag,
        predictions=predictions, url=base_url, container=container.id,
    )  # fmt: skip


def _deploy_k8s(
    model: ResolvedModel, output_dir: Path, workers: int, registry: str, repository: str,
    aws_region: str, namespace: str, deployment: str, rollout_timeout_s: float,
) -> DeployResult:  # fmt: skip
    """Build, push (immutable tag ``v<version>``), then roll out; stops with what was done."""
    tag = model.image_tag
    needs_aws = not registry or ECR_HOST.match(registry) is not None
    missing = missing_prerequisites(aws_region, namespace, deployment, needs_aws=needs_aws)
    cluster_problem = check_cluster_problem(missing)
    if [problem for problem in missing if problem != cluster_problem]:
        dockerfile = write_hardened_dockerfile(model.uri, output_dir, workers)
        raise DeployError(
            f"stopped before building (Dockerfile written to {dockerfile}; nothing "
            f"built, pushed or changed): {'; '.join(missing)}"
        )
    image = build_serving_image(model.uri, output_dir, workers)
    mlflow.log_artifact(str(image.dockerfile), artifact_path="serving")
    target_registry = resolve_registry(registry, repository, aws_region)
    pushed = push_image(image, target_registry, tag)
    reference = f"{target_registry.image_repository}:{tag}"
    mlflow.set_tags({"health_predict.image": reference, "health_predict.image_digest": pushed})
    if cluster_problem:
        raise DeployError(
            f"built {image.tag} and pushed it as {reference} ({pushed}); stopped at the "
            f"cluster step, nothing rolled out: {cluster_problem}"
        )
    from kubernetes import client

    roll_out(client.AppsV1Api(), namespace, deployment, reference, rollout_timeout_s)
    return DeployResult(target="k8s", model=model, dockerfile=image.dockerfile, image=reference)


def check_cluster_problem(missing: list[str]) -> str | None:
    """The cluster's entry among ``missing`` problems, if any."""
    markers = ("Kubernetes", "Deployment ")
    return next((p for p in missing if any(m in p for m in markers)), None)


HELP = {
    "target": "k8s (image, ECR, rollout), docker (image, local container) or local (serve here)",
    "model_uri": "model to deploy; an alias is pinned to its version",
    "output_dir": "where the hardened Dockerfile and its context are written",
    "ecr_repository": "ECR repository of the image (k8s)",
    "aws_region": "AWS region of ECR and the cluster (k8s)",
    "namespace": "Kubernetes namespace of the Deployment",
    "deployment": "Kubernetes Deployment whose image is set",
    "rollout_timeout_s": "seconds to wait for the rollout before rolling back",
    "workers": "scoring-server workers per container",
    "registry": "image registry host (empty: the ECR registry of the AWS account in use)",
}


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m steps.deploy --target local``; exits 1 with ``error: ...`` on failure.

    ``--target docker`` ends with ``SERVING_URL=http://127.0.0.1:<port> CONTAINER=<id>``.
    """
    parser = config.entry_point_parser("deploy", __doc__, HELP)
    args = parser.parse_args(argv)
    try:
        result = deploy(
            target=args.target,
            model_uri=args.model_uri,
            output_dir=args.output_dir,
            ecr_repository=args.ecr_repository,
            aws_region=args.aws_region,
            namespace=args.namespace,
            deployment=args.deployment,
            rollout_timeout_s=args.rollout_timeout_s,
            workers=args.workers,
            registry=args.registry,
        )
    except (DeployError, images.ImageError, serve.ServingError) as error:
        raise SystemExit(f"error: {error}") from None
    print(
        f"model {result.model.uri} (version {result.model.version}); Dockerfile {result.dockerfile}"
    )
    if result.target == "k8s":
        print(f"deployed {result.image} to {args.namespace}")
    for prediction in result.predictions:
        print(f"smoke test: {prediction}")
    if result.target == "docker":
        print(f"SERVING_URL={result.url} CONTAINER={result.container}")


if __name__ == "__main__":
    main()
