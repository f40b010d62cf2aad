"""Wiring of docker-compose.yml (and its kind overlay), checked by parsing and by the real
``docker compose config``; the stack itself runs in tests/integration/test_compose_stack.py.
"""

from __future__ import annotations

import json
import re
import stat

import pytest
import yaml

from steps.core.config import PROJECT_ROOT
from steps.deployment import images, services_stack

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
KIND_OVERLAY = PROJECT_ROOT / "docker" / "compose.kind.yml"
AWS_OVERLAY = PROJECT_ROOT / "docker" / "compose.aws.yml"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
ONE_SHOT = {"airflow-init", "s3-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def test_all_services_are_defined(services):
    assert {"postgres", "s3", "mlflow", "serving", *AIRFLOW_SERVICES} <= set(services)


def test_every_image_is_one_built_here(services):
    for name, service in services.items():
        assert "build" not in service, f"{name}: images come from `make images`"
        image = service["image"]
        assert re.fullmatch(r"\$\{(SERVICES|STORE|SERVING)_IMAGE[:?-][^}]*\}", image), name


def test_depends_on_waits_for_health_and_one_shot_steps(services):
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "s3-init": {"condition": "service_completed_successfully"},
    }
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"] == {"condition": "service_healthy"}, name
        assert depends_on["mlflow"] == {"condition": "service_healthy"}, name
        assert depends_on["airflow-init"] == {"condition": "service_completed_successfully"}


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name in ONE_SHOT or name == "serving":  # the serving image has its own HEALTHCHECK
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_ports_are_published_on_loopback_by_default(services):
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"mlflow", "airflow-apiserver", "serving"}
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), (name, port)


def test_no_secret_on_any_command_line(services):
    for name, service in services.items():
        argv = " ".join(map(str, [*service.get("entrypoint", []), *service.get("command", [])]))
        assert not re.search(r"PASSWORD|SECRET|FERNET|KEY|://[^/\s]+@", argv), (name, argv)
    # The scripts hand passwords over by file descriptor, environment or config file only.
    programs = r"^\s*(?:exec\s+)?(?:initdb|pg_ctl|postgres|psql|mlflow)\b[^\n]*"
    for script in ("postgres/entrypoint.sh", "postgres/init-databases.sh", "mlflow/entrypoint.sh"):
        text = (PROJECT_ROOT / "docker" / script).read_text().replace("\\\n", " ")
        assert not re.search(programs + r"PASSWORD", text, re.M), script


