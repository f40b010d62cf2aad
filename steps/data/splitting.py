"""Split: the first encounters (file order) become initial train/validation/test, the rest future.

The initial share (default 20%) is split 70/15/15 grouped by ``patient_nbr`` (no patient in two
of the three) and stratified on the 30-day label; the remaining rows are ``future_data`` in their
original order, replayed later as new batches. Same input and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from custom_pyfunc import columns
from steps.core import config, storage
from steps.core.tracking import DATA_TAG_PREFIX, STEP_TAG
from steps.data import labelled

logger = logging.getLogger(__name__)


SPLIT_KEYS = {
    "initial_train": config.INITIAL_TRAIN_KEY,
    "initial_validation": config.INITIAL_VALIDATION_KEY,
    "initial_test": config.INITIAL_TEST_KEY,
    "future_data": config.FUTURE_DATA_KEY,
}


# 20 patient folds of 5% each: 14 train, 3 validation, 3 test = 70/15/15.
FOLDS_PER_SPLIT = {"initial_train": 14, "initial_validation": 3, "initial_test": 3}


STRATIFY_TARGET = columns.DEFAULT_TARGET


class SplitError(ValueError):
    """The raw table cannot be split (missing, inconsistent with ingest, or too small)."""


@dataclass(frozen=True)
class SplitFile:
    """One processed file: where it is, its sha256, and what it holds."""

    name: str
    uri: str
    sha256: str
    rows: int
    patients: int
    positive_rate: float


@dataclass(frozen=True)
class SplitResult:
    """The four processed files, their manifest, and the MLflow run that logged them."""

    run_id: str
    seed: int
    files: dict[str, SplitFile]
    manifest_uri: str

    def uri(self, name: str) -> str:
        """Location of the processed file ``name`` (e.g. ``initial_train``)."""
        return self.files[name].uri


def assign_patient_splits(initial: pd.DataFrame, seed: int) -> pd.Series:
    """For each row of ``initial``: ``initial_train``, ``initial_validation`` or ``initial_test``.

    Patients, not rows, are dealt into 20 folds with scikit-learn's ``StratifiedKFold``,
    stratified on (encounters of the patient, capped at 3) x (30-day readmissions, capped at 2),
    so the row count and the label rate of every fold follow the whole. This gives
    ``StratifiedGroupKFold``'s guarantee at a fraction of its cost: its per-patient Python loop
    took ~50 s for the ~15,500 initial patients on our 2-core machine, this takes under a second.
    """
    label = columns.make_label(initial, STRATIFY_TARGET).to_numpy()
    per_patient = (
        pd.DataFrame({"patient": initial["patient_nbr"].to_numpy(), "label": label})
        .groupby("patient", sort=True)["label"]
        .agg(["size", "sum"])
    )
    n_folds = sum(FOLDS_PER_SPLIT.values())
    if len(per_patient) < n_folds:
        raise SplitError(f"the initial data has {len(per_patient)} patients, need >= {n_folds}")
    strata = per_patient["size"].clip(upper=3) * 10 + per_patient["sum"].clip(upper=2)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of_patient = np.empty(len(per_patient), dtype=np.int64)
    for fold, (_, members) in enumerate(folds.split(np.zeros(len(per_patient)), strata)):
        fold_of_patient[members] = fold
    split_of_fold = np.repeat(list(FOLDS_PER_SPLIT), list(FOLDS_PER_SPLIT.values()))
    split_of_patient = pd.Series(split_of_fold[fold_of_patient], index=per_patient.index)
    return initial["patient_nbr"].map(split_of_patient)


def split_frames(raw: pd.DataFrame, initial_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
    """The four processed tables, each in original file order."""
    if not 0 < initial_fraction < 1:
        raise SplitError(f"initial_fraction must be between 0 and 1, got {initial_fraction}")
    n_initial = int(len(raw) * initial_fraction)
    initial = raw.iloc[:n_initial]
    split_of_row = assign_patient_splits(initial, seed)
    frames = {name: initial[split_of_row == name] for name in FOLDS_PER_SPLIT}
    frames["future_data"] = raw.iloc[n_initial:]
    return frames


def _check_partition(frames: dict[str, pd.DataFrame], n_raw: int) -> None:
    """Fail loudly unless the files partition the raw table and no patient spans two splits."""
    initial_names = list(FOLDS_PER_SPLIT)
    if sum(len(frame) for frame in frames.values()) != n_raw:
        raise AssertionError("processed files do not add up to the raw table")
    patients = [set(frames[name]["patient_nbr"]) for name in initial_names]
    for i, first in enumerate(patients):
        for second in patients[i + 1 :]:
            if first & second:
                raise AssertionError("a patient appears in two of train/validation/test")


def _ingest_counts(root: str, n_raw: int) -> dict[str, int]:
    """Source and quarantined row counts from ingest's summary, checked against the raw table."""
    summary_uri = storage.join(root, config.INGEST_SUMMARY_KEY)
    if not storage.exists(summary_uri):
        logger.warning("no ingest summary at %s: assuming nothing was quarantined", summary_uri)
        return {"source_rows": n_raw, "quarantined_rows": 0}
    summary = storage.read_json(summary_uri)
    if summary["clean_rows"] != n_raw:
        raise SplitError(
            f"the raw table has {n_raw} rows but ingest stored {summary['clean_rows']}: "
            "run ingest again"
        )
    return {name: int(summary[name]) for name in ("source_rows", "quarantined_rows")}


