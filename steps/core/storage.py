"""Read and write objects in the data store: a local folder or an S3 prefix, through fsspec.

``s3://`` goes to s3fs, pointed at ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``,
``MLFLOW_S3_ENDPOINT_URL``) for MinIO or another S3-compatible endpoint; pandas reads such URIs
itself with ``storage_options(uri)``. Listings are never cached (other processes write the same
store). Local writes go to a hidden sibling file that is then renamed over the target, so a crash
never leaves a half-written file (fsspec's own local transactions stage files in the system temp
folder, from where a rename is not atomic); an S3 PUT is atomic by itself. The store holds patient
rows, so local files are written owner-only (0600) and the folders a write creates too (0700).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
from fsspec import AbstractFileSystem

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# S3-compatible endpoint settings, first set wins; the S3-only one leaves STS and ECR alone.
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")


class StorageError(RuntimeError):
    """A data-store object is missing or cannot be read or written."""


def is_s3(uri: str) -> bool:
    """True when ``uri`` names an S3 object or prefix."""
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join a data-store root and relative keys with ``/`` (works for S3 and local paths)."""
    pieces = [root.rstrip("/")] + [p.strip("/") for p in parts if p]
    return "/".join(pieces)


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri``, pandas' ``storage_options`` too: endpoint, no listing cache."""
    if not is_s3(uri):
        return {}
    # fsspec reuses one client per endpoint (and starts afresh in a forked child): a new one per
    # call costs 30x (3.6 s vs 0.12 s per call on the loaded test machine, moto server).
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint = next(
        (os.environ[name] for name in S3_ENDPOINT_VARIABLES if os.environ.get(name)), None
    )
    if endpoint:
        options["endpoint_url"] = endpoint
    return options


def _filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(uri, **storage_options(uri))


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``."""
    fs, path = _filesystem(uri)
    try:
        return fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise StorageError(f"no object at {uri}") from exc


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents owner-only (existing folders are left alone)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            created.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(created, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def write_bytes(uri: str, payload: bytes) -> str:
    """Store ``payload`` at ``uri`` (atomically: see the module docstring) and return ``uri``."""
    fs, path = _filesystem(uri)
    if is_s3(uri):
        fs.pipe_file(path, payload)
        return uri
    parent, name = posixpath.split(path)
    _make_private_dirs(Path(parent))
    staged = posixpath.join(parent, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        fs.pipe_file(staged, payload)
        os.chmod(staged, PRIVATE_FILE_MODE)
        fs.mv(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return uri


def exists(uri: str) -> bool:
    """True when an object (not a prefix or folder) exists at ``uri``."""
    fs, path = _filesystem(uri)
    return fs.isfile(path)


def list_keys(prefix_uri: str) -> list[str]:
    """URIs of all objects below ``prefix_uri`` (hidden names left out), sorted, spelled from
    ``prefix_uri`` as given (a relative local prefix gives relative paths)."""
    fs, root = _filesystem(prefix_uri)
    found = fs.find(root) if fs.isdir(root) else []
    relative = (posixpath.relpath(item, root) for item in found)
    return sorted(
        join(prefix_uri, key)
        for key in relative
        if not any(part.startswith(".") for part in key.split("/"))
    )


def delete(uri: str) -> None:
    """Remove the object at ``uri`` if it exists."""
    fs, path = _filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def read_csv(uri: str, **kwargs: Any) -> pd.DataFrame:
    """A CSV object as a DataFrame, read by pandas itself (``kwargs`` go to ``pandas.read_csv``)."""
    try:
        return pd.read_csv(uri, storage_options=storage_options(uri) or None, **kwargs)
    except FileNotFoundError as exc:
        raise StorageError(f"no object at {uri}") from exc


def write_csv(frame: pd.DataFrame, uri: str) -> str:
    """Store ``frame`` as CSV (no index, ``\\n`` line endings) and return ``uri``."""
    return write_bytes(uri, frame.to_csv(index=False, lineterminator="\n").encode("utf-8"))


def read_json(uri: str) -> Any:
    """A JSON object parsed."""
    return json.loads(read_bytes(uri))


def write_json(obj: Any, uri: str) -> str:
    """Store ``obj`` as indented, key-sorted JSON and return ``uri``."""
    return write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def local_copy(uri: str, directory: str | Path) -> Path:
    """A local file holding the object at ``uri`` (the file itself when already local)."""
    fs, path = _filesystem(uri)
    if not is_s3(uri):
        return Path(path)
    target = Path(directory) / posixpath.basename(path)
    fs.get_file(path, str(target))
    return target
