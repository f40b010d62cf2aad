"""The serving image run as a local container, as the cluster runs it."""

from __future__ import annotations

import time

from steps.deployment import images, server
from steps.deployment.model_image import DeployError


def check_docker() -> str | None:
    """None if a Docker engine answers, else what is missing and how to provide it."""
    # lazy: the docker SDK (~0.5 s to import) is needed only for the `local` target
    import docker

    try:
        docker.from_env(timeout=10).ping()
    except docker.errors.DockerException:
        return "no Docker engine reachable (start Docker, or set DOCKER_HOST to a running engine)"
    return None


# Every serving container deploy starts carries this label; a new deploy replaces the previous.
SERVING_LABEL = "org.health-predict.serving"
# As k8s/deployment.yaml's limit: a runaway request cannot take the host's memory.
MEMORY_LIMIT = "2g"


def remove_previous(keep: str) -> list[str]:
    """Stop and remove every labelled serving container except ``keep``; their short ids."""
    removed = []
    for container in images.engine().containers.list(all=True, filters={"label": SERVING_LABEL}):
        if container.id != keep:
            container.remove(force=True)
            removed.append(container.short_id)
    return removed


def run_container(
    image: str, port: int | None = None, timeout_s: float = 180, **options
) -> tuple[object, str]:
    """Start ``image`` detached on 127.0.0.1:``port`` (free if None), read-only with a tmpfs
    /tmp and a memory limit as in k8s/deployment.yaml, and wait until its health check says
    healthy.

    Returns (container, base URL). A container that exits, or is not healthy within
    ``timeout_s``, is removed and the error carries its last log lines.
    """
    client = images.engine()
    port = port or server.free_port()
    container = client.containers.run(
        image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True,
        tmpfs={"/tmp": "rw,size=256m,mode=1777"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], mem_limit=MEMORY_LIMIT, **options,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    status = "starting"
    while time.monotonic() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status", "none")
        if status == "healthy":
            return container, f"http://127.0.0.1:{port}"
        if container.status in ("exited", "dead"):
            break
        time.sleep(1)
    tail = container.logs(tail=15).decode(errors="replace")
    container.remove(force=True)
    raise DeployError(f"{image} did not become healthy (health {status}); last log lines:\n{tail}")
