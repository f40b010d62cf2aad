# Image of the compose stack's object store: health-predict-store (docker/store/: s3s-fs's S3
# server with SigV4 for one key pair), compiled on the host with cargo by `python -m steps.stack
# up` (steps/deployment/services_stack.py) and copied in, since a build container reaches no
# registry. FROM the BASE_IMAGE build argument like every image here (Debian bookworm; the build
# fails below if the host's binary needs a newer glibc than the base has). No key is baked in:
# S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY come from the stack's .env at run time.
ARG BASE_IMAGE=python:3.11-slim
# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build argument, whose default python:3.11-slim is a version tag
FROM ${BASE_IMAGE}

COPY health-predict-store /usr/local/bin/health-predict-store
# A dynamic library or glibc symbol version the base lacks fails the build here, not at start.
RUN ! ldd /usr/local/bin/health-predict-store | grep "not found" \
 && useradd --system --uid 10001 --gid 0 --home-dir /nonexistent --shell /usr/sbin/nologin store \
 && mkdir -p /var/lib/health-predict-store \
 && chown 10001:0 /var/lib/health-predict-store && chmod 0770 /var/lib/health-predict-store

# The compose stack mounts the store-data volume here; a new volume takes this folder's owner.
USER 10001:0
EXPOSE 9000
ENV STORE_ADDRESS=0.0.0.0:9000
ENTRYPOINT ["/usr/local/bin/health-predict-store", "/var/lib/health-predict-store"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=5 \
    CMD ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 9000), 4).close()"]
