"""The image registry: ECR or any OCI registry host, its credentials, manifests and pushes."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import requests

from steps.deployment import images
from steps.deployment.model_image import DeployError, ServingImage


def check_aws(region: str) -> str | None:
    """None if AWS credentials work (STS GetCallerIdentity), else how to provide them."""
    # lazy: boto3 takes ~0.8 s to import; only an ECR registry needs it
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


ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    # What BuildKit and the containerd image store push: an index of per-platform manifests.
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
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
        # lazy: boto3 takes ~0.8 s to import; only an ECR registry needs it
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
        """(digest, manifest) of ``tag`` (or a ``sha256:`` digest) in the registry, None when it
        does not exist."""
        if self.is_ecr:
            key = "imageDigest" if tag.startswith("sha256:") else "imageTag"
            found = self._ecr().batch_get_image(
                repositoryName=self.repository,
                imageIds=[{key: tag}],
                acceptedMediaTypes=MANIFEST_TYPES.split(", "),
            )["images"]
            if not found:
                return None
            return found[0]["imageId"]["imageDigest"], json.loads(found[0]["imageManifest"])
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
    # lazy: boto3 takes ~0.8 s to import; only an ECR registry needs it
    import boto3

    ecr = boto3.Session(region_name=aws_region).client("ecr")
    uri = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0][
        "repositoryUri"
    ]
    host, name = uri.split("/", 1)
    return Registry(host, name, aws_region)


def holds_image(registry: Registry, digest: str, manifest: dict, identities: set[str]) -> bool:
    """Whether the registry's ``digest``/``manifest`` is the local image known by
    ``identities`` (its id, which is its config digest, and the digests the engine recorded for
    it): the digest itself, the manifest's config, or, for an index, one of its manifests'."""
    if digest in identities:
        return True
    if "manifests" in manifest:
        for entry in manifest["manifests"]:
            found = registry.manifest(entry["digest"])
            if found is not None and holds_image(registry, *found, identities):
                return True
        return False
    return manifest.get("config", {}).get("digest") in identities


def push_image(image: ServingImage, registry: Registry, tag: str) -> str:
    """Push ``image`` as ``<registry>/<repository>:<tag>``; returns ``repository@digest``.

    Tags are immutable (as on ECR): when the tag already holds this image (see
    :func:`holds_image`; image manifests and indexes) the push is skipped; when it holds another
    image the deployment stops.
    """
    client = images.engine()
    reference = f"{registry.image_repository}:{tag}"
    existing = registry.manifest(tag)
    if existing is not None:
        digest, manifest = existing
        recorded = client.images.get(image.tag).attrs.get("RepoDigests") or []
        identities = {image.id, *(entry.rsplit("@", 1)[-1] for entry in recorded)}
        if not holds_image(registry, digest, manifest, identities):
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
