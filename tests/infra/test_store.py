"""The compose stack's object store (docker/store/: s3s-fs's S3 server) as a real process on
loopback, driven by boto3: SigV4 with the key pair from its environment, objects that outlive a
restart of the process, a wrong key and an unsigned request refused, no start without keys.

Runs the binary `python -m steps.stack up` compiles into the user's cache, built by cargo first:
a no-op when nothing changed, about 200 crates from nothing (2 min 23 s on a fresh 2-core
machine). Skips, saying so, only where cargo is not installed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from steps.deployment import server, services_stack

pytestmark = pytest.mark.slow
KEY = "hp-test-key"
SECRET = "a-test-secret-of-the-loopback-store"


@pytest.fixture(scope="module")
def binary() -> Path:
    """The store's release binary built from the current source (cargo rebuilds what changed)."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: it compiles the store (docker/store)")
    return services_stack.build_store_binary()


@contextlib.contextmanager
def running_store(binary: Path, root: Path, port: int, **keys: str) -> Iterator[subprocess.Popen]:
    env = {"PATH": os.environ["PATH"], "STORE_ADDRESS": f"127.0.0.1:{port}", **keys}
    process = subprocess.Popen(
        [str(binary), str(root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert time.monotonic() < deadline, "the store did not listen within 30 s"
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def client(port: int, key: str = KEY, secret: str = SECRET):
    # A host name (not an IP) as in the stack (http://s3:9000): the requests must stay path-style.
    return boto3.client(
        "s3", endpoint_url=f"http://localhost:{port}", region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def test_objects_outlive_a_restart_and_only_the_key_pair_gets_in(binary, tmp_path):
    port = server.free_port()
    keys = {"S3_ACCESS_KEY_ID": KEY, "S3_SECRET_ACCESS_KEY": SECRET}
    body = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MiB multipart threshold
    with running_store(binary, tmp_path, port, **keys) as first:
        s3 = client(port)
        s3.create_bucket(Bucket="mlflow-artifacts")
        s3.put_object(Bucket="mlflow-artifacts", Key="1/model/MLmodel", Body=b"flavors: {}\n")
        s3.upload_fileobj(io.BytesIO(body), "mlflow-artifacts", "1/model/model.pkl")
    assert first.returncode == 0, "SIGTERM stops the store cleanly"

    with running_store(binary, tmp_path, port, **keys):
        s3 = client(port)
        listed = s3.list_objects_v2(Bucket="mlflow-artifacts", Prefix="1/model/")
        assert sorted(o["Key"] for o in listed["Contents"]) == ["1/model/MLmodel",
                                                                "1/model/model.pkl"]  # fmt: skip
        assert (
            s3.get_object(Bucket="mlflow-artifacts", Key="1/model/model.pkl")["Body"].read() == body
        )
        for key, secret in ((KEY, "a-wrong-secret"), ("made-up-key", SECRET)):
            with pytest.raises(ClientError) as refused:
                client(port, key, secret).get_object(
                    Bucket="mlflow-artifacts", Key="1/model/MLmodel"
                )
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        unsigned = requests.get(
            f"http://127.0.0.1:{port}/mlflow-artifacts/1/model/MLmodel", timeout=10
        )
        assert unsigned.status_code == 403 and b"flavors" not in unsigned.content


@pytest.mark.parametrize("missing", ["S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"])
def test_refuses_to_start_without_its_key_pair(binary, tmp_path, missing):
    keys = {"S3_ACCESS_KEY_ID": KEY, "S3_SECRET_ACCESS_KEY": SECRET, missing: ""}
    done = subprocess.run(
        [str(binary), str(tmp_path)], env={**keys, "STORE_ADDRESS": "127.0.0.1:0"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {missing} is not set"), done.stderr
