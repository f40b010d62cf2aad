"""Labelled encounter files from the data store, as ``train`` and ``register`` read them.

One reader for the split files, the extra training data of a retraining and the gate's evaluation
data: a CSV, every CSV below a folder or prefix, or a comma-separated list of either.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pandas as pd

from custom_pyfunc import columns
from steps.core import storage

REQUIRED_COLUMNS = (columns.LABEL_COLUMN, "discharge_disposition_id")


class LabelledDataError(ValueError):
    """No labelled file at a URI, or a file without the label or the discharge disposition."""


@dataclass(frozen=True)
class LabelledData:
    """The files' rows (all of them, in file order), the files, and the sha256 of their bytes."""

    frame: pd.DataFrame
    uris: list[str]
    sha256: str


def csv_uris(uri_list: str) -> list[str]:
    """The CSV files named by ``uri_list`` (comma-separated files, folders or prefixes), in order."""
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
