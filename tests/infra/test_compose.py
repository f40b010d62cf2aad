"""Wiring of docker-compose.yml (and its kind overlay), checked by parsing.

This machine has no Docker engine, so the stack itself runs here only as local processes
(scripts/local_stack.sh, exercised by tests/integration/test_local_stack.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from steps.core.config import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
KIND_OVERLAY = PROJECT_ROOT / "docker" / "compose.kind.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
SECRET_VARIABLES = {
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "MLFLOW_DB_PASSWORD",
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
}
# ${NAME}, ${NAME:-default}, ${NAME:?message}; "$${...}" is an escaped dollar, not a variable.
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_all_services_are_defined(services):
    assert {"postgres", "mlflow", *AIRFLOW_SERVICES} <= set(services)


def test_images_are_pinned(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name} image {image} is not pinned to a version"
    assert services["postgres"]["image"].startswith("docker.io/library/postgres:16")


def test_python_services_share_the_project_image_built_from_its_dockerfile(services):
    for name in ("mlflow", *AIRFLOW_SERVICES):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/services.Dockerfile", name
        assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (PROJECT_ROOT / "docker" / "services.Dockerfile").read_text()
    assert "apache/airflow:3.3.2" in dockerfile
    assert "requirements.lock" in dockerfile


def test_depends_on_waits_for_health_and_migrations(services):
    assert services["mlflow"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["airflow-init"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"] == {"condition": "service_healthy"}, name
        assert depends_on["mlflow"] == {"condition": "service_healthy"}, name
        assert depends_on["airflow-init"] == {"condition": "service_completed_successfully"}


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name == "airflow-init":
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_postgres_creates_both_databases_from_env(services):
    postgres = services["postgres"]
    mounts = postgres["volumes"]
    assert any(mount.startswith("postgres-data:/var/lib/postgresql/data") for mount in mounts)
    init_mount = next(mount for mount in mounts if "docker-entrypoint-initdb.d" in mount)
    script = PROJECT_ROOT / init_mount.split(":")[0]
    assert script.is_file()
    sql = script.read_text()
    assert "CREATE DATABASE airflow" in sql and "CREATE DATABASE mlflow" in sql
    env = environment(postgres)
    for name in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD"):
        assert env[name] == f"${{{name}:?set {name} in .env}}"


def test_mlflow_uses_postgres_and_an_s3_artifact_destination_from_env(services):
    command = services["mlflow"]["command"]
    assert command[0] == "server"
    backend = command[command.index("--backend-store-uri") + 1]
    assert re.fullmatch(
        r"postgresql\+psycopg2://mlflow:\$\{MLFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/mlflow",
        backend,
    )
    destination = command[command.index("--artifacts-destination") + 1]
    assert destination.startswith("${MLFLOW_ARTIFACTS_DESTINATION:?")
    assert "--serve-artifacts" in command
    assert "--allowed-hosts" in command
    assert (
        "s3://" in ENV_EXAMPLE.read_text().split("MLFLOW_ARTIFACTS_DESTINATION=", 1)[1].split()[0]
    )


def test_airflow_connects_to_its_database_and_mlflow_from_env(services):
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert re.fullmatch(
            r"postgresql\+psycopg2://airflow:\$\{AIRFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/airflow",
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        ), name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:"
        )
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/health-predict/dags"
        assert env["HEALTH_PREDICT_DATA_URI"].startswith("${HEALTH_PREDICT_DATA_URI:?")


def test_airflow_components_run_their_own_commands(services):
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-init": ["db", "migrate"],
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
    }


def test_project_is_mounted_into_every_airflow_service(services):
    for name in AIRFLOW_SERVICES:
        assert "./:/opt/health-predict" in services[name]["volumes"], name


def test_no_hard_coded_secrets(compose):
    text = COMPOSE_FILE.read_text()
    # Credentials inside URIs are always interpolated.
    for user_info in re.findall(r"://([^@/\s]+)@", text):
        assert re.fullmatch(r"[a-z]+:\$\{[A-Z_]+:\?[^}]+\}", user_info), user_info
    secret_keys = re.compile(r"(PASSWORD|SECRET|FERNET|TOKEN|KEY)$")

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and secret_keys.search(key) and isinstance(value, str):
                    assert VARIABLE.fullmatch(value), f"{key} is not taken from the environment"
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(compose)


def test_every_variable_is_declared_in_env_example_without_a_value_for_secrets():
    declared = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            declared[name] = value
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text())) | set(
        VARIABLE.findall(KIND_OVERLAY.read_text())
    )
    assert used <= set(declared), f"not in .env.example: {sorted(used - set(declared))}"
    for name in SECRET_VARIABLES:
        assert declared[name] == "", f"{name} must be empty in .env.example"


def test_env_file_is_git_ignored():
    result = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=PROJECT_ROOT, capture_output=True
    )
    assert result.returncode == 0, ".env must be git-ignored"


def test_kind_overlay_gives_only_the_scheduler_docker_and_the_cluster():
    overlay = yaml.safe_load(KIND_OVERLAY.read_text())
    assert set(overlay["services"]) == {"airflow-scheduler"}
    scheduler = overlay["services"]["airflow-scheduler"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in scheduler["volumes"]
    assert any(volume.endswith(":/opt/airflow/kube:ro") for volume in scheduler["volumes"])
    assert overlay["networks"]["kind"]["external"] is True


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here; the parse-based tests above cover it",
)
def test_docker_compose_config_accepts_the_files(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "\n".join(
            f"{line.split('=', 1)[0]}={line.split('=', 1)[1] or 'x'}"
            for line in ENV_EXAMPLE.read_text().splitlines()
            if line and not line.startswith("#")
        )
    )
    result = subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE),
         "-f", str(KIND_OVERLAY), "config", "--quiet"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
