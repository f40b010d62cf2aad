"""Labelled encounter files from the data store, as ``train`` and ``register`` read them.

One reader for the split files, the extra training data of a retraining and the gate's evaluation
data: a CSV, every CSV below a folder or prefix, or a comma-separated list of either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from mlflow.entities import LoggedModelInput
from mlflow.types import ColSpec, Schema

from custom_pyfunc import columns
from steps.core import storage

REQUIRED_COLUMNS = (columns.LABEL_COLUMN, "discharge_disposition_id")
# MLflow input contexts of the data files.
DATASET_CONTEXTS = {
    "initial_train": "training",
    "extra_train": "training",
    "initial_validation": "validation",
    "initial_test": "testing",
    "future_data": "future",
}


class LabelledDataError(ValueError):
    """No labelled file at a URI, or a file without the label or the discharge disposition."""


@dataclass(frozen=True)
class LabelledData:
    """The files' rows (all of them, in file order), the files, and the sha256 of their bytes."""

    frame: pd.DataFrame
    uris: list[str]
    sha256: str


def csv_uris(uri_list: str) -> list[str]:
    """The CSV files named by ``uri_list`` (comma-separated files, folders, prefixes), in order."""
    uris = []
    for part in (p.strip() for p in uri_list.split(",") if p.strip()):
        if storage.exists(part):
            uris.append(part)
        else:
            uris += [key for key in storage.list_keys(part) if key.endswith(".csv")]
    return uris


def read_labelled(uri_list: str) -> LabelledData:
    """Read the labelled raw-format CSVs of ``uri_list`` into one frame.

    The sha256 covers the files' bytes in order, so a single file's hash equals the one ``split``
    records for it.
    """
    uris = csv_uris(uri_list)
    if not uris:
        raise LabelledDataError(f"no labelled CSV file at {uri_list}")
    digest, frames = hashlib.sha256(), []
    for uri in uris:
        payload = storage.read_bytes(uri)
        digest.update(payload)
        frame = columns.read_encounters_csv(payload)
        missing = sorted(set(REQUIRED_COLUMNS) - set(frame.columns))
        if missing:
            raise LabelledDataError(f"labelled data {uri} lacks column(s) {missing}")
        frames.append(frame)
    return LabelledData(pd.concat(frames, ignore_index=True), uris, digest.hexdigest())


def dataset_schema(frame: pd.DataFrame) -> Schema:
    """The MLflow schema of a raw-format frame, from the column contract: ids and counts are
    whole numbers that are never missing (ingest rejects such rows), the rest text, optional only
    in ``columns.NULLABLE_COLUMNS``."""
    whole = {*columns.ID_COLUMNS, *columns.INTEGER_INPUT_COLUMNS}
    return Schema(
        [
            ColSpec(
                "long" if name in whole else "string",
                name,
                required=name not in columns.NULLABLE_COLUMNS,
            )
            for name in frame.columns
        ]
    )


def log_dataset(
    frame: pd.DataFrame, name: str, uri: str, sha256: str, model_id: str | None = None
) -> PandasDataset:
    """Log ``frame`` (read from ``uri``, whose bytes hash to ``sha256``) as an MLflow dataset input
    of the active run, and of the logged model ``model_id`` when given; returns the dataset, for
    linking metrics to it. Its digest derives from ``sha256`` and the row count."""
    dataset = mlflow.data.from_pandas(
        frame,
        source=uri,
        targets=columns.LABEL_COLUMN if columns.LABEL_COLUMN in frame else None,
        name=name,
        digest=hashlib.sha256(f"{sha256}:{len(frame)}".encode()).hexdigest()[:32],
    )
    # Declared, not inferred: inference reads every value (about a minute for future_data) and
    # cannot know which integer columns may be missing.
    dataset.schema = dataset_schema(frame)
    mlflow.log_input(
        dataset,
        context=DATASET_CONTEXTS.get(name),
        tags={"sha256": sha256},
        model=LoggedModelInput(model_id) if model_id else None,
    )
    return dataset
