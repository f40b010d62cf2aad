"""The Kubernetes rollout: cluster checks, setting the Deployment's image, waiting, rolling back."""

from __future__ import annotations

import os
import time

from steps.deployment.model_image import DeployError


def check_cluster(namespace: str, deployment: str) -> str | None:
    """None if a cluster is configured and holds the Deployment, else how to get there."""
    # lazy: the kubernetes client takes ~1.7 s to import; only the `k8s` target needs it
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        kube_config.load_kube_config()
    except PermissionError as error:
        return (
            f"the Kubernetes config {error.filename} is not readable by uid {os.getuid()} (give "
            "that user read access, e.g. chown the file to the uid that runs this step)"
        )
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


def check_cluster_problem(missing: list[str]) -> str | None:
    """The cluster's entry among ``missing`` problems, if any."""
    markers = ("Kubernetes", "Deployment ")
    return next((p for p in missing if any(m in p for m in markers)), None)
