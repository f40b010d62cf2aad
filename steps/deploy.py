"""Deploy the champion (the ``deploy`` entry point).

``target=k8s``: build the hardened serving image, push it to the registry (ECR in production) and
roll the Deployment out by digest; ``target=docker``: run the image on a loopback port;
``target=local``: serve with ``mlflow models serve``. Each smoke-tests what it started. What each
target does and where it stops: ``steps.deployment.rollout``.
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
