"""Ingest: fetch the raw dataset, check it, and store the validated raw table in the data store.

The source (``HEALTH_PREDICT_RAW_DATA``) is the UCI download URL, a local or S3 path to
``diabetic_data.csv``, or a zip holding it. The CSV's sha256 is compared with the published one
(a mismatch warns, it does not stop). Rows that break the schema go to ``raw_data/quarantine.csv``
with their reason; that file holds patient rows, so it is never logged to MLflow or printed. A file
that is not the dataset at all stops with a one-line :class:`DatasetError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import mlflow
import pandas as pd
import requests

from custom_pyfunc import columns
from steps.core import config, storage
from steps.core.tracking import DATA_TAG_PREFIX, STEP_TAG
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


LONG_ROW_REASON = "row: more fields than the header"


def _read_text_rows(csv_bytes: bytes) -> tuple[pd.DataFrame, dict[int, int]]:
    """The table as text, rows with more fields than the header cut to its width; and, for each
    such row (by 0-based data-row position), how many fields it had.

    pandas' fast reader stops at such a row; this slower path runs only when it did.
    """
    reader = csv.reader(io.StringIO(csv_bytes.decode("utf-8")))
    header = next(reader)
    rows: list[list[str]] = []
    long_rows: dict[int, int] = {}
    for row in reader:
        if not row:
            continue
        if len(row) > len(header):
            long_rows[len(rows)] = len(row)
            row = row[: len(header)]
        rows.append(row + [""] * (len(header) - len(row)))
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    missing = frame.isin([columns.MISSING_MARKER, ""])
    return frame.mask(missing).astype(object), long_rows


def parse_csv_text(csv_bytes: bytes) -> tuple[pd.DataFrame, dict[int, int]]:
    """The table as text (``?`` and empty cells missing), checked to have the dataset's columns,
    and the rows that had more fields than the header (position -> field count; see
    :func:`_read_text_rows`), which ingest quarantines like rows with too few."""
    if not csv_bytes.strip():
        raise DatasetError("the CSV is empty")
    try:
        csv_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError("the file is not a CSV text file (not UTF-8 text)") from exc
    long_rows: dict[int, int] = {}
    try:
        frame = columns.read_encounters_csv(csv_bytes, as_text=True)
    except pd.errors.ParserError as exc:
        if "Expected" not in str(exc):
            detail = (
                str(exc).strip().splitlines()[-1].removeprefix("Error tokenizing data. C error: ")
            )
            raise DatasetError(f"the file is not a well-formed CSV: {detail}") from exc
        frame, long_rows = _read_text_rows(csv_bytes)
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
    return frame[list(columns.RAW_COLUMNS)], long_rows


def _validate(text_frame: pd.DataFrame, long_rows: dict[int, int]) -> schema.ValidationResult:
    """Schema validation, with the rows that had too many fields rejected as well."""
    kept = text_frame.drop(index=list(long_rows))
    result = schema.validate_encounters(kept.reset_index(drop=True))
    if not long_rows:
        return result
    rejected = result.rejected
    # validate_encounters numbers rows within ``kept``; renumber them within the whole file.
    rejected[schema.SOURCE_ROW_COLUMN] = (
        kept.index.to_numpy()[rejected[schema.SOURCE_ROW_COLUMN].to_numpy() - 1] + 1
    )
    too_long = text_frame.loc[sorted(long_rows)].copy()
    too_long.insert(0, schema.SOURCE_ROW_COLUMN, [i + 1 for i in sorted(long_rows)])
    too_long[schema.QUARANTINE_REASON_COLUMN] = LONG_ROW_REASON
    rejected = pd.concat([rejected, too_long], ignore_index=True)
    rejected = rejected.sort_values(schema.SOURCE_ROW_COLUMN, ignore_index=True)
    counts = {**result.reason_counts, LONG_ROW_REASON: len(long_rows)}
    return schema.ValidationResult(
        valid=result.valid, rejected=rejected, reason_counts=dict(sorted(counts.items()))
    )


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


def _refuse_silent_replacement(
    raw_table_uri: str, sha256_matches: bool, replace_raw_table: bool
) -> None:
    """A source that is not the published file may not replace a stored raw table unasked."""
    if not sha256_matches and not replace_raw_table and storage.exists(raw_table_uri):
        raise DatasetError(
            f"the source is not the published file (sha256 mismatch) and {raw_table_uri} "
            "already holds a raw table: pass --replace-raw-table true (-P replace_raw_table=true) "
            "to replace it"
        )


def _summary(
    source: dict[str, str],
    source_sha256: str,
    source_rows: int,
    validation: schema.ValidationResult,
    raw_table_bytes: bytes,
    quarantine_bytes: bytes,
) -> dict:
    """``ingest_summary.json``: the source, checksums and row counts (no row's values)."""
    return {
        **source,
        "source_sha256": source_sha256,
        "expected_sha256": config.RAW_CSV_SHA256,
        "sha256_matches": source_sha256 == config.RAW_CSV_SHA256,
        "raw_table_sha256": hashlib.sha256(raw_table_bytes).hexdigest(),
        "quarantine_sha256": hashlib.sha256(quarantine_bytes).hexdigest(),
        "source_rows": source_rows,
        "clean_rows": len(validation.valid),
        "quarantined_rows": len(validation.rejected),
        "quarantine_reasons": validation.reason_counts,
    }


def _store(root: str, quarantine_bytes: bytes, raw_table_bytes: bytes, summary: dict) -> None:
    """Write the quarantine file, the raw table and the summary, each atomically.

    Called only once every output is computed; the summary goes last and names the sha256 of
    the other two, so a write cut short is detectable.
    """
    quarantine_uri = storage.join(root, config.QUARANTINE_KEY)
    storage.write_bytes(quarantine_uri, quarantine_bytes)
    storage.write_bytes(storage.join(root, config.RAW_DATA_KEY), raw_table_bytes)
    storage.write_json(summary, storage.join(root, config.INGEST_SUMMARY_KEY))
    if summary["quarantined_rows"]:
        logger.warning(
            "%d of %d rows failed validation and were quarantined in %s",
            summary["quarantined_rows"],
            summary["source_rows"],
            quarantine_uri,
        )


def _log_ingest(summary: dict, root: str) -> str:
    """Log the ingest run (tags, params, row counts, the summary); its run id.

    Counts per column-and-problem only: the quarantined rows themselves stay in the store.
    """
    config.ensure_experiment(config.DATA_EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {STEP_TAG: "ingest", f"{DATA_TAG_PREFIX}raw_sha256": summary["source_sha256"]}
        )
        params = ("source", "source_kind", "container", "source_sha256", "sha256_matches")
        mlflow.log_params(
            {
                **{name: summary[name] for name in params},
                "raw_table_sha256": summary["raw_table_sha256"],
                "data_store_uri": root,
            }
        )
        mlflow.log_metrics(
            {name: summary[name] for name in ("source_rows", "clean_rows", "quarantined_rows")}
        )
        mlflow.log_dict(summary, "ingest_summary.json")
    return run.info.run_id


def ingest(raw_data: str = "", data_uri: str = "", replace_raw_table: bool = False) -> IngestResult:
    """Fetch, check and validate the raw dataset; store the clean table and the quarantine file.

    Empty arguments mean the configured defaults (``HEALTH_PREDICT_RAW_DATA``,
    ``HEALTH_PREDICT_DATA_URI``). Nothing is written unless every row was read and at least one
    passed; a source whose sha256 is not the published one replaces a stored raw table only with
    ``replace_raw_table``. Returns the locations, checksum verdict and row counts, which are also
    logged to the MLflow experiment ``HealthPredict_Data``.
    """
    source = raw_data or config.raw_data_source()
    root = data_uri or config.data_uri()
    kind = source_kind(source)
    logger.info("reading the raw dataset from %s (%s)", source, kind)
    csv_bytes, container = extract_csv(read_source(source))
    source_sha256 = hashlib.sha256(csv_bytes).hexdigest()
    sha256_matches = warn_on_checksum(source_sha256)

    text_frame, long_rows = parse_csv_text(csv_bytes)
    validation = _validate(text_frame, long_rows)
    rejected = validation.rejected
    quarantine_uri = storage.join(root, config.QUARANTINE_KEY)
    raw_table_uri = storage.join(root, config.RAW_DATA_KEY)
    if validation.valid.empty:
        raise DatasetError(
            f"no row passed validation ({len(rejected)} rows rejected; nothing was written)"
        )
    _refuse_silent_replacement(raw_table_uri, sha256_matches, replace_raw_table)
    raw_table_bytes = columns.to_raw_csv_bytes(validation.valid)
    quarantine_bytes = columns.to_raw_csv_bytes(rejected)
    summary = _summary(
        {"source": source, "source_kind": kind, "container": container},
        source_sha256,
        len(text_frame),
        validation,
        raw_table_bytes,
        quarantine_bytes,
    )
    _store(root, quarantine_bytes, raw_table_bytes, summary)

    run_id = _log_ingest(summary, root)
    logger.info(
        "stored %d rows at %s (%d quarantined)", len(validation.valid), raw_table_uri, len(rejected)
    )
    return IngestResult(
        run_id=run_id,
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
