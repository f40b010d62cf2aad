"""Ingest on made-up data: path, zip and real HTTP sources, bad files, quarantine, checksum."""

from __future__ import annotations

import functools
import io
import logging
import subprocess
import sys
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps import ingest
from steps.core import config, storage
from steps.data import ingestion, schema
from tests.fixtures_data import synthetic_encounters


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def synthetic_csv() -> bytes:
    return columns.to_raw_csv_bytes(synthetic_encounters(200, seed=7))


@pytest.fixture
def http_root(tmp_path: Path):
    """A real HTTP server on a free loopback port serving ``tmp_path/www``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_zip_over_real_http_is_ingested_and_counted(http_root, synthetic_csv, tmp_path):
    root, base_url = http_root
    (root / "data.zip").write_bytes(_zip_bytes({"nested/dir/diabetic_data.csv": synthetic_csv}))
    store = str(tmp_path / "store")
    result = ingestion.ingest(f"{base_url}/data.zip", store)
    assert result.source_kind == "url:zip"
    assert (result.source_rows, result.clean_rows, result.quarantined_rows) == (200, 200, 0)
    stored = columns.read_encounters_csv(storage.read_bytes(result.raw_table_uri))
    pd.testing.assert_frame_equal(stored, columns.read_encounters_csv(synthetic_csv))
    summary = storage.read_json(storage.join(store, config.INGEST_SUMMARY_KEY))
    assert summary["clean_rows"] == 200 and summary["container"] == "zip"


def test_checksum_mismatch_warns_loudly_but_continues(synthetic_csv, tmp_path, caplog, capsys):
    source = tmp_path / "diabetic_data.csv"
    source.write_bytes(synthetic_csv)
    with caplog.at_level(logging.WARNING, logger="steps.data.ingestion"):
        result = ingestion.ingest(str(source), str(tmp_path / "store"))
    assert not result.sha256_matches
    assert result.clean_rows == 200
    assert any(config.RAW_CSV_SHA256 in record.getMessage() for record in caplog.records)
    assert "WARNING" in capsys.readouterr().err
    run = mlflow.get_run(result.run_id)
    assert run.data.params["sha256_matches"] == "False"


def test_bad_rows_go_to_quarantine_with_reasons_and_never_to_mlflow_or_logs(
    synthetic_csv, tmp_path, caplog, capsys
):
    text = columns.read_encounters_csv(synthetic_csv, as_text=True)
    text.loc[10, "time_in_hospital"] = "99"
    text.loc[50, "gender"] = None
    text.loc[51, "A1Cresult"] = "High"
    bad_ids = set(text.loc[[10, 50, 51], "encounter_id"])
    source = tmp_path / "diabetic_data.csv"
    source.write_bytes(columns.to_raw_csv_bytes(text))
    store = str(tmp_path / "store")

    with caplog.at_level(logging.DEBUG):
        result = ingestion.ingest(str(source), store)

    assert (result.source_rows, result.clean_rows, result.quarantined_rows) == (200, 197, 3)
    quarantine = columns.read_encounters_csv(storage.read_bytes(result.quarantine_uri))
    assert list(quarantine[schema.SOURCE_ROW_COLUMN]) == [11, 51, 52]
    assert list(quarantine[schema.QUARANTINE_REASON_COLUMN]) == [
        "time_in_hospital: out of range (1, 14)",
        "gender: missing",
        "A1Cresult: not an allowed value",
    ]
    assert set(quarantine["encounter_id"].astype(str)) == bad_ids
    clean = columns.read_encounters_csv(storage.read_bytes(result.raw_table_uri))
    assert not set(clean["encounter_id"].astype(str)) & bad_ids

    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)]
    assert artifacts == ["ingest_summary.json"]
    assert mlflow.get_run(result.run_id).data.metrics["quarantined_rows"] == 3
    printed = caplog.text + "".join(capsys.readouterr())
    assert not any(encounter_id in printed for encounter_id in bad_ids)


def _bad_sources(synthetic_csv: bytes) -> dict[str, tuple[bytes, str]]:
    """Name -> (file bytes, expected error message fragment)."""
    header = synthetic_csv.decode().splitlines(keepends=True)[0]
    valid_zip = _zip_bytes({"diabetic_data.csv": synthetic_csv})
    corrupt_member = bytearray(valid_zip)
    corrupt_member[60:160] = bytes(100)
    all_bad = columns.read_encounters_csv(synthetic_csv, as_text=True).assign(age="[200-210)")
    return {
        "empty": (b"", "the file is empty"),
        "blank": (b"\n\n  \n", "the CSV is empty"),
        "binary": (bytes(range(256)) * 40, "not a CSV text file"),
        "other_csv": (b"a,b\n1,2\n", "does not have the dataset's header (none of the 50"),
        "json": (b'{"encounters": []}', "does not have the dataset's header"),
        "missing_columns": (
            columns.to_raw_csv_bytes(synthetic_encounters(5).drop(columns=["race", "weight"])),
            "wrong columns: 2 missing (race, weight)",
        ),
        "extra_column": (
            columns.to_raw_csv_bytes(synthetic_encounters(5).assign(notes="x")),
            "wrong columns: 1 unexpected",
        ),
        "header_only": (header.encode(), "the CSV has a header but no data rows"),
        "truncated_zip": (valid_zip[: len(valid_zip) // 2], "the zip is corrupt or truncated"),
        "corrupt_zip": (bytes(corrupt_member), "the zip is corrupt or truncated"),
        "zip_without_csv": (
            _zip_bytes({"IDs_mapping.csv": b"admission_type_id,description\n1,Emergency\n"}),
            "the zip holds no diabetic_data.csv",
        ),
        "all_rows_bad": (columns.to_raw_csv_bytes(all_bad), "no row passed validation (200 rows"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty", "blank", "binary", "other_csv", "json", "missing_columns", "extra_column",
        "header_only", "truncated_zip", "corrupt_zip", "zip_without_csv",
        "all_rows_bad",
    ],
)  # fmt: skip
def test_a_file_that_is_not_the_dataset_stops_with_one_line(case, synthetic_csv, tmp_path, capsys):
    payload, expected = _bad_sources(synthetic_csv)[case]
    source = tmp_path / "upload.bin"
    source.write_bytes(payload)
    store = tmp_path / "store"

    exit_code = ingest.main(["--raw-data", str(source), "--data-uri", str(store)])

    err = capsys.readouterr().err
    assert exit_code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and expected in error_lines[0], err
    assert "Traceback" not in err
    assert not (store / config.RAW_DATA_KEY).exists()


def test_headerless_dataset_error_does_not_echo_the_first_row(synthetic_csv, tmp_path):
    first_row = synthetic_csv.decode().splitlines()[1]
    source = tmp_path / "diabetic_data.csv"
    source.write_text("\n".join(synthetic_csv.decode().splitlines()[1:]) + "\n")
    with pytest.raises(ingestion.DatasetError) as error:
        ingestion.ingest(str(source), str(tmp_path / "store"))
    assert "header" in str(error.value)
    assert not any(value in str(error.value) for value in first_row.split(",")[:2])


def test_missing_path_and_http_404_name_the_problem(http_root, tmp_path):
    _, base_url = http_root
    with pytest.raises(ingestion.DatasetError, match="no dataset file at"):
        ingestion.ingest(str(tmp_path / "nowhere.zip"), str(tmp_path / "store"))
    with pytest.raises(ingestion.DatasetError, match=r"could not download .*: HTTPError"):
        ingestion.ingest(f"{base_url}/missing.zip", str(tmp_path / "store"))


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "steps.ingest",
            "--raw-data",
            str(empty),
            "--data-uri",
            str(tmp_path),
        ],
        cwd=config.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == "error: the file is empty"
    assert "Traceback" not in completed.stderr


def test_rows_with_too_many_or_too_few_fields_are_both_quarantined(synthetic_csv, tmp_path):
    header, *rows = synthetic_csv.decode().splitlines(keepends=True)
    rows[3] = rows[3].rstrip("\n") + ",ZQX-extra,ZQX-extra\n"  # 52 fields
    rows[7] = ",".join(rows[7].split(",")[:20]) + "\n"  # 20 fields
    source = tmp_path / "diabetic_data.csv"
    source.write_bytes((header + "".join(rows)).encode())

    result = ingestion.ingest(str(source), str(tmp_path / "store"))

    assert (result.source_rows, result.clean_rows, result.quarantined_rows) == (200, 198, 2)
    quarantine = columns.read_encounters_csv(storage.read_bytes(result.quarantine_uri))
    assert list(quarantine[schema.SOURCE_ROW_COLUMN]) == [4, 8]
    assert quarantine[schema.QUARANTINE_REASON_COLUMN].iloc[0] == ingestion.LONG_ROW_REASON
    assert "ZQX-extra" not in storage.read_bytes(result.quarantine_uri).decode()
    assert result.reason_counts[ingestion.LONG_ROW_REASON] == 1


def _stored_outputs(store: Path) -> dict[str, bytes]:
    keys = (config.RAW_DATA_KEY, config.QUARANTINE_KEY, config.INGEST_SUMMARY_KEY)
    return {key: (store / key).read_bytes() for key in keys}


def test_a_failed_ingest_leaves_the_stored_outputs_untouched(synthetic_csv, tmp_path):
    text = columns.read_encounters_csv(synthetic_csv, as_text=True)
    text.loc[5, "gender"] = None
    first, store = tmp_path / "first.csv", tmp_path / "store"
    first.write_bytes(columns.to_raw_csv_bytes(text))
    ingestion.ingest(str(first), str(store))
    before = _stored_outputs(store)

    all_bad = tmp_path / "all_bad.csv"
    all_bad.write_bytes(columns.to_raw_csv_bytes(text.assign(age="[200-210)")))
    with pytest.raises(ingestion.DatasetError, match="no row passed validation"):
        ingestion.ingest(str(all_bad), str(store))
    assert _stored_outputs(store) == before


def test_a_checksum_mismatch_replaces_a_stored_raw_table_only_when_asked(synthetic_csv, tmp_path):
    store = tmp_path / "store"
    first = tmp_path / "first.csv"
    first.write_bytes(synthetic_csv)
    ingestion.ingest(str(first), str(store))
    before = _stored_outputs(store)
    smaller = tmp_path / "smaller.csv"
    smaller.write_bytes(b"".join(synthetic_csv.splitlines(keepends=True)[:21]))

    exit_code = ingest.main(["--raw-data", str(smaller), "--data-uri", str(store)])
    assert exit_code == 2 and _stored_outputs(store) == before

    replaced = ingestion.ingest(str(smaller), str(store), replace_raw_table=True)
    assert replaced.clean_rows == 20
    assert (
        ingest.main(
            ["--raw-data", str(first), "--data-uri", str(store), "--replace-raw-table", "true"]
        )
        == 0
    )
