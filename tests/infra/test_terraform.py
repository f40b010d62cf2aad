"""Offline checks of terraform/: formatting, HCL parsing, the security properties, variable
validation and the user data template.

Nothing here talks to AWS. ``terraform validate`` needs the AWS provider from the registry, which
this machine cannot reach, so that one test skips with the reason when the download fails; the
variable validations and the user data template are still evaluated by the real terraform binary,
in a module that holds only variables.tf and needs no provider.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

from steps.core.config import PROJECT_ROOT
from steps.deployment import services_stack
from tests.airflow_uid import check_cluster_as_airflow_uid

TERRAFORM_DIR = PROJECT_ROOT / "terraform"
TF_FILES = sorted(TERRAFORM_DIR.glob("*.tf"))
USER_DATA_TEMPLATE = TERRAFORM_DIR / "templates" / "user_data.sh.tftpl"
TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform binary not on PATH (install Terraform >= 1.9)"
)
PARSE_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)
VALID_VARS = {
    "allowed_cidr": "203.0.113.7/32",
    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleOnly operator@example",
    "project_repository_url": "https://example.com/health-predict.git",
}


def parse(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=PARSE_OPTIONS)


@pytest.fixture(scope="module")
def config() -> dict[str, dict]:
    """The whole module as {block type: {name or (type, name): body}}."""
    merged: dict[str, dict] = {"resource": {}, "data": {}, "variable": {}, "output": {}}
    merged["terraform"] = {}
    for path in TF_FILES:
        parsed = parse(path)
        for kind in ("resource", "data"):
            for entry in parsed.get(kind, []):
                for type_name, instances in entry.items():
                    for name, body in instances.items():
                        merged[kind][(type_name, name)] = body
        for kind in ("variable", "output"):
            for entry in parsed.get(kind, []):
                merged[kind].update(entry)
        for entry in parsed.get("terraform", []):
            merged["terraform"].update(entry)
    return merged


def run_terraform(args: list[str], cwd: Path, stdin: str | None = None):
    return subprocess.run(
        [TERRAFORM, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def variables_only_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised copy of variables.tf alone: plan/console evaluate it with no provider."""
    if TERRAFORM is None:
        pytest.skip("terraform binary not on PATH (install Terraform >= 1.9)")
    module = tmp_path_factory.mktemp("tf-variables")
    shutil.copy(TERRAFORM_DIR / "variables.tf", module / "variables.tf")
    result = run_terraform(["init", "-backend=false", "-input=false", "-no-color"], module)
    assert result.returncode == 0, result.stderr
    return module


def var_args(values: dict[str, str]) -> list[str]:
    return [f"-var={name}={value}" for name, value in values.items()]


