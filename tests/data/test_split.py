"""Ingest and split on the real dataset: quarantine, accounting, grouping, shares, determinism."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.data import splitting

SPLIT_SHARES = {"initial_train": 0.70, "initial_validation": 0.15, "initial_test": 0.15}


@pytest.fixture(scope="module")
def processed(ingested_and_split):
    """The four processed tables of the session split, read back from the data store."""
    return {
        name: columns.read_encounters_csv(storage.read_bytes(entry.uri))
        for name, entry in ingested_and_split.split.files.items()
    }


@pytest.fixture(scope="module")
def raw_table(ingested_and_split):
    return columns.read_encounters_csv(storage.read_bytes(ingested_and_split.ingest.raw_table_uri))


def test_real_dataset_passes_the_schema_and_checksum(ingested_and_split):
    result = ingested_and_split.ingest
    assert result.sha256_matches and result.source_sha256 == config.RAW_CSV_SHA256
    assert (result.source_rows, result.clean_rows, result.quarantined_rows) == (101_766, 101_766, 0)
    quarantine = columns.read_encounters_csv(storage.read_bytes(result.quarantine_uri))
    assert quarantine.empty and "quarantine_reason" in quarantine.columns


def test_row_accounting_and_file_order(ingested_and_split, processed, raw_table):
    manifest = storage.read_json(ingested_and_split.split.manifest_uri)
    accounting = manifest["row_accounting"]
    n_initial = int(len(raw_table) * 0.2)
    assert accounting["source_rows"] == (
        accounting["quarantined_rows"] + accounting["initial_rows"] + accounting["future_rows"]
    )
    assert accounting["initial_rows"] == n_initial
    assert sum(len(processed[name]) for name in SPLIT_SHARES) == n_initial
    assert processed["future_data"]["encounter_id"].tolist() == (
        raw_table["encounter_id"].iloc[n_initial:].tolist()
    )
    position = pd.Series(range(len(raw_table)), index=raw_table["encounter_id"])
    for name in SPLIT_SHARES:
        rows = position.loc[processed[name]["encounter_id"]].to_numpy()
        assert (rows < n_initial).all() and (np.diff(rows) > 0).all(), name


def test_no_patient_in_two_initial_splits(processed):
    patients = {name: set(processed[name]["patient_nbr"]) for name in SPLIT_SHARES}
    assert not patients["initial_train"] & patients["initial_validation"]
    assert not patients["initial_train"] & patients["initial_test"]
    assert not patients["initial_validation"] & patients["initial_test"]


def test_sizes_and_label_rates_within_one_point(processed):
    n_initial = sum(len(processed[name]) for name in SPLIT_SHARES)
    labels = {name: columns.make_label(processed[name]).mean() for name in SPLIT_SHARES}
    overall = sum(labels[name] * len(processed[name]) for name in SPLIT_SHARES) / n_initial
    for name, share in SPLIT_SHARES.items():
        assert abs(len(processed[name]) / n_initial - share) <= 0.01, name
        assert abs(labels[name] - overall) <= 0.01, name


def test_files_keep_the_raw_format_and_the_none_category(ingested_and_split, processed):
    for name, frame in processed.items():
        assert tuple(frame.columns) == columns.RAW_COLUMNS, name
        payload = storage.read_bytes(ingested_and_split.split.uri(name))
        assert columns.to_raw_csv_bytes(frame) == payload, name
    assert (processed["initial_train"]["max_glu_serum"] == "None").mean() > 0.5


def test_split_run_logs_hashes_counts_and_seed(ingested_and_split):
    result = ingested_and_split.split
    run = mlflow.get_run(result.run_id)
    assert run.data.params["split_seed"] == "42"
    for name, entry in result.files.items():
        assert run.data.tags[f"health_predict.data.{name}_sha256"] == entry.sha256
        assert run.data.params[f"{name}_sha256"] == entry.sha256
        assert run.data.metrics[f"{name}_rows"] == entry.rows
    assert run.data.metrics["source_rows"] == 101_766
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == set(result.files)
    for name, entry in result.files.items():
        tags = {tag.key: tag.value for tag in inputs[name].tags}
        assert tags["sha256"] == entry.sha256 and tags["mlflow.data.context"]
        assert inputs[name].dataset.source_type in {"local", "s3"}
        assert json.loads(inputs[name].dataset.profile)["num_rows"] == entry.rows
    manifest = storage.read_json(result.manifest_uri)
    assert {name: f["sha256"] for name, f in manifest["files"].items()} == {
        name: entry.sha256 for name, entry in result.files.items()
    }


def _copy_of_ingested_store(data_uri: str, target: Path) -> str:
    """A new data store holding only what ingest wrote into ``data_uri``."""
    for key in (config.RAW_DATA_KEY, config.INGEST_SUMMARY_KEY):
        (target / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(data_uri) / key, target / key)
    return str(target)


def test_same_input_and_seed_give_byte_identical_files(ingested_and_split, tmp_path: Path):
    first = ingested_and_split.split.files
    again = splitting.split(_copy_of_ingested_store(ingested_and_split.data_uri, tmp_path / "a"))
    for name, entry in again.files.items():
        on_disk = hashlib.sha256(storage.read_bytes(entry.uri)).hexdigest()
        assert entry.sha256 == on_disk == first[name].sha256, name

    other_seed = splitting.split(
        _copy_of_ingested_store(ingested_and_split.data_uri, tmp_path / "b"), seed=7
    )
    assert other_seed.files["initial_train"].sha256 != first["initial_train"].sha256
    assert other_seed.files["future_data"].sha256 == first["future_data"].sha256


def test_split_refuses_a_raw_table_that_does_not_match_ingest(ingested_and_split, tmp_path):
    copy = Path(_copy_of_ingested_store(ingested_and_split.data_uri, tmp_path / "store"))
    lines = (copy / config.RAW_DATA_KEY).read_bytes().splitlines(keepends=True)
    (copy / config.RAW_DATA_KEY).write_bytes(b"".join(lines[:-5]))
    with pytest.raises(splitting.SplitError, match="run ingest again"):
        splitting.split(str(copy))
    assert not (copy / config.PROCESSED_DIR).exists()
