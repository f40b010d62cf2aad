"""The data store on a local folder and on S3.

S3 is moto's standalone server (``moto.server.ThreadedMotoServer`` on a free loopback port, see
tests/fixtures_data.py): moto is the S3 emulator available here, reached over real HTTP by s3fs
through ``AWS_ENDPOINT_URL``, exactly as a MinIO or AWS endpoint would be.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.data import ingestion, splitting
from tests.fixtures_data import synthetic_encounters


def _round_trip(root: str, scratch: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", float("nan")]})
    csv_uri = storage.write_csv(frame, storage.join(root, "dir", "table.csv"))
    json_uri = storage.write_json({"k": [1, 2]}, storage.join(root, "dir/sub/state.json"))
    bytes_uri = storage.write_bytes(storage.join(root, "blob.bin"), b"\x00\x01payload")

    pd.testing.assert_frame_equal(storage.read_csv(csv_uri), frame)
    assert storage.read_json(json_uri) == {"k": [1, 2]}
    assert storage.read_bytes(bytes_uri) == b"\x00\x01payload"
    assert storage.exists(csv_uri) and not storage.exists(storage.join(root, "dir/table"))
    assert storage.list_keys(storage.join(root, "dir")) == sorted([csv_uri, json_uri])
    assert storage.local_copy(bytes_uri, scratch).read_bytes() == b"\x00\x01payload"

    storage.delete(csv_uri)
    assert not storage.exists(csv_uri)
    with pytest.raises(storage.StorageError):
        storage.read_bytes(csv_uri)


def test_local_folder_round_trip(tmp_path):
    _round_trip(str(tmp_path / "store"), tmp_path)
    leftovers = [p.name for p in (tmp_path / "store").rglob(".*.tmp")]
    assert leftovers == []  # atomic writes leave no temporary files behind


def test_s3_round_trip(s3_data_uri, tmp_path):
    _round_trip(s3_data_uri, tmp_path)


def test_s3_endpoint_from_mlflow_variable_and_pandas_reads_s3_itself(
    s3_data_uri, s3_endpoint, monkeypatch
):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    uri = storage.write_bytes(storage.join(s3_data_uri, "t.csv"), b"a,b\n1,x\n")
    frame = pd.read_csv(uri, storage_options=storage.storage_options(uri))
    assert frame.to_dict("list") == {"a": [1], "b": ["x"]}
    assert storage.list_keys(s3_data_uri) == [uri]


def test_relative_local_prefix_lists_relative_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage.write_bytes("store/a/one.csv", b"1")
    storage.write_bytes("store/two.csv", b"2")
    assert storage.list_keys("store") == ["store/a/one.csv", "store/two.csv"]
    assert storage.list_keys("missing") == []


def test_ingest_and_split_on_s3_data_store(s3_data_uri, tmp_path):
    raw_csv = columns.to_raw_csv_bytes(synthetic_encounters(1200, seed=11, n_patients=800))
    raw_uri = storage.write_bytes(f"{s3_data_uri}-source/diabetic_data.csv", raw_csv)

    ingested = ingestion.ingest(raw_uri, s3_data_uri)
    result = splitting.split(s3_data_uri, initial_fraction=0.2, seed=3)

    assert ingested.source_kind == "s3:csv" and ingested.clean_rows == 1200
    assert ingested.raw_table_uri == f"{s3_data_uri}/{config.RAW_DATA_KEY}"
    manifest = storage.read_json(result.manifest_uri)
    assert result.manifest_uri.startswith("s3://")
    for name, entry in result.files.items():
        payload = storage.read_bytes(entry.uri)
        assert entry.uri == f"{s3_data_uri}/{splitting.SPLIT_KEYS[name]}"
        assert (
            hashlib.sha256(payload).hexdigest() == entry.sha256 == manifest["files"][name]["sha256"]
        )
    assert sum(entry.rows for entry in result.files.values()) == 1200
