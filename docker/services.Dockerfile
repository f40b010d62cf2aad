# Image for the services stack's Python processes: the Airflow components and the MLflow
# tracking server. Airflow's official image plus the project's pinned requirements, so DAG tasks
# can run the MLflow Project entry points with env_manager=local.
FROM docker.io/library/docker:28.2.2-cli AS docker-cli

FROM docker.io/apache/airflow:3.3.2-python3.11

# The deployment DAG builds the API image through the host's Docker socket (compose.kind.yml).
COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker

COPY --chown=airflow:0 requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

ENV PYTHONPATH=/opt/health-predict
WORKDIR /opt/health-predict

USER airflow

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import airflow, mlflow"]