def test_module_has_the_expected_files():
    names = {path.name for path in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names
    assert (TERRAFORM_DIR / "terraform.tfvars.example").is_file()


@needs_terraform
def test_terraform_fmt_is_clean():
    result = run_terraform(["fmt", "-check", "-recursive", "-diff", "-no-color"], TERRAFORM_DIR)
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", TF_FILES, ids=lambda path: path.name)
def test_every_file_parses(path: Path):
    assert parse(path), f"{path.name} parsed to nothing"


def test_example_tfvars_parses_and_sets_every_required_variable(config):
    example = parse(TERRAFORM_DIR / "terraform.tfvars.example")
    required = {name for name, body in config["variable"].items() if "default" not in body}
    assert required == set(VALID_VARS), "update VALID_VARS with the module's required variables"
    assert required <= set(example)


def test_core_resources_exist(config):
    resource_types = {type_name for type_name, _ in config["resource"]}
    assert {
        "aws_vpc",
        "aws_subnet",
        "aws_internet_gateway",
        "aws_route_table",
        "aws_route_table_association",
        "aws_security_group",
        "aws_iam_role",
        "aws_iam_instance_profile",
        "aws_instance",
        "aws_s3_bucket",
        "aws_ecr_repository",
    } <= resource_types


def security_groups(config) -> list[dict]:
    return [body for (kind, _), body in config["resource"].items() if kind == "aws_security_group"]


def test_no_ingress_from_the_whole_internet(config):
    # Standalone rule resources would bypass the inline checks below.
    assert not {
        kind
        for kind, _ in config["resource"]
        if kind in {"aws_security_group_rule", "aws_vpc_security_group_ingress_rule"}
    }
    ports = set()
    for group in security_groups(config):
        for rule in group.get("ingress", []):
            assert rule["cidr_blocks"] == ["${var.allowed_cidr}"], rule
            assert "ipv6_cidr_blocks" not in rule, rule
            assert rule["protocol"] == "tcp" and rule["from_port"] == rule["to_port"], rule
            assert rule.get("description"), "every ingress rule needs a description"
            ports.add(rule["from_port"])
    assert ports == {22, "${var.airflow_port}", "${var.mlflow_port}", "${var.api_node_port}"}


def test_egress_is_limited_to_https_http_and_vpc_dns(config):
    for group in security_groups(config):
        for rule in group.get("egress", []):
            assert rule["protocol"] != "-1", f"egress to all protocols: {rule}"
            assert rule["from_port"] == rule["to_port"], rule
            assert rule["from_port"] in {443, 80, 53}, rule
            if rule["from_port"] == 53:
                assert rule["cidr_blocks"] == ["${local.vpc_dns_resolver_cidr}"], rule


def test_allowed_cidr_is_required(config):
    assert "default" not in config["variable"]["allowed_cidr"]


@pytest.mark.parametrize(
    ("cidr", "accepted"),
    [
        ("203.0.113.7/32", True),
        ("10.20.0.0/16", True),
        ("0.0.0.0/0", False),
        ("0.0.0.0/1", False),
        ("203.0.113.7", False),
        ("not-a-cidr", False),
        ("::/0", False),
    ],
)
def test_allowed_cidr_validation(variables_only_module: Path, cidr: str, accepted: bool):
    values = {**VALID_VARS, "allowed_cidr": cidr}
    result = run_terraform(
        ["plan", "-input=false", "-no-color", "-lock=false", *var_args(values)],
        variables_only_module,
    )
    if accepted:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "allowed_cidr" in result.stderr


def test_instance_requires_imdsv2_encrypts_root_volume_and_is_monitored(config):
    instance = config["resource"][("aws_instance", "host")]
    metadata = instance["metadata_options"][0]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_endpoint"] == "enabled"
    assert metadata["http_put_response_hop_limit"] == 1, "containers could take role credentials"
    assert instance["root_block_device"][0]["encrypted"] is True
    assert instance["monitoring"] is True
    assert instance["instance_type"] == "${var.instance_type}"
    assert instance["iam_instance_profile"] == "${aws_iam_instance_profile.host.name}"


def test_registry_and_metadata_survive_template_changes_and_host_replacement(config):
    """No user data change replaces the host; the state lives on its own encrypted volume, not
    deleted with the host, snapshotted on replacement and daily by a lifecycle policy that
    targets it, and restorable from a snapshot by one variable."""
    instance = config["resource"][("aws_instance", "host")]
    assert instance["user_data_replace_on_change"] is False
    volume = config["resource"][("aws_ebs_volume", "data")]
    assert volume["encrypted"] is True and volume["final_snapshot"] is True
    assert "var.data_volume_snapshot_id" in volume["snapshot_id"]
    assert volume["availability_zone"] == "${local.availability_zone}"
    attachment = config["resource"][("aws_volume_attachment", "data")]
    assert attachment["volume_id"] == "${aws_ebs_volume.data.id}"
    assert attachment["instance_id"] == "${aws_instance.host.id}"
    details = config["resource"][("aws_dlm_lifecycle_policy", "data")]["policy_details"][0]
    assert details["resource_types"] == ["VOLUME"]
    assert details["target_tags"] == {"Backup": volume["tags"]["Backup"]}
    assert details["schedule"][0]["retain_rule"][0]["count"] == "${var.data_snapshots_to_keep}"
    text = USER_DATA_TEMPLATE.read_text()
    assert '"data-root\\": \\"$DATA_DIR/docker' in text, "Docker's data root is not on the volume"
    assert 'ln -sfn "$DATA_DIR/stack.env" "$PROJECT_DIR/.env"' in text


@pytest.mark.parametrize(
    ("snapshot", "accepted"),
    [("", True), ("snap-0123456789abcdef0", True), ("vol-0123456789abcdef0", False)],
)
def test_data_volume_snapshot_validation(variables_only_module: Path, snapshot, accepted):
    values = {**VALID_VARS, "data_volume_snapshot_id": snapshot}
    result = run_terraform(
        ["plan", "-input=false", "-no-color", "-lock=false", *var_args(values)],
        variables_only_module,
    )
    assert (result.returncode == 0) == accepted, result.stderr
    if not accepted:
        assert "data_volume_snapshot_id" in result.stderr


def test_every_variable_is_typed_and_described(config):
    for name, body in config["variable"].items():
        assert body.get("type"), f"variable {name} has no type"
        assert body.get("description", "").strip(), f"variable {name} has no description"


def test_every_output_is_described_and_the_required_ones_exist(config):
    for name, body in config["output"].items():
        assert body.get("description", "").strip(), f"output {name} has no description"
    assert {
        "public_ip",
        "public_dns",
        "bucket_name",
        "ecr_repository_url",
        "mlflow_url",
        "airflow_url",
    } <= set(config["output"])


def test_terraform_and_provider_versions_are_pinned(config):
    settings = config["terraform"]
    assert re.fullmatch(r"~> 1\.\d+", settings["required_version"])
    providers = {}
    for block in settings["required_providers"]:
        providers.update(block)
    assert set(providers) == {"aws"}
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> \d+\.\d+(\.\d+)?", providers["aws"]["version"])


def bucket_part(config, kind: str) -> dict:
    return config["resource"][(kind, "project")]


def test_bucket_is_versioned_encrypted_private_tls_only_with_lifecycle(config):
    versioning = bucket_part(config, "aws_s3_bucket_versioning")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    encryption = bucket_part(config, "aws_s3_bucket_server_side_encryption_configuration")
    default = encryption["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] in {"aws:kms", "AES256"}
    block = bucket_part(config, "aws_s3_bucket_public_access_block")
    for setting in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[setting] is True, setting
    lifecycle = bucket_part(config, "aws_s3_bucket_lifecycle_configuration")
    assert any("noncurrent_version_expiration" in rule for rule in lifecycle["rule"])
    policy = config["data"][("aws_iam_policy_document", "project_bucket")]
    tls_denials = [
        statement
        for statement in policy["statement"]
        if statement["effect"] == "Deny"
        and any(
            condition["variable"] == "aws:SecureTransport" and condition["values"] == ["false"]
            for condition in statement.get("condition", [])
        )
    ]
    assert tls_denials, "the bucket policy must deny requests without TLS"


def test_ecr_repository_scans_on_push_with_immutable_tags_and_lifecycle(config):
    repository = config["resource"][("aws_ecr_repository", "api")]
    assert repository["image_tag_mutability"] == "IMMUTABLE"
    assert repository["image_scanning_configuration"][0]["scan_on_push"] is True
    assert ("aws_ecr_lifecycle_policy", "api") in config["resource"]


def test_host_role_is_least_privilege(config):
    statements = config["data"][("aws_iam_policy_document", "host")]["statement"]
    allowed_resources = {
        "${aws_s3_bucket.project.arn}",
        "${aws_s3_bucket.project.arn}/*",
        "${aws_ecr_repository.api.arn}",
    }
    for statement in statements:
        assert statement.get("effect", "Allow") == "Allow"
        for action in statement["actions"]:
            assert "*" not in action, f"wildcard action {action}"
            assert action.split(":")[0] in {"s3", "ecr"}, action
        if statement["resources"] == ["*"]:
            assert statement["actions"] == ["ecr:GetAuthorizationToken"], statement
        else:
            assert set(statement["resources"]) <= allowed_resources, statement
    # No AWS-managed policy sneaks in beside the project's own.
    for (kind, _), body in config["resource"].items():
        if kind == "aws_iam_role_policy_attachment":
            assert body["policy_arn"] == "${aws_iam_policy.host.arn}"


def test_no_account_ids_keys_or_secrets_in_the_module():
    files = [*TF_FILES, TERRAFORM_DIR / "terraform.tfvars.example", USER_DATA_TEMPLATE]
    for path in files:
        text = path.read_text()
        assert not re.search(r"(?<![\d.])\d{12}(?![\d.])", text), f"account id in {path.name}"
        assert not re.search(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", text), f"access key in {path.name}"
        assert not re.search(r"(?i)(password|secret)\s*=\s*\"[^\"$]", text), path.name


def template_placeholders() -> set[str]:
    return set(re.findall(r"(?<!\$)\$\{([a-z_]+)\}", USER_DATA_TEMPLATE.read_text()))


def test_user_data_template_receives_exactly_its_placeholders(config):
    user_data = config["resource"][("aws_instance", "host")]["user_data"]
    passed = set(re.findall(r"\b([a-z_]+)\s*=", user_data.split("templatefile(", 1)[1]))
    assert passed == template_placeholders()


def test_user_data_installs_the_toolchain_and_starts_the_stack():
    text = USER_DATA_TEMPLATE.read_text()
    for needle in (
        "docker-ce",
        "docker-compose-plugin",
        "kubectl",
        "sha256sum -c",
        "/usr/local/bin/kind",
        "git clone",
        "kind create cluster",
        "docker compose -f docker-compose.yml",
    ):
        assert needle in text, needle


@pytest.fixture(scope="module")
def rendered_user_data(variables_only_module: Path) -> str:
    """The user data script as terraform renders it, with example values."""
    values = {name: f"example-{name}" for name in template_placeholders()}
    values["aws_region"] = "eu-west-1"  # a real region name: boto3 resolves endpoints from it
    arguments = ", ".join(f'{name} = "{value}"' for name, value in sorted(values.items()))
    expression = f'jsonencode(templatefile("{USER_DATA_TEMPLATE}", {{{arguments}}}))\n'
    result = run_terraform(["console", *var_args(VALID_VARS)], variables_only_module, expression)
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout))


def test_user_data_renders_to_valid_bash(rendered_user_data: str):
    assert rendered_user_data.startswith("#!/bin/bash\n")
    assert "example-bucket_name" in rendered_user_data
    syntax = subprocess.run(
        ["bash", "-n"], input=rendered_user_data, capture_output=True, text=True
    )
    assert syntax.returncode == 0, syntax.stderr


def test_shell_scripts_pass_shellcheck(rendered_user_data: str, tmp_path: Path):
    if shutil.which("shellcheck") is None:
        message = "shellcheck is not installed (Debian package shellcheck, in .ci/apt-packages.txt)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (under CI a missing tool is an error)")
        pytest.skip(message)
    user_data = tmp_path / "user_data.sh"
    user_data.write_text(rendered_user_data)
    scripts = [
        user_data,
        PROJECT_ROOT / "scripts" / "local_stack.sh",
        *sorted((PROJECT_ROOT / "docker").glob("*/*.sh")),
    ]
    result = subprocess.run(
        ["shellcheck", "--severity=warning", *map(str, scripts)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


@needs_terraform
def test_terraform_validate(tmp_path: Path):
    module = tmp_path / "terraform"
    shutil.copytree(
        TERRAFORM_DIR, module, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
    )
    init = run_terraform(["init", "-backend=false", "-input=false", "-no-color"], module)
    if init.returncode != 0:
        lines = [line.strip("│╷╵ ") for line in init.stderr.splitlines()]
        cause = next((line for line in lines if "dial tcp" in line or "lookup" in line), "")
        error = next((line for line in lines if line.startswith("Error:")), "init failed")
        pytest.skip(
            f"terraform init cannot download the AWS provider (no registry access): {error} {cause}"
        )
    result = run_terraform(["validate", "-no-color"], module)
    assert result.returncode == 0, result.stdout + result.stderr


def _env_written_by(rendered_user_data: str, project_dir: Path) -> dict[str, str]:
    """Run the rendered script's .env block in bash (IMDS answers and the operator stubbed)."""
    block = re.search(
        r'^random_hex\(\).*?^if \[ ! -f "\$PROJECT_DIR/\.env" \]; then\n.*?^fi$',
        rendered_user_data, re.M | re.S,
    )  # fmt: skip
    assert block, "no .env block in the user data"
    script = "\n".join([
        "set -euo pipefail",
        f"PROJECT_DIR={project_dir}",
        f"DATA_DIR={project_dir}",
        "OPERATOR=$(id -un)",
        "SERVICES_IMAGE=health-predict-services:0123456789ab",
        "PUBLIC_DNS=ec2-203-0-113-7.compute-1.amazonaws.com",
        "PUBLIC_IP=203.0.113.7",
        "getent() { echo docker:x:998:; }",
        *re.findall(r"^[A-Z_]+_LOCAL_PORT=\d+$", rendered_user_data, re.M),
        block.group(0),
    ])  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    env_file = project_dir / ".env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines())


def assert_clients_reach_their_own_endpoints(environment: dict) -> None:
    """boto3, in a process holding only the scheduler's rendered environment, sends S3 calls to
    the configured endpoint and STS/ECR calls to their own (endpoints resolved, nothing sent)."""
    program = (
        "import boto3, json; session = boto3.Session(region_name='eu-west-1'); "
        "print(json.dumps({s: session.client(s).meta.endpoint_url for s in ('s3', 'sts', 'ecr')}))"
    )
    env = {k: str(v) for k, v in environment.items() if v is not None}
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True,
        env={**env, "PATH": os.environ["PATH"], "HOME": "/nonexistent"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    endpoints = json.loads(result.stdout)
    assert endpoints["s3"] == environment["AWS_ENDPOINT_URL_S3"]
    assert endpoints["sts"] == "https://sts.eu-west-1.amazonaws.com"
    assert endpoints["ecr"] == "https://api.ecr.eu-west-1.amazonaws.com"


def test_user_data_env_and_aws_overlay_start_the_stack_on_the_bucket(
    rendered_user_data: str, tmp_path: Path
):
    """The EC2 host's .env names what docker-compose.yml reads, and with the overlays the
    services reach the project bucket through the instance role (no access key, regional
    endpoint), moto idles, and MLflow's artifacts go to the bucket (checked by the real
    ``docker compose config`` on the rendered .env; no AWS here)."""

    env = _env_written_by(rendered_user_data, tmp_path)
    required = set(re.findall(r"\$\{([A-Z0-9_]+):?\?", (PROJECT_ROOT / "docker-compose.yml")
                              .read_text()))  # fmt: skip
    assert required <= set(env), f"not written: {sorted(required - set(env))}"
    assert set(services_stack.SECRETS) <= set(env)
    assert env["S3_ACCESS_KEY_ID"] == env["S3_SECRET_ACCESS_KEY"] == ""
    assert all(
        len(env[name]) >= 32 for name in services_stack.SECRETS if not name.startswith("S3_")
    )
    compose_line = re.search(r"docker compose (-f .*?) up", rendered_user_data.replace("\\\n", ""))
    files = compose_line.group(1).split()[1::2]
    assert files == ["docker-compose.yml", "docker/compose.kind.yml", "docker/compose.aws.yml"]
    try:
        command = services_stack.compose_command()
    except Exception as error:  # neither compose front-end installed
        pytest.skip(str(error))
    # Loopback ports behind nginx's TLS front, never terraform's published ones.
    assert (env["AIRFLOW_PORT"], env["MLFLOW_PORT"]) == ("18080", "15000")
    assert env["AIRFLOW_BASE_URL"].startswith("https://")
    assert len(env["API_TOKEN"]) >= 32
    env.update(HOST_KUBE_DIR=str(tmp_path))
    (tmp_path / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    arguments = [arg for name in files for arg in ("-f", str(PROJECT_ROOT / name))]
    result = subprocess.run(
        [*command, "--env-file", str(tmp_path / "stack.env"), *arguments, "config"],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
        # The host's shell environment, as cloud-init has it: nothing of this test session's.
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("mlflow", "airflow-scheduler", "airflow-apiserver"):
        environment = services[name]["environment"]
        assert not environment.get("AWS_ACCESS_KEY_ID"), name
        # S3's endpoint alone: a global AWS_ENDPOINT_URL would send STS and ECR calls to S3.
        assert "AWS_ENDPOINT_URL" not in environment, name
        assert environment["AWS_ENDPOINT_URL_S3"] == "https://s3.eu-west-1.amazonaws.com"
    assert_clients_reach_their_own_endpoints(services["airflow-scheduler"]["environment"])
    assert environment["HEALTH_PREDICT_DATA_URI"] == "s3://example-bucket_name/data"
    assert (
        services["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
        == "s3://example-bucket_name/mlflow-artifacts"
    )
    assert services["s3"]["entrypoint"] == ["sleep", "infinity"]
    assert services["s3-init"]["entrypoint"] == ["true"]
    # Published on loopback only (nginx publishes them with TLS); docker-compose 1 prints a port
    # as "ip:host:container", the plugin as a mapping.
    for name in ("airflow-apiserver", "mlflow"):
        (port,) = services[name]["ports"]
        assert (port["host_ip"] if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1"
    # Only the services that need S3/ECR get the host's copy of the role credentials.
    holders = {
        name for name, service in services.items()
        if any("/opt/aws" in str(volume) for volume in service.get("volumes", []))
    }  # fmt: skip
    assert holders == {
        "mlflow", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer",
    }  # fmt: skip


FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: kind, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: kind, user: {token: not-a-real-token}}]
contexts: [{name: kind, context: {cluster: kind, user: kind}}]
current-context: kind
"""


def test_airflow_uid_reads_the_internal_kubeconfig_and_reaches_the_cluster_step(
    rendered_user_data: str,
):
    """The rendered kubeconfig block (``kind`` stubbed to print a kubeconfig; no cluster here)
    leaves the scheduler's kubeconfig readable by uid 50000, the operator's private, and the
    deploy step's cluster check, run as uid 50000, gets past reading it to the cluster call."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("the block chowns files to uid 50000 and the check runs as it: needs root")
    block = re.search(r"^AIRFLOW_UID=50000\n.*?^umask 022$", rendered_user_data, re.M | re.S)
    assert block, "no kubeconfig block for the Airflow uid in the user data"
    # Outside pytest's owner-only temporary root, so that uid 50000 can reach the file.
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        home.chmod(0o755)
        check = _kubeconfig_block_then_cluster_check(block.group(0), home)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "the Kubernetes cluster in your kubeconfig is not reachable"


def _kubeconfig_block_then_cluster_check(block: str, home: Path):
    """Run the kubeconfig ``block`` with homes under ``home``, then check_cluster as uid 50000."""
    script = "\n".join([
        "set -euo pipefail",
        "OPERATOR=root",
        f"kind() {{ cat <<'KUBE'\n{FAKE_KUBECONFIG}KUBE\n}}",
        block.replace("/home/$OPERATOR", str(home)),
    ])  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert oct((home / ".kube" / "config").stat().st_mode & 0o777) == "0o600"
    internal = home / ".kube-internal" / "config"
    assert oct(internal.stat().st_mode & 0o007) == "0o0", "the kubeconfig is world-readable"
    return check_cluster_as_airflow_uid(str(internal))


def _block(rendered_user_data: str, title: str) -> str:
    block = re.search(
        rf"^# --- {title} .*?^# --- end {title} ---$", rendered_user_data, re.M | re.S
    )
    assert block, f"no '{title}' block in the user data"
    return block.group(0)


FAKE_ROLE_CREDENTIALS = {
    "Code": "Success", "Type": "AWS-HMAC", "AccessKeyId": "ASIAEXAMPLEEXAMPLE00",
    "SecretAccessKey": "example-secret", "Token": "example-session-token",
    "Expiration": "2099-01-01T00:00:00Z", "LastUpdated": "2026-01-01T00:00:00Z",
}  # fmt: skip


def test_containers_get_role_credentials_from_the_host_copy(rendered_user_data, tmp_path):
    """The rendered refresher (IMDS faked by a ``curl`` stub: no EC2 here) writes a copy that
    boto3 reads through the written credential_process config, as MLflow and Airflow do."""
    block = _block(rendered_user_data, "AWS credentials")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "curl").write_text(
        '#!/bin/bash\ncase "$*" in *api/token*) echo token;; *security-credentials/\\ *|'
        f"*security-credentials/) echo host-role;; *) echo '{json.dumps(FAKE_ROLE_CREDENTIALS)}';;"
        " esac\n"
    )
    (stub / "curl").chmod(0o755)
    aws_dir = tmp_path / "data" / "aws"
    script = "\n".join([
        "set -euo pipefail", f"DATA_DIR={tmp_path / 'data'}", f"export PATH={stub}:$PATH",
        block.replace("/usr/local/sbin/", f"{tmp_path}/"),
        f'{tmp_path}/health-predict-aws-credentials "$AWS_DIR"',
    ])  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert oct((aws_dir / "credentials.json").stat().st_mode & 0o777) == "0o640"
    config_file = tmp_path / "config"
    config_file.write_text((aws_dir / "config").read_text().replace("/opt/aws", str(aws_dir)))
    program = (
        "import boto3; c = boto3.Session().get_credentials().get_frozen_credentials(); "
        "print(c.access_key, c.token)"
    )
    resolved = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AWS_CONFIG_FILE": str(config_file),
             "AWS_EC2_METADATA_DISABLED": "true"},
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stderr
    assert resolved.stdout.split() == ["ASIAEXAMPLEEXAMPLE00", "example-session-token"]


def test_tls_front_publishes_over_https_and_guards_the_model_api(rendered_user_data, tmp_path):
    """The rendered nginx block, run with this machine's nginx and openssl in front of a local
    stand-in for the model API: TLS with the generated certificate, 401 without the token."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (Debian package nginx)")
    import http.server
    import threading

    import requests

    from steps.deployment.server import free_port

    class Upstream(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"model answer")

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    ports = {name: free_port() for name in ("airflow_port", "mlflow_port", "api_node_port")}
    block = _block(rendered_user_data, "TLS front")
    for name, port in ports.items():
        block = block.replace(f"example-{name}", str(port))
    site = tmp_path / "site.conf"
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / ".env").write_text("API_TOKEN=" + "ab" * 24 + "\n")
    script = "\n".join([
        "set -euo pipefail", f"DATA_DIR={tmp_path}", f"PROJECT_DIR={tmp_path / 'project'}",
        "PUBLIC_DNS=ec2-203-0-113-7.compute-1.amazonaws.com", "PUBLIC_IP=203.0.113.7",
        "AIRFLOW_LOCAL_PORT=9", "MLFLOW_LOCAL_PORT=9", f"API_LOCAL_PORT={upstream.server_port}",
        block.replace("/etc/nginx/conf.d/health-predict.conf", str(site)),
    ])  # fmt: skip
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; user root;\n"
        f"events {{}}\nhttp {{ access_log off; client_body_temp_path {tmp_path}; "
        f"proxy_temp_path {tmp_path}; include {site}; }}\n"
    )
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        api = f"https://127.0.0.1:{ports['api_node_port']}/invocations"
        certificate = str(tmp_path / "tls" / "server.crt")
        for _ in range(50):
            try:
                requests.get(api, verify=certificate, timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert requests.get(api, verify=certificate, timeout=5).status_code == 401
        wrong = {"Authorization": "Bearer " + "cd" * 24}
        assert requests.get(api, headers=wrong, verify=certificate, timeout=5).status_code == 401
        right = {"Authorization": "Bearer " + "ab" * 24}
        answer = requests.get(api, headers=right, verify=certificate, timeout=5)
        assert (answer.status_code, answer.text) == (200, "model answer")
        plain = requests.get(api.replace("https", "http"), headers=right, timeout=5)
        assert plain.status_code == 400 and "model answer" not in plain.text  # no cleartext
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        upstream.shutdown()
