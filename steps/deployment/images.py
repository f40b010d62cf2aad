"""Build the project's images: the base, the services image and the champion's serving image.

Every Dockerfile starts ``FROM`` the build argument ``BASE_IMAGE`` whose default is the public
``python:3.11-slim``, so a user with internet access builds exactly what is tested here. Where no
image registry can be reached, the base is made locally instead: Debian's ``debootstrap`` builds a
minimal bookworm root filesystem (its python3 is 3.11, plus nginx and a virtualenv at
``/usr/local/python`` that stands in for the slim image's ``/usr/local`` Python) and ``docker
import`` turns it into ``health-predict-base:bookworm-<recipe hash>``.

Python packages come from PyPI when a build container can reach it, else from a wheelhouse built
on the host from ``requirements.lock`` (cached under ``.cache/wheelhouse``, git-ignored) and served
to the build over loopback; only the ``PIP_NO_INDEX``/``PIP_FIND_LINKS`` build arguments differ.

Image tags are content-addressed (a hash of the build context and of the base image's id), so
``make images`` (``python -m steps.images``) rebuilds only what changed and says what it did.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from custom_pyfunc.requirements import is_complete
from steps.core import config

PUBLIC_BASE_IMAGE = "python:3.11-slim"


LOCAL_BASE_REPOSITORY = "health-predict-base"


DEBIAN_SUITE = "bookworm"


# What the images need beyond a minimal Debian: Python 3.11 with venv (pip), TLS roots, nginx,
# and the OpenMP runtime that LightGBM, XGBoost and CatBoost load.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "nginx", "libgomp1")


BASE_PYTHON = "/usr/local/python"


# What Debian's slim images (python:3.11-slim's base) leave out: documentation but its copyright
# files, manual pages and translations (about 50 MB); dpkg keeps leaving them out for packages
# installed later.
DPKG_EXCLUDES = ("/usr/share/doc", "/usr/share/info", "/usr/share/man", "/usr/share/locale")


DPKG_INCLUDE = "/usr/share/doc/*/copyright"


SERVICES_IMAGE_REPOSITORY = "health-predict-services"


SERVING_IMAGE_REPOSITORY = "health-predict-api"


WHEELHOUSE = config.PROJECT_ROOT / ".cache" / "wheelhouse"


# MLflow's serving image installs gunicorn[gevent] beside the model's requirements.
SERVING_EXTRA_REQUIREMENTS = ("gunicorn[gevent]",)


LOCK_FILE = config.PROJECT_ROOT / "requirements.lock"


SERVICES_LOCK_FILE = config.PROJECT_ROOT / "requirements-services.lock"


WHEELHOUSE_PORT = 38517


DEFAULT_MIRROR = "http://deb.debian.org/debian"


class ImageError(RuntimeError):
    """An image could not be built; the message says which and why."""


def log(message: str) -> None:
    """One progress line on stderr (stdout stays for results)."""
    print(f"[images] {message}", file=sys.stderr, flush=True)


def engine():
    """A Docker client for the engine in the environment (DOCKER_HOST or the local socket)."""
    # lazy: the docker SDK (~0.5 s to import) is needed only when images are built
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as error:
        raise ImageError(f"no Docker engine reachable ({error})") from None
    return client


def image_exists(client, reference: str) -> bool:
    """Whether the engine holds an image called ``reference``."""
    # lazy: the docker SDK (~0.5 s to import) is needed only when images are built
    import docker

    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def _sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt sources name (deb822 or one-line format)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in sources:
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    return DEFAULT_MIRROR


def local_base_tag() -> str:
    """The content-addressed tag of the debootstrapped base (a hash of its recipe)."""
    recipe = json.dumps([DEBIAN_SUITE, BASE_PACKAGES, BASE_PYTHON, "minbase", DPKG_EXCLUDES, 1])
    return f"{LOCAL_BASE_REPOSITORY}:{DEBIAN_SUITE}-{_sha(recipe)[:12]}"


def debootstrap(root: Path) -> None:
    """A minimal bookworm root filesystem at ``root`` from the machine's own Debian mirror."""
    mirror = debian_mirror()
    command = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        DEBIAN_SUITE, str(root), mirror,
    ]  # fmt: skip
    log(f"debootstrap {DEBIAN_SUITE} from {mirror} into {root}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise ImageError(f"debootstrap failed (exit {done.returncode}):\n{tail}")


def slim_root(root: Path) -> None:
    """``root`` without ``DPKG_EXCLUDES`` (but ``DPKG_INCLUDE``), now and for later packages."""
    rules = [f"path-exclude {folder}/*" for folder in DPKG_EXCLUDES]
    (root / "etc/dpkg/dpkg.cfg.d/slim").write_text(
        "\n".join([*rules, f"path-include {DPKG_INCLUDE}"]) + "\n"
    )
    for folder in DPKG_EXCLUDES:
        for path in sorted((root / folder.lstrip("/")).rglob("*"), reverse=True):
            if not fnmatch.fnmatch(f"/{path.relative_to(root)}", DPKG_INCLUDE):
                if path.is_symlink() or not path.is_dir():
                    path.unlink()
                else:
                    with contextlib.suppress(OSError):  # still holds an included file
                        path.rmdir()


def import_root(root: Path, tag: str) -> None:
    """Add the Python virtualenv to ``root``, slim it, drop apt caches, ``docker import`` it as
    ``tag``."""
    subprocess.run(["chroot", str(root), "python3", "-m", "venv", BASE_PYTHON], check=True)
    slim_root(root)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
        for child in (root / leftover).glob("*"):
            if child.is_file() or child.is_symlink():
                child.unlink()
    changes = [
        f"ENV PATH={BASE_PYTHON}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["docker", "import", *[arg for c in changes for arg in ("--change", c)], "-", tag],
        stdin=tar.stdout, capture_output=True, text=True,
    )  # fmt: skip
    tar.wait()
    if imported.returncode != 0 or tar.returncode != 0:
        raise ImageError(f"docker import of the base root filesystem failed: {imported.stderr}")


def build_local_base(client) -> str:
    """``health-predict-base:bookworm-<hash>``, made with debootstrap and ``docker import``."""
    tag = local_base_tag()
    if image_exists(client, tag):
        log(f"base image {tag}: present, reused")
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageError(
            "debootstrap is not installed (apt-get install debootstrap) and the public base "
            f"image {PUBLIC_BASE_IMAGE} is not available: cannot make a base image"
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="health-predict-rootfs-") as tmp:
        root = Path(tmp) / "root"
        debootstrap(root)
        import_root(root, tag)
    log(f"base image {tag}: built in {time.monotonic() - started:.0f} s")
    return tag


def base_image(client) -> str:
    """The base to build from: ``HEALTH_PREDICT_BASE_IMAGE``, the public image if the engine has
    it, else the locally debootstrapped one."""
    if chosen := os.environ.get("HEALTH_PREDICT_BASE_IMAGE"):
        if chosen == "local":
            return build_local_base(client)
        return chosen
    if image_exists(client, PUBLIC_BASE_IMAGE):
        return PUBLIC_BASE_IMAGE
    return build_local_base(client)


@functools.cache
def build_container_reaches_pypi(base: str) -> bool:
    """Whether a container on the default bridge network can fetch from PyPI (measured once)."""
    client = engine()
    probe = (
        "import urllib.request; "
        "urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=5).read(1)"
    )
    try:
        client.containers.run(base, ["python3", "-c", probe], remove=True, network_mode="bridge")
    except Exception:
        return False
    return True


def download_wheels(requirements: list[str], resolve: bool = True) -> Path:
    """The shared wheelhouse, holding wheels for ``requirements`` pinned by requirements.lock
    (and, with ``resolve``, for their dependencies).

    A stamp per requirement set makes a repeat a no-op; pip skips wheels already present.
    """
    stamps = WHEELHOUSE / ".stamps"
    stamp = stamps / _sha(LOCK_FILE.read_bytes(), str(resolve), *sorted(requirements))
    if stamp.exists():
        return WHEELHOUSE
    stamps.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        request = Path(tmp) / "requirements.txt"
        request.write_text("\n".join(requirements) + "\n")
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", str(WHEELHOUSE), "-r", str(request),
            "-c", str(LOCK_FILE), *([] if resolve else ["--no-deps"]),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ImageError(f"building the wheelhouse failed:\n{tail}")
    stamp.touch()
    log(f"wheelhouse: {len(requirements)} requirements in {time.monotonic() - started:.0f} s")
    return WHEELHOUSE


@contextlib.contextmanager
def _serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on loopback, on a fixed port when free: the URL is a build argument,
    part of the layer cache key, so a new port would rebuild every pip layer."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def pip_source(
    base: str, requirements: list[str], resolve: bool = True
) -> Iterator[tuple[dict[str, str], str | None]]:
    """Build arguments and network mode for pip in a build: PyPI when reachable, else the
    wheelhouse (:func:`download_wheels` of ``requirements``) served on the host's loopback;
    nothing for an image that installs no Python package (no ``requirements``)."""
    if not requirements or (
        os.environ.get("HEALTH_PREDICT_PIP_SOURCE", "auto") != "wheelhouse"
        and build_container_reaches_pypi(base)
    ):
        yield {}, None
        return
    wheelhouse = download_wheels(requirements, resolve)
    with _serve_directory(wheelhouse) as url:
        yield {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": url}, "host"


def context_hash(context: Path, base_id: str) -> str:
    """A hash of every file in the build context (paths and bytes) and of the base image id."""
    parts: list[bytes | str] = [base_id]
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        parts += [str(path.relative_to(context)), path.read_bytes()]
    return _sha(*parts)


def build(
    client,
    context: Path,
    repository: str,
    requirements: list[str],
    dockerfile: str = "Dockerfile",
    hash_paths: list[Path] | None = None,
    nocache: bool = False,
    resolve: bool = True,
) -> str:
    """``<repository>:<content hash>`` built from ``context`` unless the engine already has it.

    ``requirements`` are what pip installs (``resolve``: with their dependencies), for the
    wheelhouse; ``hash_paths`` (default: the whole context) are the files that decide the image's
    content; ``nocache`` builds every layer afresh (the cold build of benchmarks/container.py).
    """
    base = base_image(client)
    base_id = client.images.get(base).id
    if hash_paths is None:
        content = context_hash(context, base_id)
    else:
        content = _sha(base_id, *(p.read_bytes() for p in hash_paths), *map(str, hash_paths))
    tag = f"{repository}:{content}"
    if image_exists(client, tag):
        log(f"{tag}: up to date, not rebuilt")
        return tag
    started = time.monotonic()
    log(f"{tag}: building from {base}")
    with pip_source(base, requirements, resolve) as (pip_args, network):
        output = []
        for chunk in client.api.build(
            path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True,
            pull=False, decode=True, network_mode=network, nocache=nocache,
            buildargs={"BASE_IMAGE": base, **pip_args},
        ):  # fmt: skip
            output.append(chunk.get("stream") or chunk.get("error") or "")
            if "error" in chunk:
                raise ImageError(
                    f"building {tag} failed: {chunk['error'].strip()}\n" + "".join(output[-20:])
                )
    size_mb = client.images.get(tag).attrs["Size"] / 1e6
    log(f"{tag}: built in {time.monotonic() - started:.0f} s, {size_mb:.0f} MB")
    return tag


def model_requirements(model_dir: Path) -> tuple[list[str], bool]:
    """What the serving image pip-installs for a saved model, and whether that list is complete
    (installed without resolving dependencies): a model's complete requirements
    (custom_pyfunc/requirements.py) as they are; else, as MLflow's own install steps do, the
    build dependencies of its ``python_env.yaml``, its ``requirements.txt``, MLflow and the
    server's extras."""
    lines = (model_dir / "requirements.txt").read_text().splitlines()
    wanted = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if is_complete(wanted):
        return wanted, True
    python_env = yaml.safe_load((model_dir / "python_env.yaml").read_text())
    return [
        *python_env.get("build_dependencies", []),
        *wanted,
        "mlflow==" + _locked_version("mlflow"),
        *SERVING_EXTRA_REQUIREMENTS,
    ], False


def locked_versions(lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """Package name -> pinned version, for every ``name==version`` line of a lock file."""
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock_file.read_text(), re.MULTILINE))


def _locked_version(package: str) -> str:
    if (version := locked_versions().get(package)) is None:
        raise ImageError(f"{package} is not pinned in {LOCK_FILE.name}")
    return version


def build_services_image(client) -> str:
    """The image of the compose stack's Python services (Airflow 3 and the MLflow server)."""
    root = config.PROJECT_ROOT
    dockerfile = root / "docker" / "services.Dockerfile"
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy(dockerfile, context / "Dockerfile")
        shutil.copy(SERVICES_LOCK_FILE, context / SERVICES_LOCK_FILE.name)
        return build(
            client, context, SERVICES_IMAGE_REPOSITORY, ["-r " + str(SERVICES_LOCK_FILE)],
        )  # fmt: skip
