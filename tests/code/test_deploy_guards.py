"""The deploy step's guards that need no model, Docker engine or cluster: an unreadable
kubeconfig, the default build folder, and never deleting a folder deploy did not write."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from steps.core import config
from steps.deployment import model_image, oci
from tests.airflow_uid import check_cluster_as_airflow_uid


def test_unreadable_kubeconfig_is_one_clear_problem_not_a_traceback():
    """As the Airflow uid (50000) against a root-owned 0600 kubeconfig, as on the EC2 host before
    the user data gave the scheduler its own copy."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)
        kubeconfig = Path(folder, "config")
        kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
        kubeconfig.chmod(0o600)
        check = check_cluster_as_airflow_uid(str(kubeconfig))
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().startswith(
        f"the Kubernetes config {kubeconfig} is not readable by uid 50000"
    )


def test_default_build_folder_is_outside_the_read_only_project_mount(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = model_image.serving_build_dir(config.project_defaults("deploy")["output_dir"])
    assert default == tmp_path / ".cache" / "health-predict" / "serving"
    assert not default.is_relative_to(config.PROJECT_ROOT)


def test_a_folder_deploy_did_not_write_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("not the deploy step's")
    with pytest.raises(model_image.DeployError, match=r"was not written by deploy.*nothing was"):
        model_image.write_hardened_dockerfile("runs:/none/model", tmp_path, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "not the deploy step's"
    assert sorted(p.name for p in tmp_path.parent.iterdir() if ".partial" in p.name) == []


class FakeRegistry(oci.Registry):
    """Fake of a registry's manifest API (no registry runs in this fast test; the real push and
    pull-back are in tests/infra/test_deploy_docker.py): a tag holding an OCI index."""

    def __init__(self, manifests: dict[str, dict]):
        super().__init__("registry.example:5000", "health-predict")
        self.manifests = manifests

    def manifest(self, tag: str):
        return (tag, self.manifests[tag]) if tag in self.manifests else None


LOCAL_CONFIG = "sha256:" + "c" * 64


def test_an_index_holding_the_local_image_is_the_same_image():
    platform = {"config": {"digest": LOCAL_CONFIG}, "layers": []}
    attestation = {"config": {"digest": "sha256:" + "a" * 64}, "layers": []}
    index = {"manifests": [{"digest": "sha256:" + "1" * 64}, {"digest": "sha256:" + "2" * 64}]}
    registry = FakeRegistry({
        "sha256:" + "1" * 64: attestation, "sha256:" + "2" * 64: platform, "v3": index,
    })  # fmt: skip
    assert oci.holds_image(registry, "sha256:" + "9" * 64, index, {LOCAL_CONFIG})
    other = {"sha256:" + "d" * 64}
    assert not oci.holds_image(registry, "sha256:" + "9" * 64, index, other)
    # The engine's own record of the pushed digest (containerd store: no config to compare).
    assert oci.holds_image(registry, "sha256:" + "9" * 64, index, {"sha256:" + "9" * 64})
    assert "application/vnd.oci.image.index.v1+json" in oci.MANIFEST_TYPES
