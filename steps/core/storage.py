"""Read and write objects in the data store: a local folder or an S3 prefix (boto3).

Local writes are atomic (temporary file + rename), so a crash never leaves a half-written file.
S3 honours ``AWS_ENDPOINT_URL`` / ``MLFLOW_S3_ENDPOINT_URL`` for S3-compatible endpoints.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class StorageError(RuntimeError):
    """A data-store object is missing or cannot be read or written."""


def is_s3(uri: str) -> bool:
    """True when ``uri`` names an S3 object or prefix."""
    return uri.startswith("s3://")


def join(root: str, *parts: str) -> str:
    """Join a data-store root and relative keys with ``/`` (works for S3 and local paths)."""
    pieces = [root.rstrip("/")] + [p.strip("/") for p in parts if p]
    return "/".join(pieces)


def _s3_client():
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint or None)


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        client = _s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey as exc:
            raise StorageError(f"no object at {uri}") from exc
    path = _local_path(uri)
    if not path.is_file():
        raise StorageError(f"no file at {uri}")
    return path.read_bytes()


def write_bytes(uri: str, payload: bytes) -> str:
    """Store ``payload`` at ``uri`` (atomically for local files) and return ``uri``."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=payload)
        return uri
    path = _local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; keep the usual file mode
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return uri


def exists(uri: str) -> bool:
    """True when an object exists at ``uri``."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        response = _s3_client().list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        return any(obj["Key"] == key for obj in response.get("Contents", []))
    return _local_path(uri).is_file()


def list_keys(prefix_uri: str) -> list[str]:
    """URIs of all objects below ``prefix_uri``, sorted."""
    if is_s3(prefix_uri):
        bucket, prefix = _bucket_key(prefix_uri.rstrip("/") + "/")
        paginator = _s3_client().get_paginator("list_objects_v2")
        keys = [
            obj["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]
        return sorted(f"s3://{bucket}/{key}" for key in keys)
    root = _local_path(prefix_uri)
    if not root.is_dir():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def delete(uri: str) -> None:
    """Remove the object at ``uri`` if it exists."""
    if is_s3(uri):
        bucket, key = _bucket_key(uri)
        _s3_client().delete_object(Bucket=bucket, Key=key)
    else:
        _local_path(uri).unlink(missing_ok=True)


def read_csv(uri: str, **kwargs: Any) -> pd.DataFrame:
    """A CSV object as a DataFrame (``kwargs`` go to ``pandas.read_csv``)."""
    return pd.read_csv(io.BytesIO(read_bytes(uri)), **kwargs)


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
    if not is_s3(uri):
        return _local_path(uri)
    target = Path(directory) / Path(_bucket_key(uri)[1]).name
    target.write_bytes(read_bytes(uri))
    return target
