"""Build the project's images: the base, the services image and the champion's serving image.

Every Dockerfile starts ``FROM`` the build argument ``BASE_IMAGE`` whose default is the public
``python:3.11-slim``, so a user with internet access builds exactly what is tested here. Where no
image registry can be reached, the base is made locally instead: Debian's ``debootstrap`` builds a
minimal bookworm root filesystem (its python3 is 3.11, plus nginx and a virtualenv at
``/usr/local/python`` that stands in for the slim image's ``/usr/local`` Python) and ``docker
import`` turns it into ``health-predict-base:bookworm-<recipe hash>``.

Python packages come from PyPI when a build container can reach it, else from a wheelhouse built
on the host from ``requirements.lock`` (cached under ``.cache/wheelhouse``, git-ignored) and served
to the build over loopback; only the ``PIP_NO_INDEX``/``PIP_FIND_LINKS`` build arguments differ.

Image tags are content-addressed (a hash of the build context and of the base image's id), so
``make images`` (``python -m steps.images``) rebuilds only what changed and says what it did.
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
