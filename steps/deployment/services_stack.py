"""The compose services stack (docker-compose.yml): its .env, its images, up, serve and down.

``env`` writes ``.env`` (mode 0600, git-ignored) on first run with generated secrets and keeps
every value already there, then records the tags of the services image (``make images``) and of
the object store's image (``build_store_image``: compiled with cargo on the host). ``up``
builds the images and starts the stack; ``serve`` builds the champion's serving image from the
stack's own MLflow and starts the ``serving`` service; ``down`` removes containers, networks and
volumes. Works with ``docker compose`` (the plugin) or the standalone ``docker-compose``.

    python -m steps.stack up | serve | down | env
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from steps.core import config
from steps.deployment import images
from steps.deployment.images import ImageError

COMPOSE_FILE = config.PROJECT_ROOT / "docker-compose.yml"
# ${NAME}, ${NAME:-default}, ${NAME:?message}; "$${...}" is an escaped dollar, not a variable.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


ENV_FILE = config.PROJECT_ROOT / ".env"


SHARED_ZIP = config.PROJECT_ROOT.parent / "shared" / "data" / "dataset_diabetes.zip"


# The object store's source (s3s-fs behind a main reading its keys from the environment) and
# image; the binary is compiled on the host (a build container reaches no crate registry).
STORE_SOURCE = config.PROJECT_ROOT / "docker" / "store"


STORE_DOCKERFILE = config.PROJECT_ROOT / "docker" / "store.Dockerfile"


STORE_IMAGE_REPOSITORY = "health-predict-store"


STORE_BINARY = "health-predict-store"


def _hex() -> str:
    return secrets.token_hex(24)


def _fernet() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


# Generated on first run, never committed, never passed on a command line.
SECRETS = {
    "POSTGRES_PASSWORD": _hex,
    "AIRFLOW_DB_PASSWORD": _hex,
    "MLFLOW_DB_PASSWORD": _hex,
    "MLFLOW_ADMIN_PASSWORD": _hex,
    "MLFLOW_FLASK_SECRET_KEY": _hex,
    "AIRFLOW_FERNET_KEY": _fernet,
    "AIRFLOW_JWT_SECRET": _hex,
    "AIRFLOW_API_SECRET_KEY": _hex,
    "S3_ACCESS_KEY_ID": lambda: "hp" + secrets.token_hex(8),
    "S3_SECRET_ACCESS_KEY": _hex,
}


# What an MLflow client outside the stack needs: the server advertises multipart downloads (its
# artifact store is S3), whose presigned URLs name the S3 endpoint inside the stack's network
# (http://s3:9000), which the host cannot reach: downloads would hang. Proxied downloads instead.
HOST_CLIENT_ENV = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}


def compose_command() -> list[str]:
    """``docker compose`` when the plugin answers, else ``docker-compose``."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        return [standalone]
    raise ImageError("neither `docker compose` nor `docker-compose` is installed")


def read_env(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value for name, value in pairs if not name.lstrip().startswith("#")}


def write_env(path: Path = ENV_FILE, settings: dict[str, str] | None = None) -> dict[str, str]:
    """``path`` holding every secret (generated when absent) plus ``settings``; returns it all.

    Existing secrets are kept (a stack's database was initialised with them); the file is
    written owner-only.
    """
    values = read_env(path)
    for name, generate in SECRETS.items():
        if not values.get(name):
            values[name] = generate()
    values.update(settings or {})
    if SHARED_ZIP.exists() and "HEALTH_PREDICT_RAW_DATA_DIR" not in values:
        values["HEALTH_PREDICT_RAW_DATA_DIR"] = str(SHARED_ZIP.parent)
        values["HEALTH_PREDICT_RAW_DATA_IN_STACK"] = f"/opt/raw-data/{SHARED_ZIP.name}"
    body = "# Written by `python -m steps.stack env`; secrets generated on first run.\n"
    body += "".join(f"{name}={value}\n" for name, value in values.items())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(body)
    path.chmod(0o600)
    return values


def compose(
    *args: str, env_file: Path = ENV_FILE, project: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a compose command on docker-compose.yml with ``env_file``, the only source of the
    variables the file interpolates (:func:`compose_environment`)."""
    command = [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
    if project:
        command += ["-p", project]
    return subprocess.run(
        [*command, *args], cwd=config.PROJECT_ROOT, env=compose_environment(), check=check,
        capture_output=True, text=True,
    )  # fmt: skip


def compose_environment() -> dict[str, str]:
    """This process's environment without the variables docker-compose.yml interpolates: compose
    lets the shell override the env file, so a ``HEALTH_PREDICT_DATA_URI`` exported for local
    runs would send the stack's containers to a host path instead of the stack's bucket."""
    interpolated = set(VARIABLE.findall(COMPOSE_FILE.read_text()))
    return {name: value for name, value in os.environ.items() if name not in interpolated}


def store_target_dir() -> Path:
    """Cargo's build folder for the store: the user's cache, kept between builds (the first
    build compiles about 200 crates; a repeat with nothing changed takes a second)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache, "health-predict", "store-target")


def build_store_binary() -> Path:
    """The store's binary, compiled by ``cargo build --release --locked`` (Cargo.lock pins every
    crate); an ``ImageError`` naming what is missing when cargo is not installed."""
    cargo = shutil.which("cargo")
    if cargo is None:
        raise ImageError(
            "cargo (Rust's build tool) is not installed: it compiles the stack's object store "
            f"({STORE_SOURCE.relative_to(config.PROJECT_ROOT)}, s3s-fs). Install Rust 1.92 or "
            "newer (https://rustup.rs or your distribution's cargo package) and run this again"
        )
    target = store_target_dir()
    command = [cargo, "build", "--release", "--locked", "--quiet",
               "--manifest-path", str(STORE_SOURCE / "Cargo.toml")]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, env={**os.environ, "CARGO_TARGET_DIR": str(target)}, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-10:])
        raise ImageError(f"cargo failed to build the store (exit {done.returncode}):\n{tail}")
    images.log(f"object store binary: cargo build in {time.monotonic() - started:.0f} s")
    return target / "release" / STORE_BINARY


def build_store_image(client) -> str:
    """``health-predict-store:<content hash>``: the base image plus the host-built binary."""
    binary = build_store_binary()
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy(STORE_DOCKERFILE, context / "Dockerfile")
        shutil.copy(binary, context / STORE_BINARY)
        return images.build(client, context, STORE_IMAGE_REPOSITORY, [])
