"""The serving image of a model: the model pinned to its registry version, MLflow's generated
Dockerfile hardened (non-root user, HEALTHCHECK on /ping, explicit workers, our nginx config,
read-only root filesystem ready), built with a content-addressed tag."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from custom_pyfunc import requirements, validation
from steps.core import config, tracking
from steps.deployment import images

NGINX_CONF = config.PROJECT_ROOT / "docker" / "serving" / "nginx.conf"
WARM_UP = config.PROJECT_ROOT / "docker" / "serving" / "warm_up.py"


APP_UID = 10001
# Written into every folder write_hardened_dockerfile creates: only such a folder is replaced.
BUILD_MARKER = ".health-predict-serving-build"


def serving_build_dir(output_dir: str | Path | None = None) -> Path:
    """Where the serving build context goes: ``output_dir``, or (None) the user's cache folder,
    writable wherever the step runs (the project folder is a read-only mount in the stack)."""
    if output_dir:
        return Path(output_dir).resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache, "health-predict", "serving").resolve()


class DeployError(RuntimeError):
    """The deployment stopped; the message says why and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to a registry version (``version`` is None outside the registry)."""

    uri: str
    name: str | None = None
    version: str | None = None

    @property
    def image_tag(self) -> str:
        if self.version is None:
            raise DeployError(f"{self.uri} is not a registered model version: cannot tag an image")
        return f"v{self.version}"


def resolve_model(model_uri: str) -> ResolvedModel:
    """``models:/name@alias`` and ``models:/name/version`` pinned to their version; others as is."""
    config.configure_mlflow()
    problem = f"cannot resolve {model_uri} in the registry at {config.tracking_uri()}"
    try:
        pinned = tracking.pin_alias(model_uri)
        match = re.fullmatch(r"models:/([^/@]+)/(\d+)", pinned)
        if not match:
            return ResolvedModel(uri=model_uri)
        name, version = match.groups()
        if pinned == model_uri:  # given by version: check that it exists
            mlflow.MlflowClient().get_model_version(name, version)
    except LookupError as error:
        raise DeployError(f"{problem}: {error} (train and register a model first)") from None
    except mlflow.exceptions.MlflowException as error:
        raise DeployError(
            f"{problem}: {error.message.splitlines()[0]} (train and register a model first)"
        ) from None
    return ResolvedModel(uri=pinned, name=name, version=version)


def harden_dockerfile(dockerfile: str, workers: int) -> str:
    """MLflow's generated Dockerfile with our hardening inserted before its ENTRYPOINT.

    ``FROM`` the ``BASE_IMAGE`` build argument (default: MLflow's choice, ``python:3.11-slim``);
    pip reads ``PIP_NO_INDEX``/``PIP_FIND_LINKS`` build arguments when given (offline builds from
    a wheelhouse); nginx and the OpenMP runtime (libgomp1, for the boosted families) are
    installed only if the base lacks them. Replaces nginx's config with ours
    (docker/serving/nginx.conf), links nginx's log and state folders to /tmp (the only writable
    path under a read-only root filesystem), drops MLflow's world-writable chmod, runs as an
    unprivileged user, pins the worker count and request limits, and adds a HEALTHCHECK on /ping.
    """
    head, entrypoint = dockerfile.rsplit("ENTRYPOINT", 1)
    head = re.sub(
        r"^FROM (\S+)\n",
        r"ARG BASE_IMAGE=\1\n# checkov:skip=CKV_DOCKER_7: FROM is the BASE_IMAGE build argument, "
        r"whose default (MLflow's choice) is a version tag\n"
        r"FROM ${BASE_IMAGE}\nARG PIP_NO_INDEX\nARG PIP_FIND_LINKS\n"
        r"ARG PIP_NO_CACHE_DIR=1\n",
        head,
        count=1,
        flags=re.MULTILINE,
    )
    head = re.sub(
        r"^RUN (apt-get -y update && apt-get install -y --no-install-recommends nginx)$",
        r"RUN (command -v nginx >/dev/null && ldconfig -p | grep -q libgomp.so.1) "
        r"|| (\1 libgomp1 && rm -rf /var/lib/apt/lists/*)",
        head,
        flags=re.MULTILINE,
    )
    head = re.sub(
        r"# granting read/write access.*?RUN chmod o\+rwX /opt/mlflow/",
        "# Hardened: nothing world-writable (MLflow opens /opt/mlflow for SageMaker Serverless).\n"
        "RUN chmod -R o-w /opt/mlflow/",
        head,
        flags=re.DOTALL,
    )
    hardening = f"""# --- Health Predict hardening (written by steps/deploy.py) ---
COPY nginx.conf /opt/health-predict/nginx.conf
RUN cp /opt/health-predict/nginx.conf "$(python -c 'import pathlib, mlflow.models; \\
print(pathlib.Path(mlflow.models.__file__).parent / "container/scoring_server/nginx.conf")')" \\
 && groupadd --system --gid {APP_UID} app \\
 && useradd --system --uid {APP_UID} --gid app --no-create-home --shell /usr/sbin/nologin app \\
 && rm -rf /var/log/nginx /var/lib/nginx \\
 && ln -s /tmp /var/log/nginx && ln -s /tmp /var/lib/nginx
ENV MLFLOW_MODELS_WORKERS={workers} \\
    MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT=30 \\
    {validation.MAX_BATCH_ROWS_ENV}={validation.DEFAULT_MAX_BATCH_ROWS} \\
    HOME=/tmp \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1
