"""Offline checks of the Kubernetes manifests in k8s/.

Every manifest is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
unknown fields fail), the kustomization is rendered with ``kubectl kustomize`` where kubectl is
installed, and the security properties the serving design relies on are asserted. checkov over
k8s/ runs in tests/infra's checkov test.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from steps.core import config
from steps.deployment import model_image

K8S_DIR = config.PROJECT_ROOT / "k8s"
MANIFESTS = (
    "namespace.yaml", "deployment.yaml", "service.yaml", "networkpolicy.yaml", "hpa.yaml",
    "pdb.yaml",
)  # fmt: skip
K8S_VERSION = kubernetes_validate.latest_version()


def load(name: str) -> dict:
    return yaml.safe_load((K8S_DIR / name).read_text())


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_matches_the_kubernetes_schema(name):
    kubernetes_validate.validate(load(name), K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_sets_the_image():
    kustomization = load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)
    assert {p.name for p in K8S_DIR.glob("*.yaml")} == {*MANIFESTS, "kustomization.yaml"}
    (image,) = kustomization["images"]
    container = load("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].split(":")[0] == image["name"]
    assert re.fullmatch(r"v\d+", image["newTag"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_kustomize_renders_valid_objects_with_the_pinned_image():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], check=True, capture_output=True, text=True
    ).stdout
    objects = list(yaml.safe_load_all(rendered))
    assert sorted(o["kind"] for o in objects) == [
        "Deployment", "HorizontalPodAutoscaler", "Namespace", "NetworkPolicy",
        "PodDisruptionBudget", "Service",
    ]  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "health-predict"
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    image = load("kustomization.yaml")["images"][0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"


def test_namespace_enforces_restricted_pod_security():
    labels = load("namespace.yaml")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_is_replicated_probed_limited_and_locked_down():
    spec = load("deployment.yaml")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["runAsUser"] == model_image.APP_UID


def test_every_path_nginx_writes_is_an_emptydir_mount():
    pod = load("deployment.yaml")["spec"]["template"]["spec"]
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = [
        m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] in empty_dirs
    ]
    nginx_conf = model_image.NGINX_CONF.read_text()
    written = re.findall(
        r"^\s*(?:pid|error_log|access_log|\w+_temp_path)\s+(/\S+?)[;\s]", nginx_conf, re.M
    )
    assert len(written) >= 7
    for path in written:
        if path in ("/dev/stdout", "/dev/stderr"):  # the container's log streams
            continue
        assert any(path.startswith(mount + "/") for mount in mounts), path


def test_service_is_a_nodeport_to_the_api_pods():
    service = load("service.yaml")["spec"]
    assert service["type"] == "NodePort"
    pod_labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    assert service["ports"][0]["targetPort"] == "http"


def test_network_policy_admits_only_http_and_no_egress():
    policy = load("networkpolicy.yaml")["spec"]
    pod_labels = load("deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    assert policy["egress"] == []


def test_autoscaler_and_disruption_budget_keep_the_api_available():
    deployment = load("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = load("hpa.yaml")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"],
    }  # fmt: skip
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert hpa["minReplicas"] == deployment["spec"]["replicas"]
    pdb = load("pdb.yaml")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"]