def _read_raw(root: str) -> tuple[bytes, pd.DataFrame]:
    """The stored raw table: its bytes and its rows (checked to have the dataset's columns)."""
    raw_uri = storage.join(root, config.RAW_DATA_KEY)
    try:
        raw_bytes = storage.read_bytes(raw_uri)
    except storage.StorageError as exc:
        raise SplitError(f"no raw table at {raw_uri}: run ingest first") from exc
    raw = columns.read_encounters_csv(raw_bytes)
    if tuple(raw.columns) != columns.RAW_COLUMNS:
        raise SplitError(f"the raw table at {raw_uri} does not have the dataset's columns")
    return raw_bytes, raw


def _row_accounting(root: str, n_raw: int, n_future: int) -> dict[str, int]:
    """Source, quarantined, raw-table, initial and future row counts (checked to add up)."""
    accounting = {
        **_ingest_counts(root, n_raw),
        "raw_table_rows": n_raw,
        "initial_rows": n_raw - n_future,
        "future_rows": n_future,
    }
    if accounting["source_rows"] != (
        accounting["quarantined_rows"] + accounting["initial_rows"] + accounting["future_rows"]
    ):
        raise AssertionError("row accounting failed: source != quarantined + initial + future")
    return accounting


def _write_files(root: str, frames: dict[str, pd.DataFrame]) -> dict[str, SplitFile]:
    """Write each split file in the raw CSV format; their locations, hashes and counts."""
    files: dict[str, SplitFile] = {}
    for name, frame in frames.items():
        payload = columns.to_raw_csv_bytes(frame)
        files[name] = SplitFile(
            name=name,
            uri=storage.write_bytes(storage.join(root, SPLIT_KEYS[name]), payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            rows=len(frame),
            patients=int(frame["patient_nbr"].nunique()),
            positive_rate=round(float(columns.make_label(frame, STRATIFY_TARGET).mean()), 6),
        )
        logger.info("wrote %s: %d rows, sha256 %s", files[name].uri, len(frame), files[name].sha256)
    return files


def _manifest(run_id, seed, initial_fraction, raw_bytes, accounting, files) -> dict:
    """What ``manifest.json`` records: the split's inputs, row accounting and files."""
    return {
        "split_run_id": run_id,
        "seed": seed,
        "initial_fraction": initial_fraction,
        "stratify_target": STRATIFY_TARGET,
        "raw_table_sha256": hashlib.sha256(raw_bytes).hexdigest(),
        "row_accounting": accounting,
        "files": {
            name: {
                "key": SPLIT_KEYS[name],
                "sha256": entry.sha256,
                "rows": entry.rows,
                "patients": entry.patients,
                "positive_rate": entry.positive_rate,
            }
            for name, entry in files.items()
        },
    }


def _log_split(root: str, manifest: dict, files: dict[str, SplitFile]) -> None:
    """Tags, params and metrics of the split run (names differ from the entry point's params,
    which `mlflow run` logs as given)."""
    mlflow.set_tags(
        {
            STEP_TAG: "split",
            **{f"{DATA_TAG_PREFIX}{name}_sha256": entry.sha256 for name, entry in files.items()},
        }
    )
    mlflow.log_params(
        {
            "data_store_uri": root,
            "split_seed": manifest["seed"],
            "split_initial_fraction": manifest["initial_fraction"],
            "stratify_target": STRATIFY_TARGET,
            "raw_table_sha256": manifest["raw_table_sha256"],
            **{f"{name}_sha256": entry.sha256 for name, entry in files.items()},
        }
    )
    mlflow.log_metrics(
        {
            **{name: float(value) for name, value in manifest["row_accounting"].items()},
            **{f"{name}_rows": entry.rows for name, entry in files.items()},
            **{f"{name}_patients": entry.patients for name, entry in files.items()},
            **{f"{name}_positive_rate": entry.positive_rate for name, entry in files.items()},
        }
    )


def split(data_uri: str = "", initial_fraction: float = 0.2, seed: int = 42) -> SplitResult:
    """Write the four processed files and ``manifest.json``; log hashes and counts to MLflow."""
    root = data_uri or config.data_uri()
    raw_bytes, raw = _read_raw(root)
    frames = split_frames(raw, initial_fraction, seed)
    _check_partition(frames, len(raw))
    accounting = _row_accounting(root, len(raw), len(frames["future_data"]))
    files = _write_files(root, frames)

    config.ensure_experiment(config.DATA_EXPERIMENT)
    with mlflow.start_run() as run:
        manifest = _manifest(run.info.run_id, seed, initial_fraction, raw_bytes, accounting, files)
        _log_split(root, manifest, files)
        for name, frame in frames.items():
            labelled.log_dataset(frame, name, files[name].uri, files[name].sha256)
        mlflow.log_dict(manifest, "manifest.json")
        manifest_uri = storage.write_json(
            manifest, storage.join(root, config.PROCESSED_MANIFEST_KEY)
        )
    return SplitResult(run_id=run.info.run_id, seed=seed, files=files, manifest_uri=manifest_uri)
