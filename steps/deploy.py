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

from steps.core import config
from steps.deployment import images, server
from steps.deployment.model_image import DeployError
from steps.deployment.rollout import deploy

HELP = {
    "target": "k8s (image, ECR, rollout), docker (image, local container) or local (serve here)",
    "model_uri": "model to deploy; an alias is pinned to its version",
    "output_dir": (
        "where the hardened Dockerfile and its context are written (empty: "
        "~/.cache/health-predict/serving); an existing folder deploy did not write is refused"
    ),
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
    config.configure_logging()
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
    except (DeployError, images.ImageError, server.ServingError) as error:
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
