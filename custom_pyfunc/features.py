"""Cleaning and feature engineering shared by training, the served pyfunc and drift monitoring.

Both functions are vectorised (no per-row Python), so they cost about the same for one row as for
a thousand, and they accept frames with or without identifiers and the label.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from custom_pyfunc import columns

# `weight` is missing in ~97% of encounters: it is replaced by a "was it recorded" flag.
WEIGHT_RECORDED = "weight_recorded"

# Categorical model inputs after `clean_data` (coded ids become text categories).
CLEAN_CATEGORICAL_COLUMNS = (
    tuple(c for c in columns.INPUT_COLUMNS if c in columns.CATEGORY_VALUES and c != "weight")
    + columns.CODED_ID_COLUMNS
)
CLEAN_NUMERIC_COLUMNS = (*columns.COUNT_RANGES, WEIGHT_RECORDED)
CLEAN_COLUMNS = (*CLEAN_CATEGORICAL_COLUMNS, *CLEAN_NUMERIC_COLUMNS)

_TEXT_COLUMNS = tuple(c for c in CLEAN_CATEGORICAL_COLUMNS if c not in columns.CODED_ID_COLUMNS)
_AGE_ORDINAL = {bracket: float(i) for i, bracket in enumerate(columns.AGE_BRACKETS)}

# ICD-9 chapters used in the readmission literature (Strack et al., 2014), as numeric ranges.
_ICD9_GROUPS = (
    ("circulatory", ((390, 460), (785, 786))),
    ("respiratory", ((460, 520), (786, 787))),
    ("digestive", ((520, 580), (787, 788))),
    ("injury", ((800, 1000),)),
    ("musculoskeletal", ((710, 740),)),
    ("genitourinary", ((580, 630), (788, 789))),
    ("neoplasms", ((140, 240),)),
)
DIAGNOSIS_GROUP_COLUMNS = tuple(f"{c}_group" for c in columns.DIAGNOSIS_COLUMNS)

ENGINEERED_NUMERIC_COLUMNS = (
    "age_ordinal",
    "total_prior_visits",
    "medications_changed",
    "medications_active",
    "a1c_tested",
    "a1c_high",
    "glucose_tested",
    "glucose_high",
    "diabetes_any_diagnosis",
    "service_intensity",
)
FEATURE_CATEGORICAL_COLUMNS = (*CLEAN_CATEGORICAL_COLUMNS, *DIAGNOSIS_GROUP_COLUMNS)
FEATURE_NUMERIC_COLUMNS = (*CLEAN_NUMERIC_COLUMNS, *ENGINEERED_NUMERIC_COLUMNS)


_NUMERIC_RAW_COLUMNS = (*columns.CODED_ID_COLUMNS, *columns.COUNT_RANGES)


def _columns(frame: pd.DataFrame, names: list[str], convert, absent_ok: bool = True) -> np.ndarray:
    """``convert`` applied to each column of ``names`` (None for an absent one), side by side.

    Column by column, because selecting a list of columns copies them through pandas' indexing
    machinery, which costs more than the whole feature computation of one row."""
    if frame.columns.has_duplicates:
        raise ValueError("cannot select columns from a frame with duplicated column names")
    present = set(frame.columns)
    if not absent_ok and (absent := [name for name in names if name not in present]):
        raise KeyError(f"columns {absent} are not in the frame")
    return np.column_stack(
        [convert(frame[name] if name in present else None, len(frame)) for name in names]
    )


def _as_values(column: pd.Series | None, n_rows: int) -> np.ndarray:
    return np.full(n_rows, None, dtype=object) if column is None else column.to_numpy()


def _as_number(column: pd.Series | None, n_rows: int) -> np.ndarray:
    if column is None:
        return np.full(n_rows, np.nan)
    values = column.to_numpy()
    if values.dtype.kind in "fiub":  # plain numpy numbers: nothing missing but NaN
        return values.astype("float64", copy=False)
    try:
        return column.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _object_block(frame: pd.DataFrame, names: list[str], absent_ok: bool) -> np.ndarray:
    """Columns ``names`` as one object array, every kind of missing (NaN, pd.NA) as None."""
    values = _columns(frame, names, _as_values, absent_ok).astype(object, copy=False)
    missing = pd.isna(values)
    if missing.any():
        values[missing] = None
    return values


def _text_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Columns ``names`` as an object array, missing (absent, NaN, ``?``, empty) as None."""
    values = _object_block(frame, names, absent_ok=True)
    blank = (values == columns.MISSING_MARKER) | (values == "")
    if blank.any():
        values[blank] = None
    return values


_ENGINEERING_TEXT_INPUTS = [
    *columns.DIAGNOSIS_COLUMNS, "age", "A1Cresult", "max_glu_serum", *columns.MEDICATION_COLUMNS,
]  # fmt: skip
_ENGINEERING_COUNT_INPUTS = [
    "number_outpatient", "number_emergency", "number_inpatient",
    "num_lab_procedures", "num_procedures", "num_medications",
]  # fmt: skip


