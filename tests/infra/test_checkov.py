"""checkov (offline, ``--skip-download``) over terraform/, k8s/, docker-compose.yml, docker/ and
the serving Dockerfile that steps/deploy.py generates: zero failed checks.

checkov lives in its own venv (.venv/checkov: it pins packaging<24, which ray cannot use). A
check that does not apply is skipped inline next to the resource, with its reason, and the tests
below insist on that reason. checkov has no Docker Compose framework: docker-compose.yml is covered
by the secrets framework, and a planted credential in the same run proves that framework is live.
The serving Dockerfile is written by steps/deploy.py's own function for a small saved pyfunc.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest

from steps.core.config import PROJECT_ROOT
from steps.deployment import model_image

CHECKOV = PROJECT_ROOT / ".venv" / "checkov" / "bin" / "checkov"
STATIC_TARGETS = ["terraform", "k8s", "docker", "docker-compose.yml"]
PLANTED_DIR = "planted"
# A well-formed but fake AWS key pair: the secrets framework must flag it.
PLANTED_COMPOSE = """services:
  leaky:
    image: docker.io/library/busybox:1.37
    environment:
      AWS_ACCESS_KEY_ID: "AKIAZ4XQ7RTV2MPL9WNB"
      AWS_SECRET_ACCESS_KEY: "hR7vK2pQ9xLmN4tZ8wYb3cF6gJ1sD5aE0uI7oP2q"
"""
INLINE_SKIP = re.compile(r"checkov:skip=(CKV2?_[A-Z0-9_]+)(?::(.*))?")

pytestmark = pytest.mark.skipif(
    not CHECKOV.exists(), reason=f"checkov is not installed at {CHECKOV} (run `make setup`)"
)


def run_checkov(option: str, target: Path) -> list[dict]:
    """checkov's JSON report for ``-d <dir>`` or ``-f <file>``, one entry per framework."""
    home = target if target.is_dir() else target.parent
    command = [str(CHECKOV), "--skip-download", "--quiet", "--compact", "-o", "json"]
    result = subprocess.run(
        [*command, option, str(target)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "BC_SKIP_MAPPING": "TRUE"},
    )
    # Exit code 1 means failed checks (asserted on below); anything else is a crash.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return [entry for entry in reports if "check_type" in entry]


def failures(reports: list[dict]) -> list[dict]:
    return [check for entry in reports for check in entry["results"].get("failed_checks", [])]


def counts(reports: list[dict]) -> dict[str, dict[str, int]]:
    return {
        entry["check_type"]: {
            key: entry["summary"][key] for key in ("passed", "failed", "skipped", "parsing_errors")
        }
        for entry in reports
    }


def describe(checks: list[dict]) -> str:
    return "\n".join(
        f"{check['check_id']} {check['check_name']} - {check['file_path']} {check['resource']}"
        for check in checks
    )


def print_counts(capsys: pytest.CaptureFixture, title: str, reports: list[dict]) -> None:
    with capsys.disabled():
        print(f"\ncheckov {title}:")
        for framework, numbers in counts(reports).items():
            print(f"  {framework}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))


@pytest.fixture(scope="module")
def static_reports(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """One checkov run over a copy of the static targets plus the planted credential."""
    scan_root = tmp_path_factory.mktemp("checkov-static")
    for target in STATIC_TARGETS:
        source = PROJECT_ROOT / target
        assert source.exists(), f"{target} is missing"
        if source.is_dir():
            shutil.copytree(
                source, scan_root / target, ignore=shutil.ignore_patterns(".terraform*")
            )
        else:
            shutil.copy(source, scan_root / target)
    (scan_root / PLANTED_DIR).mkdir()
    (scan_root / PLANTED_DIR / "docker-compose.yml").write_text(PLANTED_COMPOSE)
    return run_checkov("-d", scan_root)


def test_static_targets_have_no_failed_checks(static_reports, capsys):
    print_counts(capsys, "terraform/, k8s/, docker/, docker-compose.yml", static_reports)
    real_failures = [
        check for check in failures(static_reports) if f"/{PLANTED_DIR}/" not in check["file_path"]
    ]
    with capsys.disabled():
        planted = len(failures(static_reports)) - len(real_failures)
        print(f"  ({planted} secrets failures are the planted credential, as expected)")
    assert not real_failures, "checkov failed checks:\n" + describe(real_failures)


def test_every_framework_ran_checks_and_parsed_every_file(static_reports):
    numbers = counts(static_reports)
    assert numbers["terraform"]["passed"] >= 50
    assert numbers["kubernetes"]["passed"] >= 50
    assert numbers["dockerfile"]["passed"] >= 10
    unparsed = {
        entry["check_type"]: entry["results"].get("parsing_errors")
        for entry in static_reports
        if entry["summary"]["parsing_errors"]
    }
    assert not unparsed, f"checkov could not parse: {unparsed}"


def test_secrets_scan_is_live_on_compose_files(static_reports):
    planted = [
        check for check in failures(static_reports) if f"/{PLANTED_DIR}/" in check["file_path"]
    ]
    assert {check["check_id"] for check in planted} >= {"CKV_SECRET_2"}, describe(planted)


def test_every_inline_skip_states_its_reason():
    files = [
        path
        for target in STATIC_TARGETS
        for path in ([PROJECT_ROOT / target] if (PROJECT_ROOT / target).is_file()
                     else (PROJECT_ROOT / target).rglob("*"))
        if path.is_file()
    ]  # fmt: skip
    skips = [
        (path.name, match)
        for path in files
        for match in INLINE_SKIP.finditer(path.read_text(errors="replace"))
    ]
    assert skips, "expected the documented inline skips in terraform/"
    for name, match in skips:
        reason = (match.group(2) or "").strip()
        assert len(reason) >= 30, f"{name}: skip of {match.group(1)} needs a reason"


class EchoModel(mlflow.pyfunc.PythonModel):
    """Stands in for the champion: the generated Dockerfile does not depend on the model
    (its requirements are installed from the copied model folder at build time)."""

    def predict(self, context, model_input: pd.DataFrame) -> pd.DataFrame:
        return model_input


@pytest.fixture(scope="module")
def serving_dockerfile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hardened serving Dockerfile, written by steps/deploy.py for a saved pyfunc model."""

    root = tmp_path_factory.mktemp("serving")
    mlflow.pyfunc.save_model(
        path=root / "model",
        python_model=EchoModel(),
        pip_requirements=[f"mlflow=={mlflow.__version__}"],
    )
    return model_image.write_hardened_dockerfile(str(root / "model"), root / "build", workers=2)


def test_generated_serving_dockerfile_has_no_failed_checks(serving_dockerfile, capsys):
    assert "USER " in serving_dockerfile.read_text(), "deploy must write the hardened Dockerfile"
    reports = run_checkov("-f", serving_dockerfile)
    print_counts(capsys, "generated serving Dockerfile", reports)
    numbers = counts(reports)
    assert numbers.get("dockerfile", {}).get("passed", 0) >= 10, numbers
    assert not failures(reports), "checkov failed checks:\n" + describe(failures(reports))
