"""Deploy the champion: serving image → registry → Kubernetes rollout, a local container, or a
local scoring server.

Always writes the serving Dockerfile (``mlflow models generate-dockerfile``, then hardened: non-root
user, HEALTHCHECK on /ping, explicit workers, our nginx config, read-only root filesystem ready) and
builds it through :mod:`steps.images` (content-addressed tag, reused when nothing changed).

- ``target=k8s``: a missing Docker engine (or, for an ECR registry, AWS credentials) stops the step
  before building. Otherwise it builds, pushes ``<registry>/<repository>:v<version>`` (the registry
  host is configuration; ECR hosts get boto3-issued credentials; tags are immutable: the push is
  skipped when the tag holds the same image and refused when it holds another), then sets the
  Deployment's image to the pushed digest, waits for the rollout and rolls back if it does not
  become ready. With no cluster it stops after the push with one ``error:`` line saying what was
  done.
- ``target=docker``: runs the image detached on a free loopback port (read-only, tmpfs /tmp,
  2 GB memory limit), waits until healthy, smoke-tests it, removes the previous deploy's
  container and prints ``SERVING_URL=... CONTAINER=...``.
- ``target=local``: serves with ``mlflow models serve`` and smoke-tests it with the model's own
  input example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from steps.core import config, tracking
from steps.deployment import server
from steps.deployment.docker_run import (
    SERVING_LABEL,
    check_docker,
    remove_previous,
    run_container,
)
from steps.deployment.kubernetes import check_cluster, check_cluster_problem, roll_out
from steps.deployment.model_image import (
    DeployError,
    ResolvedModel,
    build_serving_image,
    resolve_model,
    write_hardened_dockerfile,
)
from steps.deployment.oci import ECR_HOST, check_aws, push_image, resolve_registry


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


TARGETS = ("k8s", "docker", "local")


def deploy(
    target: str = "k8s",
    model_uri: str = config.CHAMPION_MODEL_URI,
    output_dir: str | Path = "",
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
        mlflow.set_tags({tracking.STEP_TAG: "deploy", tracking.TARGET_TAG: target})
        config.log_resolved_params({"model_uri": model.uri, "model_version": model.version or ""})
        if target == "local":
            dockerfile = write_hardened_dockerfile(model.uri, output_dir, workers)
            mlflow.log_artifact(str(dockerfile), artifact_path="serving")
            result = DeployResult(target=target, model=model, dockerfile=dockerfile)
            with server.serve_model(model.uri, workers=workers) as base_url:
                result.predictions = server.smoke_test(
                    base_url, server.serving_input_example(model.uri)
                )
        elif target == "docker":
            result = _deploy_docker(model, output_dir, workers)
        else:
            result = _deploy_k8s(
                model, output_dir, workers, registry, ecr_repository, aws_region,
                namespace, deployment, rollout_timeout_s,
            )  # fmt: skip
        mlflow.set_tag(tracking.STATUS_TAG, "deployed")
    return result


def _deploy_docker(model: ResolvedModel, output_dir: str | Path, workers: int) -> DeployResult:
    """Build the image, run it detached on a free loopback port, wait healthy, smoke-test."""
    if problem := check_docker():
        raise DeployError(problem)
    image = build_serving_image(model.uri, output_dir, workers)
    mlflow.log_artifact(str(image.dockerfile), artifact_path="serving")
    mlflow.set_tag(tracking.IMAGE_TAG, image.tag)
    container, base_url = run_container(image.tag, labels={SERVING_LABEL: model.uri})
    try:
        predictions = server.smoke_test(base_url, server.serving_input_example(model.uri))
    except server.ServingError:
        container.remove(force=True)
        raise
    # The new container answers: the previous deployment's goes (only then, never before).
    for removed in remove_previous(keep=container.id):
        print(f"removed the previous serving container {removed}")
    mlflow.set_tags({tracking.CONTAINER_TAG: container.id, tracking.URL_TAG: base_url})
    return DeployResult(
        target="docker", model=model, dockerfile=image.dockerfile, image=image.tag,
        predictions=predictions, url=base_url, container=container.id,
    )  # fmt: skip


def _deploy_k8s(
    model: ResolvedModel, output_dir: str | Path, workers: int, registry: str, repository: str,
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
    mlflow.set_tags({tracking.IMAGE_TAG: reference, tracking.IMAGE_DIGEST_TAG: pushed})
    if cluster_problem:
        raise DeployError(
            f"built {image.tag} and pushed it as {reference} ({pushed}); stopped at the "
            f"cluster step, nothing rolled out: {cluster_problem}"
        )
    # lazy: the kubernetes client takes ~1.7 s to import; only the `k8s` target needs it
    from kubernetes import client

    # By digest: the Deployment runs exactly the image pushed, whatever the tag says later.
    roll_out(client.AppsV1Api(), namespace, deployment, pushed, rollout_timeout_s)
    return DeployResult(target="k8s", model=model, dockerfile=image.dockerfile, image=pushed)