def test_mlflow_is_behind_its_basic_auth_app_on_postgres_and_s3(services):
    mlflow = services["mlflow"]
    env = environment(mlflow)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:${")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    script = (PROJECT_ROOT / "docker" / "mlflow" / "entrypoint.sh").read_text()
    assert "--app-name basic-auth" in script and "--serve-artifacts" in script
    assert "--backend-store-uri" not in script  # read from MLFLOW_BACKEND_STORE_URI
    for name in AIRFLOW_SERVICES:
        airflow_env = environment(services[name])
        assert airflow_env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert airflow_env["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")


def test_airflow_runs_local_executor_on_postgres(services):
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert re.fullmatch(
            r"postgresql\+psycopg2://airflow:\$\{AIRFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/airflow",
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        ), name
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/health-predict/dags"
    init = services["airflow-init"]["entrypoint"]
    assert init == ["bash", "/opt/health-predict/docker/airflow/init.sh"]
    script = (PROJECT_ROOT / "docker" / "airflow" / "init.sh").read_text()
    assert "airflow db migrate" in script and "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in script
    commands = {
        name: services[name]["command"] for name in AIRFLOW_SERVICES if name != "airflow-init"
    }
    assert commands == {
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
    }


def networks(service: dict) -> set[str]:
    """The networks a service joins (compose's "default" when it names none)."""
    return set(service.get("networks") or ["default"])


def test_store_keeps_its_data_on_a_named_volume_and_its_keys_in_env(compose, services):
    store = services["s3"]
    volume, _, mount = store["volumes"][0].partition(":")
    assert mount == "/var/lib/health-predict-store" and volume in compose["volumes"]
    assert environment(store) == {
        "S3_ACCESS_KEY_ID": "${S3_ACCESS_KEY_ID?set S3_ACCESS_KEY_ID in .env, empty for the "
        "instance role}",
        "S3_SECRET_ACCESS_KEY": "${S3_SECRET_ACCESS_KEY?set S3_SECRET_ACCESS_KEY in .env, empty "
        "for the instance role}",
    }
    # MLflow and Airflow sign with the same pair, through the store's endpoint.
    for name in ("mlflow", "s3-init", *AIRFLOW_SERVICES):
        env = environment(services[name])
        assert env["AWS_ACCESS_KEY_ID"].startswith("${S3_ACCESS_KEY_ID?"), name
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${S3_SECRET_ACCESS_KEY?"), name
        assert env["AWS_ENDPOINT_URL_S3"] == env["MLFLOW_S3_ENDPOINT_URL"], name
        assert env["AWS_ENDPOINT_URL_S3"] == "${AWS_ENDPOINT_URL_S3:-http://s3:9000}", name
        assert networks(services[name]) & networks(store), f"{name} cannot reach the store"
    assert "moto" not in json.dumps(store)
    # No key baked into the image: its Dockerfile sets none, the server reads its environment.
    dockerfile = (PROJECT_ROOT / "docker" / "store.Dockerfile").read_text()
    assert not re.search(r"ACCESS_KEY|SECRET", re.sub(r"(?m)^#.*$", "", dockerfile))
    main = (PROJECT_ROOT / "docker" / "store" / "src" / "main.rs").read_text()
    assert 'required("S3_ACCESS_KEY_ID")' in main and 'required("S3_SECRET_ACCESS_KEY")' in main


def test_serving_shares_no_network_with_the_store_or_postgres(compose, services):
    serving = networks(services["serving"])
    assert serving == {"serving"} and "serving" in compose["networks"]
    for name, service in services.items():
        if name != "serving":
            assert not networks(service) & serving, f"{name} shares a network with serving"


def test_serving_runs_read_only_like_kubernetes(services):
    serving = services["serving"]
    assert serving["read_only"] is True
    assert any(mount.startswith("/tmp") for mount in serving["tmpfs"])
    assert serving["cap_drop"] == ["ALL"]


def test_no_hard_coded_secrets(compose):
    secret_keys = re.compile(r"(PASSWORD|SECRET|FERNET|TOKEN|SECRET_KEY|ACCESS_KEY|ACCESS_KEY_ID)$")

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and secret_keys.search(key) and isinstance(value, str):
                    taken_from_environment = services_stack.VARIABLE.fullmatch(value)
                    assert taken_from_environment, f"{key} is not taken from the environment"
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(compose)
    for user_info in re.findall(r"://([^@/\s]+)@", COMPOSE_FILE.read_text()):
        assert re.fullmatch(r"[a-z]+:\$\{[A-Z_]+:\?[^}]+\}", user_info), user_info


def test_every_variable_is_declared_in_env_example_and_every_secret_is_generated():
    declared = services_stack.read_env(ENV_EXAMPLE)
    used = {
        name
        for path in (COMPOSE_FILE, KIND_OVERLAY, AWS_OVERLAY)
        for name in services_stack.VARIABLE.findall(path.read_text())
    }
    assert used <= set(declared), f"not in .env.example: {sorted(used - set(declared))}"
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE_FILE.read_text()))
    assert required - {"SERVICES_IMAGE"} <= set(services_stack.SECRETS)
    for name in services_stack.SECRETS:
        assert declared[name] == "", f"{name} must be empty in .env.example"


def test_env_is_generated_once_owner_only_and_kept(tmp_path):
    env_file = tmp_path / ".env"
    first = services_stack.write_env(env_file, {"SERVICES_IMAGE": "health-predict-services:abc"})
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert all(len(first[name]) >= 16 for name in services_stack.SECRETS)
    assert len(set(first[name] for name in services_stack.SECRETS)) == len(services_stack.SECRETS)
    second = services_stack.write_env(env_file, {"SERVICES_IMAGE": "health-predict-services:def"})
    assert {n: second[n] for n in services_stack.SECRETS} == {
        n: first[n] for n in services_stack.SECRETS
    }
    assert services_stack.read_env(env_file)["SERVICES_IMAGE"] == "health-predict-services:def"


