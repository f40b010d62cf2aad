"""The compose services stack (docker-compose.yml): its .env, its images, up, serve and down.

``env`` writes ``.env`` (mode 0600, git-ignored) on first run with generated secrets and keeps
every value already there, then records the image tags. ``up`` builds the images (the object
store's binary with cargo, which must be installed) and starts the stack; ``serve`` builds the
champion's serving image from the stack's own MLflow and starts the ``serving`` service;
``down`` removes containers and networks and keeps the volumes (the registry's database, the
object store's data, auth) unless ``--volumes``. Works with ``docker compose`` (the plugin) or the
standalone ``docker-compose``.

    python -m steps.stack up | serve | down [--volumes] | env
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from steps.core import config
from steps.deployment import images
from steps.deployment.model_image import build_serving_image
from steps.deployment.services_stack import (
    ENV_FILE,
    HOST_CLIENT_ENV,
    build_store_image,
    compose,
    read_env,
    write_env,
)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``env``, ``up``, ``serve`` or ``down``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("env", "up", "serve", "down"))
    parser.add_argument(
        "--volumes", action="store_true",
        help="with down: delete the volumes too (the MLflow registry, Airflow metadata, artifacts)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.action == "down":
            volumes = ["--volumes"] if args.volumes else []
            compose("--profile", "serving", "down", *volumes, "--remove-orphans")
            return 0
        client = images.engine()
        # The store first: a missing cargo stops before the long services build.
        settings = {"STORE_IMAGE": build_store_image(client)}
        settings["SERVICES_IMAGE"] = images.build_services_image(client)
        if args.action == "serve":
            values = read_env(ENV_FILE)
            os.environ.setdefault(
                "MLFLOW_TRACKING_URI", f"http://127.0.0.1:{values.get('MLFLOW_PORT', '5000')}"
            )
            os.environ.setdefault("MLFLOW_TRACKING_USERNAME", "admin")
            os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", values["MLFLOW_ADMIN_PASSWORD"])
            os.environ.update(HOST_CLIENT_ENV)
            settings["SERVING_IMAGE"] = build_serving_image(config.CHAMPION_MODEL_URI).tag
        write_env(ENV_FILE, settings)
        if args.action == "up":
            compose("up", "-d")
        elif args.action == "serve":
            compose("--profile", "serving", "up", "-d", "serving")
    except (images.ImageError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or ""
        print(f"error: {error} {detail.strip()[-500:]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
