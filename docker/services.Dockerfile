# Image for every service of the compose stack but the model server: PostgreSQL (Debian's), the
# MLflow tracking server and the Airflow 3 components, all on the project's pinned
# requirements.lock, so DAG tasks run the MLflow Project entry points with env_manager=local.
# Built by `make images` (steps/deployment/images.py) FROM the BASE_IMAGE build argument; pip reads
# PIP_NO_INDEX/PIP_FIND_LINKS when given (offline builds from the host's wheelhouse).
ARG BASE_IMAGE=python:3.11-slim
# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build argument, whose default python:3.11-slim is a version tag
FROM ${BASE_IMAGE}
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_NO_CACHE_DIR=1

RUN apt-get -y update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      postgresql-15 curl git \
 && rm -rf /var/lib/apt/lists/*

# requirements-services.lock: the runtime subset of requirements.lock (no test tools, no GPU-only
# NCCL). pip installs the pinned uv, uv installs the rest in parallel with bytecode compiled once
# here (the services run with PYTHONDONTWRITEBYTECODE), from the same source pip was given.
COPY requirements-services.lock /tmp/requirements.lock
RUN pip install --no-deps "$(grep -m1 '^uv==' /tmp/requirements.lock)" \
 && uv pip install --python "$(command -v python)" --no-deps --compile-bytecode --no-cache \
      ${PIP_NO_INDEX:+--no-index} ${PIP_FIND_LINKS:+--find-links $PIP_FIND_LINKS} \
      -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# The Airflow user (uid 50000, group 0 as in Airflow's official image) and its writable home.
# Named volumes start with the ownership of these folders: Airflow's, the MLflow auth database's
# and PostgreSQL's data folder.
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow \
 && mkdir -p /opt/airflow/logs /opt/airflow/auth /var/lib/mlflow-auth /var/lib/postgresql/data \
 && chown -R 50000:0 /opt/airflow /var/lib/mlflow-auth && chmod -R g+rwX /opt/airflow \
 && chown postgres:postgres /var/lib/postgresql/data

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONPATH=/opt/health-predict \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/health-predict
USER 50000:0

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import airflow, mlflow"]