def test_env_file_is_git_ignored():
    import subprocess

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


def test_compose_config_accepts_the_files(tmp_path):
    try:
        command = services_stack.compose_command()
    except Exception as error:  # neither compose front-end installed
        pytest.skip(str(error))
    env_file = tmp_path / ".env"
    services_stack.write_env(
        env_file,
        {
            "SERVICES_IMAGE": "health-predict-services:x",
            "DOCKER_GID": "1",
            "HOST_KUBE_DIR": str(tmp_path),
        },
    )
    import subprocess

    result = subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "-f", str(KIND_OVERLAY),
         "config", "--quiet"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # As compose resolves it, with the kind overlay's extra network for the scheduler.
    resolved = subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "-f", str(KIND_OVERLAY),
         "config"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    joined = {
        name: networks(service)
        for name, service in yaml.safe_load(resolved.stdout)["services"].items()
    }
    assert joined["serving"] == {"serving"}
    assert {"default", "kind"} <= joined["airflow-scheduler"]
    assert all("serving" not in nets for name, nets in joined.items() if name != "serving")
    assert joined["s3"] & joined["mlflow"] & joined["airflow-scheduler"]


def test_stack_stops_with_an_error_naming_cargo_when_it_is_missing(monkeypatch, tmp_path, capsys):
    """Fake: no Docker engine is asked (the store's build stops before it is used)."""
    from steps import stack

    monkeypatch.setattr(stack.images, "engine", lambda: object())
    monkeypatch.setenv("PATH", str(tmp_path))  # no cargo on it
    assert stack.main(["up"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: cargo (Rust's build tool) is not installed"), error
    assert "docker/store" in error


def test_services_lock_is_the_runtime_subset_at_the_same_versions():
    """The services image installs requirements-services.lock with --no-deps: every pin must be
    requirements.lock's (what the tests ran on), and no test tool or GPU-only library is in it."""
    full = images.locked_versions(images.LOCK_FILE)
    services = images.locked_versions(images.SERVICES_LOCK_FILE)
    assert {name: full.get(name) for name in services} == services
    assert {"mlflow", "apache-airflow", "ray", "evidently", "uv", "psycopg2-binary"} <= set(
        services
    )
    assert not {"pytest", "ruff", "kubernetes-validate", "nvidia-nccl-cu12"} & set(services)


@pytest.mark.parametrize(("argv", "deletes_volumes"), [([], False), (["--volumes"], True)])
def test_stack_down_keeps_volumes_unless_asked(monkeypatch, argv, deletes_volumes):
    """Fake: the compose call is recorded instead of run (no Docker engine here)."""
    from steps import stack

    calls = []
    monkeypatch.setattr(stack, "compose", lambda *args, **kwargs: calls.append(args))
    assert stack.main(["down", *argv]) == 0
    (args,) = calls
    assert "down" in args
    assert ("-v" in args or "--volumes" in args) is deletes_volumes


def test_the_env_file_alone_sets_the_stack_s_variables(monkeypatch, tmp_path):
    """A data URI exported for local runs must not reach the containers (it did: the stack's
    training wrote its split to a path inside the scheduler's container, not the bucket)."""
    try:
        services_stack.compose_command()
    except Exception as error:  # neither compose front-end installed
        pytest.skip(str(error))
    env_file = tmp_path / ".env"
    services_stack.write_env(env_file, {"SERVICES_IMAGE": "health-predict-services:x"})
    monkeypatch.setenv("HEALTH_PREDICT_DATA_URI", str(tmp_path / "host-data"))
    monkeypatch.setenv("SERVICES_IMAGE", "an-image-from-the-shell:y")
    resolved = yaml.safe_load(services_stack.compose("config", env_file=env_file).stdout)
    scheduler = resolved["services"]["airflow-scheduler"]
    assert scheduler["environment"]["HEALTH_PREDICT_DATA_URI"] == "s3://health-predict-data/data"
    assert scheduler["image"] == "health-predict-services:x"
