"""Cleaning and feature engineering shared by training, the served pyfunc and drift monitoring.

Both functions are vectorised (no per-row Python), so they cost about the same for one row as for
a thousand, and they accept frames with or without identifiers and the label.
"""

from __future__ import annotations

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


def _text_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Columns ``names`` as an object array, missing (absent, NaN, ``?``, empty) as None."""
    values = frame.reindex(columns=names).to_numpy(dtype=object, na_value=None)
    missing = pd.isna(values) | (values == columns.MISSING_MARKER) | (values == "")
    if missing.any():
        values[missing] = None
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
    selected = frame.reindex(columns=names)
    try:
        return selected.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        parsed = selected.apply(pd.to_numeric, errors="coerce")
        return parsed.to_numpy(dtype="float64", na_value=np.nan)


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
    cleaned: dict[str, np.ndarray] = {name: text[:, j] for j, name in enumerate(_TEXT_COLUMNS)}
    for j, name in enumerate(columns.CODED_ID_COLUMNS):
        codes = numbers[:, j]
        known = ~np.isnan(codes)
        as_text = np.full(len(frame), None, dtype=object)
        as_text[known] = codes[known].astype("int64").astype(str)
        cleaned[name] = as_text
    offset = len(columns.CODED_ID_COLUMNS)
    for j, name in enumerate(columns.COUNT_RANGES):
        cleaned[name] = numbers[:, offset + j]
    cleaned[WEIGHT_RECORDED] = (text[:, -1] != None).astype("float64")  # noqa: E711
    return pd.DataFrame(cleaned, index=frame.index, columns=list(CLEAN_COLUMNS))


def icd9_group(codes: np.ndarray) -> np.ndarray:
    """Clinical category of each ICD-9 code (diabetes = 250.xx; V/E codes and others = other)."""
    text = pd.Series(codes, dtype=object)
    numeric = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
    conditions = [np.floor(numeric) == 250]
    choices = ["diabetes"]
    for group, ranges in _ICD9_GROUPS:
        conditions.append(
            np.logical_or.reduce([(numeric >= lo) & (numeric < hi) for lo, hi in ranges])
        )
        choices.append(group)
    grouped = np.select(conditions, choices, default="other").astype(object)
    grouped[pd.isna(codes)] = None
    return grouped


def engineer_features(cleaned: pd.DataFrame) -> pd.DataFrame:
    """``cleaned`` (from :func:`clean_data`) plus clinical features.

    Adds: ICD-9 groups of ``diag_1..3``; age bracket as an ordinal; total prior visits; counts of
    diabetes medications changed (Up/Down) and in use; A1C and glucose tested/high flags; whether
    any diagnosis is diabetes; and a service-intensity sum (labs + procedures + medications).
    """
    text = cleaned[_ENGINEERING_TEXT_INPUTS].to_numpy(dtype=object)
    counts = cleaned[_ENGINEERING_COUNT_INPUTS].to_numpy(dtype="float64")
    diagnoses, age, a1c, glucose = text[:, :3], text[:, 3], text[:, 4], text[:, 5]
    medications = text[:, 6:]
    groups = [icd9_group(diagnoses[:, j]) for j in range(3)]
    added: dict[str, np.ndarray] = dict(zip(DIAGNOSIS_GROUP_COLUMNS, groups, strict=True))
    added["age_ordinal"] = np.array([_AGE_ORDINAL.get(a, np.nan) for a in age], dtype="float64")
    added["total_prior_visits"] = counts[:, :3].sum(axis=1)
    added["medications_changed"] = np.isin(medications, ("Up", "Down")).sum(axis=1) * 1.0
    added["medications_active"] = np.isin(medications, ("Steady", "Up", "Down")).sum(axis=1) * 1.0
    added["a1c_tested"] = np.isin(a1c, ("Norm", ">7", ">8")) * 1.0
    added["a1c_high"] = np.isin(a1c, (">7", ">8")) * 1.0
    added["glucose_tested"] = np.isin(glucose, ("Norm", ">200", ">300")) * 1.0
    added["glucose_high"] = np.isin(glucose, (">200", ">300")) * 1.0
    added["diabetes_any_diagnosis"] = np.any([g == "diabetes" for g in groups], axis=0) * 1.0
    added["service_intensity"] = counts[:, 3:].sum(axis=1)
    return pd.concat([cleaned, pd.DataFrame(added, index=cleaned.index)], axis=1)