EXPOSE 8080
USER {APP_UID}:{APP_UID}
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \\
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=4)"]

"""  # noqa: E501
    return head + hardening + "ENTRYPOINT" + entrypoint


def install_complete_requirements(dockerfile: str) -> str:
    """MLflow's generated Dockerfile for a model whose requirements are its whole serving set
    (``custom_pyfunc/requirements.py``). Its two install steps (full ``mlflow``, then pip
    resolving the model's requirements plus ``gunicorn[gevent]``, which the uvicorn scoring server
    never runs) become ``pip install --no-deps --no-compile`` of the model's requirements.txt
    (copied before the model, so the layer is reused while they are unchanged) and, once the model
    is in, a run of the scoring server on the model's example (docker/serving/warm_up.py) that
    compiles the bytecode of just the modules serving imports."""
    mlflow_step = re.compile(r"^# Install MLflow\nRUN pip install mlflow==\S+\n", re.MULTILINE)
    model_step = re.compile(
        r"^(# Copy model to image and install dependencies\nCOPY (\S+) /opt/ml/model\n)"
        r"RUN python -c \"from mlflow\.models import container as C; "
        r"C\._install_pyfunc_deps\(.*\n",
        re.MULTILINE,
    )
    model = model_step.search(dockerfile)
    if not mlflow_step.search(dockerfile) or not model:
        raise DeployError("MLflow's generated Dockerfile changed: its install steps were not found")
    install = (
        "# The model's requirements are its complete, pinned serving set (mlflow-skinny, not\n"
        "# mlflow): installed as they are, without dependency resolution or bytecode.\n"
        f"COPY {model.group(2)}/requirements.txt /opt/ml/requirements.txt\n"
        "RUN pip install --no-deps --no-compile -r /opt/ml/requirements.txt\n"
    )
    warm_up = (
        "# The scoring server once on the model's example: bytecode of what serving imports.\n"
        f"COPY {WARM_UP.name} /opt/health-predict/{WARM_UP.name}\n"
        f"RUN python /opt/health-predict/{WARM_UP.name}\n"
    )
    dockerfile = mlflow_step.sub(lambda _: install, dockerfile, count=1)
    return model_step.sub(lambda match: match.group(1) + warm_up, dockerfile, count=1)


def write_hardened_dockerfile(model_uri: str, output_dir: str | Path, workers: int) -> Path:
    """``output_dir/Dockerfile`` (hardened) with the model and nginx config beside it.

    ``output_dir`` defaults to :func:`serving_build_dir`. It is replaced only when missing, empty
    or written here before (it holds ``BUILD_MARKER``); any other folder is refused untouched.
    Generated in a sibling temporary folder and moved into place only when complete.
    """
    output_dir = serving_build_dir(output_dir)
    ours = (output_dir / BUILD_MARKER).is_file()
    if output_dir.exists() and not ours and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise DeployError(
            f"output_dir {output_dir} exists and was not written by deploy (no "
            f"{BUILD_MARKER} in it): choose an empty or new folder; nothing was deleted"
        )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(mlflow_cli.parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": config.tracking_uri(),
    }
    command = [
        str(mlflow_cli), "models", "generate-dockerfile", "-m", model_uri, "-d", str(partial),
        "--env-manager", "local",
    ]  # fmt: skip
    generated = subprocess.run(command, env=env, capture_output=True, text=True)
    if generated.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        last_line = (generated.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeployError(f"mlflow models generate-dockerfile failed: {last_line}")
    dockerfile = partial / "Dockerfile"
    complete = any(
        requirements.is_complete(path.read_text().splitlines())
        for path in (partial / "model_dir").rglob("requirements.txt")
    )
    text = dockerfile.read_text()
    if complete:
        text = install_complete_requirements(text)
    dockerfile.write_text(harden_dockerfile(text, workers))
    shutil.copy(NGINX_CONF, partial / "nginx.conf")
    if complete:
        shutil.copy(WARM_UP, partial / WARM_UP.name)
    (partial / BUILD_MARKER).write_text(f"serving build context of {model_uri}\n")
    if output_dir.is_dir():
        shutil.rmtree(output_dir)
    partial.rename(output_dir)
    return output_dir / "Dockerfile"


@dataclass(frozen=True)
class ServingImage:
    """A built serving image: its content-addressed tag and id, and the model it serves."""

    tag: str
    id: str
    model: ResolvedModel
    dockerfile: Path


def build_serving_image(
    model_uri: str,
    output_dir: str | Path = "",
    workers: int = 2,
    nocache: bool = False,
) -> ServingImage:
    """The hardened serving image of ``model_uri``, built unless the engine already has it.

    The Dockerfile comes from ``mlflow models generate-dockerfile`` (hardened); the image holds
    only the saved model and what its requirements name (see :mod:`steps.images`).
    """
    model = resolve_model(model_uri)
    dockerfile = write_hardened_dockerfile(model.uri, output_dir, workers)
    client = images.engine()
    model_dirs = [p.parent for p in (dockerfile.parent / "model_dir").rglob("requirements.txt")]
    wanted, complete = images.model_requirements(model_dirs[0]) if model_dirs else ([], False)
    tag = images.build(
        client, dockerfile.parent, images.SERVING_IMAGE_REPOSITORY, wanted, nocache=nocache,
        resolve=not complete,
    )  # fmt: skip
    return ServingImage(tag=tag, id=client.images.get(tag).id, model=model, dockerfile=dockerfile)
