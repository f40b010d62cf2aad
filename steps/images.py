"""Build the project's images (``make images``): the base, the services image and the champion's
serving image, each rebuilt only when its content changed. How the base is made where no registry
can be reached and where packages come from: ``steps.deployment.images``.
"""

from __future__ import annotations

import argparse
import sys

from steps.core import config
from steps.deployment.images import ImageError, base_image, build_services_image, engine, log
from steps.deployment.model_image import DeployError, build_serving_image


def main(argv: list[str] | None = None) -> int:
    """CLI (``make images``): base, services and, when a champion exists, serving image."""
    parser = argparse.ArgumentParser(description="Build the project's images (idempotent).")
    parser.add_argument("--only", choices=("base", "services", "serving"), action="append")
    args = parser.parse_args(argv)
    wanted = set(args.only or ("base", "services", "serving"))
    try:
        client = engine()
        built = {"base": base_image(client)}
        if "services" in wanted:
            built["services"] = build_services_image(client)
        if "serving" in wanted:
            try:
                built["serving"] = build_serving_image(config.CHAMPION_MODEL_URI).tag
            except DeployError as error:
                log(f"serving image skipped: {error}")
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for role, tag in built.items():
        print(f"{role}: {tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
