"""Ingest: fetch the raw dataset, check it, and store the validated raw table in the data store.

The source (``HEALTH_PREDICT_RAW_DATA``) is the UCI download URL, a local or S3 path to
``diabetic_data.csv``, or a zip holding it. The CSV's sha256 is compared with the published one
(a mismatch warns, it does not stop). Rows that break the schema go to ``raw_data/quarantine.csv``
with their reason; that file holds patient rows, so it is never logged to MLflow or printed. A file
that is not the dataset at all stops with a one-line :class:`DatasetError`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import mlflow
import pandas as pd
import requests

from custom_pyfunc import columns
from steps.core import config, storage
from steps.data import schema

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = (10, 120)  # connect, read
ZIP_MAGIC = b"PK\x03\x04"


class DatasetError(ValueError):
    """The raw source is not the diabetes dataset (empty, not CSV, wrong columns, broken zip)."""


@dataclass(frozen=True)
class IngestResult:
    """What ingest stored and found: locations, checksum verdict and row counts."""

    run_id: str
    raw_table_uri: str
    quarantine_uri: str
    source_kind: str
    source_sha256: str
    sha256_matches: bool
    source_rows: int
    clean_rows: int
    quarantined_rows: int
    reason_counts: dict[str, int]


def source_kind(source: str) -> str:
    """``url``, ``s3`` or ``file``: how :func:`read_source` will fetch ``source``."""
    if source.startswith(("http://", "https://")):
        return "url"
    return "s3" if storage.is_s3(source) else "file"


def read_source(source: str) -> bytes:
    """The bytes at ``source`` (HTTP(S) URL, ``s3://`` URI or local path)."""
    kind = source_kind(source)
    if kind == "url":
        try:
            response = requests.get(source, timeout=DOWNLOAD_TIMEOUT_S)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise DatasetError(f"could not download {source}: {type(exc).__name__}") from exc
        return response.content
    try:
        return storage.read_bytes(source)
    except storage.StorageError as exc:
        raise DatasetError(f"no dataset file at {source}") from exc


def extract_csv(payload: bytes) -> tuple[bytes, str]:
    """The CSV bytes inside ``payload`` and the container kind (``zip`` or ``csv``)."""
    if not payload:
        raise DatasetError("the file is empty")
    if not payload.startswith(ZIP_MAGIC):
        return payload, "csv"
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = [
                name
                for name in archive.namelist()
                if PurePosixPath(name).name == config.RAW_CSV_NAME
                and not name.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                found = "no" if not members else f"{len(members)} copies of"
                raise DatasetError(f"the zip holds {found} {config.RAW_CSV_NAME}")
            return archive.read(members[0]), "zip"
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DatasetError("the zip is corrupt or truncated") from exc


def parse_csv_text(csv_bytes: bytes) -> pd.DataFrame:
    """The table as text (``?`` and empty cells missing), checked to have the dataset's columns."""
    if not csv_bytes.strip():
        raise DatasetError("the CSV is empty")
    try:
        csv_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError("the file is not a CSV text file (not UTF-8 text)") from exc
    try:
        frame = columns.read_encounters_csv(csv_bytes, as_text=True)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1].removeprefix("Error tokenizing data. C error: ")
        raise DatasetError(f"the file is not a well-formed CSV: {detail}") from exc
    except pd.errors.EmptyDataError as exc:
        raise DatasetError("the CSV has no header") from exc
    header = list(frame.columns)
    missing = [name for name in columns.RAW_COLUMNS if name not in header]
    # Unexpected names are counted, never printed: a headerless file's "header" is a patient row.
    unexpected = len([name for name in header if name not in columns.RAW_COLUMNS])
    if len(missing) == len(columns.RAW_COLUMNS):
        raise DatasetError(
            f"the file does not have the dataset's header "
            f"(none of the {len(columns.RAW_COLUMNS)} expected columns found)"
        )
    if missing or unexpected:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        problems = [f"{len(missing)} missing ({shown})"] if missing else []
        problems += [f"{unexpected} unexpected"] if unexpected else []
        raise DatasetError(f"wrong columns: {'; '.join(problems)}")
    if len(header) != len(set(header)):
        raise DatasetError("wrong columns: duplicated column names")
    if frame.empty:
        raise DatasetError("the CSV has a header but no data rows")
    return frame[list(columns.RAW_COLUMNS)]


def warn_on_checksum(sha256: str) -> bool:
    """True when ``sha256`` is the published one; otherwise warn loudly on the log and stderr."""
    if sha256 == config.RAW_CSV_SHA256:
        return True
    message = (
        f"{config.RAW_CSV_NAME} sha256 is {sha256}, expected {config.RAW_CSV_SHA256}: "
        "this is not the published file; continuing, but results are not comparable"
    )
    logger.warning(message)
    print(f"WARNING: {message}", file=sys.stderr, flush=True)
    return False


def ingest(raw_data: str = "", data_uri: str = "") -> IngestResult:
    """Fetch, check and validate the raw dataset; store the clean table and the quarantine file.

    Empty arguments mean the configured defaults (``HEALTH_PREDICT_RAW_DATA``,
    ``HEALTH_PREDICT_DATA_URI``). Returns the locations, checksum verdict and row counts, which
    are also logged to the MLflow experiment ``HealthPredict_Data``.
    """
    source = raw_data or config.raw_data_source()
    root = data_uri or config.data_uri()
    kind = source_kind(source)
    logger.info("reading the raw dataset from %s (%s)", source, kind)
    csv_bytes, container = extract_csv(read_source(source))
    source_sha256 = hashlib.sha256(csv_bytes).hexdigest()
    sha256_matches = warn_on_checksum(source_sha256)

    text_frame = parse_csv_text(csv_bytes)
    validation = schema.validate_encounters(text_frame)
    rejected = validation.rejected
    quarantine_uri = storage.join(root, config.QUARANTINE_KEY)
    storage.write_bytes(quarantine_uri, columns.to_raw_csv_bytes(rejected))
    if validation.valid.empty:
        raise DatasetError(
            f"no row passed validation ({len(rejected)} rows quarantined in {quarantine_uri})"
        )
    raw_table_bytes = columns.to_raw_csv_bytes(validation.valid)
    raw_table_uri = storage.write_bytes(storage.join(root, config.RAW_DATA_KEY), raw_table_bytes)

    summary = {
        "source": source,
        "source_kind": kind,
        "container": container,
        "source_sha256": source_sha256,
        "expected_sha256": config.RAW_CSV_SHA256,
        "sha256_matches": sha256_matches,
        "raw_table_sha256": hashlib.sha256(raw_table_bytes).hexdigest(),
        "source_rows": len(text_frame),
        "clean_rows": len(validation.valid),
        "quarantined_rows": len(rejected),
        "quarantine_reasons": validation.reason_counts,
    }
    storage.write_json(summary, storage.join(root, config.INGEST_SUMMARY_KEY))
    if len(rejected):
        logger.warning(
            "%d of %d rows failed validation and were quarantined in %s",
            len(rejected),
            len(text_frame),
            quarantine_uri,
        )

    config.ensure_experiment(config.DATA_EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {"health_predict.step": "ingest", "health_predict.data.raw_sha256": source_sha256}
        )
        mlflow.log_params(
            {
                "source": source,
                "source_kind": kind,
                "container": container,
                "source_sha256": source_sha256,
                "sha256_matches": sha256_matches,
                "raw_table_sha256": summary["raw_table_sha256"],
                "data_store_uri": root,
            }
        )
        mlflow.log_metrics(
            {name: summary[name] for name in ("source_rows", "clean_rows", "quarantined_rows")}
        )
        # Counts per column-and-problem only: the quarantined rows themselves stay in the store.
        mlflow.log_dict(summary, "ingest_summary.json")

    logger.info(
        "stored %d rows at %s (%d quarantined)", len(validation.valid), raw_table_uri, len(rejected)
    )
    return IngestResult(
        run_id=run.info.run_id,
        raw_table_uri=raw_table_uri,
        quarantine_uri=quarantine_uri,
        source_kind=f"{kind}:{container}",
        source_sha256=source_sha256,
        sha256_matches=sha256_matches,
        source_rows=summary["source_rows"],
        clean_rows=summary["clean_rows"],
        quarantined_rows=summary["quarantined_rows"],
        reason_counts=validation.reason_counts,
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.ingest [--raw-data SRC] [--data-uri URI]``; 2 on a bad dataset."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-data", default="", help="URL, CSV or zip path (default: config)")
    parser.add_argument("--data-uri", default="", help="data-store root (default: config)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        result = ingest(raw_data=args.raw_data, data_uri=args.data_uri)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print({k: v for k, v in asdict(result).items() if k != "reason_counts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
