"""The monitor's inputs: reading a batch, the reference and the baseline, and rejecting bad ones.

Every problem becomes a :class:`MonitorInputError` whose one-line message names the input, the
column and the problem, never a patient value. Rows that break the input contract (a count out of
range, an unknown code or category, a missing required value) are counted for the data-quality
section and left out of scoring, so one bad row does not hide the rest of the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from custom_pyfunc import columns, features
from steps.core import storage


class MonitorInputError(ValueError):
    """A monitor input is unusable; the message is one line and holds no patient value."""


@dataclass(frozen=True)
class EncounterTable:
    """One raw-format encounter CSV: where it came from, its rows and its content hash."""

    role: str
    uri: str
    frame: pd.DataFrame
    sha256: str


def load_table(uri: str, role: str) -> EncounterTable:
    """The encounters stored at ``uri`` (one CSV, or several comma-separated ones read as one
    table, in order), read with the data contract's CSV reader."""
    digest, frames = hashlib.sha256(), []
    for part in (p.strip() for p in uri.split(",") if p.strip()):
        try:
            payload = storage.read_bytes(part)
        except Exception as exc:  # local, S3 and credential errors all mean "cannot read"
            raise MonitorInputError(f"{role} {part} cannot be read ({type(exc).__name__})") from exc
        if not payload.strip():
            raise MonitorInputError(f"{role} {part} is empty (no header, no rows)")
        try:
            frames.append(columns.read_encounters_csv(payload))
        except (ValueError, pd.errors.ParserError) as exc:
            raise MonitorInputError(f"{role} {part} is not a readable encounters CSV") from exc
        digest.update(payload)
    if not frames:
        raise MonitorInputError(f"{role}: no file named")
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    # A file exported with pandas' default NA handling has nulls for "not measured" lab results.
    frame = columns.fill_not_measured(frame)
    return EncounterTable(role, uri, frame, digest.hexdigest())


def check_table(table: EncounterTable) -> None:
    """Raise unless ``table`` has rows, every model input column and known label values."""
    if len(table.frame) == 0:
        raise MonitorInputError(f"{table.role} {table.uri} has no rows")
    missing = [c for c in columns.INPUT_COLUMNS if c not in table.frame.columns]
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        raise MonitorInputError(f"{table.role} {table.uri} is missing required columns: {shown}")
    if columns.LABEL_COLUMN in table.frame:
        labels = table.frame[columns.LABEL_COLUMN].dropna()
        if not labels.isin(columns.LABEL_VALUES).all():
            raise MonitorInputError(
                f"{table.role} {table.uri}: column '{columns.LABEL_COLUMN}' has values outside "
                f"{', '.join(columns.LABEL_VALUES)}"
            )


def comparable_columns(batch: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Cleaned input columns (``features.CLEAN_COLUMNS``) holding values in both frames.

    Both frames are ``features.clean_data`` output. Raises when there is none, since then the
    batch cannot be compared with the reference at all.
    """
    shared = [
        c for c in features.CLEAN_COLUMNS if batch[c].notna().any() and reference[c].notna().any()
    ]
    # The 0/1 flag `weight_recorded` is never missing; it only counts when `weight` is present.
    if shared == [features.WEIGHT_RECORDED] or not shared:
        raise MonitorInputError(
            "the batch has no overlap with the reference: no input column holds values in both"
        )
    return shared


def has_labels(frame: pd.DataFrame) -> pd.Series:
    """True for rows whose label is known and usable (not death/hospice)."""
    if columns.LABEL_COLUMN not in frame:
        return pd.Series(False, index=frame.index)
    return frame[columns.LABEL_COLUMN].notna() & columns.is_label_eligible(frame)


def contract_violations(frame: pd.DataFrame) -> pd.DataFrame:
    """Boolean frame, one column per input column: True where a row breaks the input contract.

    The same rules as the served model's validation: counts within ``columns.COUNT_RANGES`` and
    whole, coded ids among ``columns.CODED_ID_VALUES``, closed-set categories among
    ``columns.CATEGORY_VALUES``, and values present outside ``columns.NULLABLE_COLUMNS``.
    """
    problems: dict[str, np.ndarray] = {}
    for name in columns.INPUT_COLUMNS:
        values = frame[name]
        missing = values.isna().to_numpy()
        bad = np.zeros(len(frame), dtype=bool)
        if name in columns.COUNT_RANGES or name in columns.CODED_ID_VALUES:
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
            not_whole = ~missing & (np.isnan(numbers) | (numbers != np.round(numbers)))
            if name in columns.COUNT_RANGES:
                low, high = columns.COUNT_RANGES[name]
                outside = (numbers < low) | (numbers > high)
            else:
                outside = ~np.isin(numbers, sorted(columns.CODED_ID_VALUES[name]))
            bad = not_whole | (~missing & outside)
        elif columns.CATEGORY_VALUES.get(name):
            bad = ~missing & ~values.isin(columns.CATEGORY_VALUES[name]).to_numpy()
        if name not in columns.NULLABLE_COLUMNS:
            bad = bad | missing
        problems[name] = bad
    return pd.DataFrame(problems, index=frame.index)
