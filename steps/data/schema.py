"""Pandera schema of the raw encounter table, and validation that explains every rejected row.

The schema is built from the data contract in ``custom_pyfunc/columns.py``: all 50 columns, their
types (nullable ``Int64`` for ids and counts, ``string`` for categories), the allowed values of the
coded and categorical columns, plausible ranges of the counts, and which columns may be missing
(``?`` in the raw file). Reasons name the column and the problem, never the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from custom_pyfunc import columns

# ICD-9 codes as they appear in the raw file: 250.83, 8, V57, E909.
ICD9_PATTERN = r"^(?:\d{1,3}(?:\.\d{1,2})?|V\d{2}(?:\.\d{1,2})?|E\d{3}(?:\.\d)?)$"
PAYER_CODE_PATTERN = r"^[A-Z]{2}$"
SPECIALTY_PATTERN = r"^[A-Za-z][A-Za-z&/\- ]{0,63}$"
OPEN_SET_PATTERNS = {
    "payer_code": PAYER_CODE_PATTERN,
    "medical_specialty": SPECIALTY_PATTERN,
    **{name: ICD9_PATTERN for name in columns.DIAGNOSIS_COLUMNS},
}

QUARANTINE_REASON_COLUMN = "quarantine_reason"
SOURCE_ROW_COLUMN = "source_row"


def _checks_for(name: str) -> list[pa.Check]:
    if name in columns.ID_COLUMNS:
        return [pa.Check.ge(1)]
    if name in columns.COUNT_RANGES:
        low, high = columns.COUNT_RANGES[name]
        return [pa.Check.in_range(low, high)]
    if name in columns.CODED_ID_VALUES:
        return [pa.Check.isin(sorted(columns.CODED_ID_VALUES[name]))]
    if name == columns.LABEL_COLUMN:
        return [pa.Check.isin(list(columns.LABEL_VALUES))]
    if name in OPEN_SET_PATTERNS:
        return [pa.Check.str_matches(OPEN_SET_PATTERNS[name])]
    allowed = columns.CATEGORY_VALUES[name]
    return [pa.Check.isin(list(allowed))]


def raw_table_schema(with_checks: bool = True) -> pa.DataFrameSchema:
    """The schema of the raw table; ``with_checks=False`` keeps only types and coercion."""
    integer_columns = {*columns.ID_COLUMNS, *columns.INTEGER_INPUT_COLUMNS}
    schema_columns = {
        name: pa.Column(
            "Int64" if name in integer_columns else "string",
            checks=_checks_for(name) if with_checks else None,
            nullable=name in columns.NULLABLE_COLUMNS or not with_checks,
            unique=with_checks and name == "encounter_id",
            report_duplicates="exclude_first",
            coerce=True,
        )
        for name in columns.RAW_COLUMNS
    }
    return pa.DataFrameSchema(schema_columns, strict=True, ordered=True, name="raw_encounters")


RAW_SCHEMA = raw_table_schema()
TYPE_SCHEMA = raw_table_schema(with_checks=False)


@dataclass(frozen=True)
class ValidationResult:
    """Rows that meet the schema (typed) and rows that do not (as read, with their reason)."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    reason_counts: dict[str, int]


def _problem(check: str) -> str:
    """A value-free description of a failed pandera check."""
    if check.startswith(("coerce_dtype", "dtype")):
        return "not an integer" if "Int64" in check else "wrong type"
    if check == "not_nullable":
        return "missing"
    if check == "field_uniqueness":
        return "duplicate"
    if check.startswith("in_range"):
        return "out of range " + check.removeprefix("in_range")
    if check.startswith("greater_than_or_equal_to"):
        return "not a positive id"
    if check.startswith("str_matches"):
        return "not a valid code"
    if check.startswith("isin"):
        return "not an allowed value"
    return f"failed {check.split('(')[0]}"


def _validated(
    schema: pa.DataFrameSchema, frame: pd.DataFrame
) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """``frame`` validated by ``schema`` without its failing rows, and each failing row's reasons.

    Reasons are ``column: problem`` strings in column order, keyed by the row's index label.
    """
    try:
        return schema.validate(frame, lazy=True), {}
    except SchemaErrors as errors:
        cases = errors.failure_cases
    table_level = cases[cases["index"].isna()]
    if not table_level.empty:
        checks = ", ".join(sorted(set(table_level["check"].astype(str))))
        raise ValueError(f"schema check failed for whole columns, not rows: {checks}")
    column_order = {name: position for position, name in enumerate(columns.RAW_COLUMNS)}
    found: dict[int, set[tuple[int, str]]] = {}
    for column, check, index in cases[["column", "check", "index"]].itertuples(index=False):
        reason = f"{column}: {_problem(str(check))}"
        found.setdefault(int(index), set()).add((column_order.get(column, -1), reason))
    reasons = {index: [reason for _, reason in sorted(pairs)] for index, pairs in found.items()}
    return schema.validate(frame.drop(index=list(reasons))), reasons


def validate_encounters(text_frame: pd.DataFrame) -> ValidationResult:
    """Split a raw table read as text (``?`` already missing) into valid and rejected rows.

    Types are checked first (a cell that is not an integer cannot be range-checked), then the
    value checks run on the rows whose types are sound. ``valid`` has the contract dtypes and a
    fresh index; ``rejected`` keeps the text as read, plus ``source_row`` (1-based data row) and
    ``quarantine_reason``.
    """
    typed, reasons = _validated(TYPE_SCHEMA, text_frame)
    valid, value_reasons = _validated(RAW_SCHEMA, typed)
    reasons.update(value_reasons)

    rejected_labels = sorted(reasons)
    rejected = text_frame.loc[rejected_labels].copy()
    source_rows = [text_frame.index.get_loc(label) + 1 for label in rejected_labels]
    rejected.insert(0, SOURCE_ROW_COLUMN, source_rows)
    rejected[QUARANTINE_REASON_COLUMN] = ["; ".join(reasons[label]) for label in rejected_labels]

    reason_counts: dict[str, int] = {}
    for row_reasons in reasons.values():
        for reason in row_reasons:
            reason_counts[reason] = reason_counts.get(reason, 0) + 1
    return ValidationResult(
        valid=valid.reset_index(drop=True),
        rejected=rejected.reset_index(drop=True),
        reason_counts=dict(sorted(reason_counts.items())),
    )