def _numeric_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Columns ``names`` as float64, missing or unparseable as NaN (absent = all missing)."""
    return _columns(frame, names, _as_number).astype("float64", copy=False)


def numeric_columns(frame: pd.DataFrame, names) -> np.ndarray:
    """Columns ``names`` of ``frame`` (all present) as a float64 matrix, missing as NaN."""
    return _columns(frame, list(names), _as_number, absent_ok=False).astype("float64", copy=False)


def text_columns(frame: pd.DataFrame, names) -> np.ndarray:
    """Columns ``names`` of ``frame`` (all present) as an object matrix, missing as None."""
    return _object_block(frame, list(names), absent_ok=False)


def frame_of_blocks(
    blocks: list[tuple[np.ndarray, tuple[str, ...]]], index: pd.Index
) -> pd.DataFrame:
    """One frame from 2-D blocks of one dtype each, side by side (one block per dtype costs far
    less than a column-by-column dict, whose per-column checks dominate a one-row call)."""
    parts = [
        pd.DataFrame(block, index=index, columns=list(names), dtype=block.dtype)
        for block, names in blocks
    ]
    return pd.concat(parts, axis=1, copy=False)


def clean_data(frame: pd.DataFrame) -> pd.DataFrame:
    """The model's view of raw encounters: one column per entry of ``CLEAN_COLUMNS``.

    Identifiers and the label are dropped; ``?``/empty/NaN become missing (``None`` in
    ``max_glu_serum``/``A1Cresult`` stays the category "not measured"); coded id columns become
    text categories; counts become float (missing as NaN); ``weight`` becomes the 0/1 flag
    ``weight_recorded``. Absent input columns come out all-missing rather than failing, so the
    caller's validation decides what is required.
    """
    text = _text_block(frame, [*_TEXT_COLUMNS, "weight"])
    numbers = _numeric_block(frame, list(_NUMERIC_RAW_COLUMNS))
    n_coded = len(columns.CODED_ID_COLUMNS)
    codes = numbers[:, :n_coded]
    known = ~np.isnan(codes)
    coded = np.full(codes.shape, None, dtype=object)
    coded[known] = codes[known].astype("int64").astype(str)
    weight_recorded = (text[:, -1] != None).astype("float64")  # noqa: E711
    categorical = np.concatenate([text[:, :-1], coded], axis=1)
    numeric = np.column_stack([numbers[:, n_coded:], weight_recorded])
    return frame_of_blocks(
        [(categorical, CLEAN_CATEGORICAL_COLUMNS), (numeric, CLEAN_NUMERIC_COLUMNS)], frame.index
    )


@functools.lru_cache(maxsize=16_384)  # ~900 distinct codes in the data; bounded for open input
def _icd9_group_of(code: str) -> str:
    numeric = pd.to_numeric(code, errors="coerce")
    if np.floor(numeric) == 250:
        return "diabetes"
    for group, ranges in _ICD9_GROUPS:
        if any(lo <= numeric < hi for lo, hi in ranges):
            return group
    return "other"


def icd9_group(codes: np.ndarray) -> np.ndarray:
    """Clinical category of each ICD-9 code (diabetes = 250.xx; V/E codes and others = other).

    Each distinct code is parsed once per process (a code's group never changes), so a row costs
    a dictionary look-up per diagnosis."""
    return np.array(
        [None if pd.isna(code) else _icd9_group_of(code) for code in codes],
        dtype=object,
    )


def engineer_features(cleaned: pd.DataFrame) -> pd.DataFrame:
    """``cleaned`` (from :func:`clean_data`) plus clinical features.

    Adds: ICD-9 groups of ``diag_1..3``; age bracket as an ordinal; total prior visits; counts of
    diabetes medications changed (Up/Down) and in use; A1C and glucose tested/high flags; whether
    any diagnosis is diabetes; and a service-intensity sum (labs + procedures + medications).
    """
    text = _object_block(cleaned, _ENGINEERING_TEXT_INPUTS, absent_ok=True)
    counts = _numeric_block(cleaned, _ENGINEERING_COUNT_INPUTS)
    diagnoses, age, a1c, glucose = text[:, :3], text[:, 3], text[:, 4], text[:, 5]
    medications = text[:, 6:]
    groups = icd9_group(diagnoses.ravel()).reshape(diagnoses.shape)
    changed = (medications == "Up") | (medications == "Down")
    a1c_high = (a1c == ">7") | (a1c == ">8")
    glucose_high = (glucose == ">200") | (glucose == ">300")
    added = np.column_stack(
        [
            [_AGE_ORDINAL.get(a, np.nan) for a in age],
            counts[:, :3].sum(axis=1),
            changed.sum(axis=1),
            (changed | (medications == "Steady")).sum(axis=1),
            a1c_high | (a1c == "Norm"),
            a1c_high,
            glucose_high | (glucose == "Norm"),
            glucose_high,
            (groups == "diabetes").any(axis=1),
            counts[:, 3:].sum(axis=1),
        ]
    ).astype("float64")
    return pd.concat(
        [
            cleaned,
            frame_of_blocks(
                [(groups, DIAGNOSIS_GROUP_COLUMNS), (added, ENGINEERED_NUMERIC_COLUMNS)],
                cleaned.index,
            ),
        ],
        axis=1,
        copy=False,
    )
