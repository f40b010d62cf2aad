"""The served model's input contract: its MLflow signature and the checks behind it.

MLflow's scoring server (3.17.2) echoes the whole input frame into the error body whenever schema
enforcement or ``predict`` raises an ``MlflowException``, and silently truncates a float sent to an
integer column. So the signature is deliberately permissive (every column optional; counts typed
``Any``, text columns ``string``), which MLflow's own enforcement cannot reject, and
:func:`validate_model_input` does the real checks in one vectorised pass. Its
:class:`InvalidModelInput` names the column and the problem, never a value, and keeps that message
even when the server tries to prepend the input to it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

from custom_pyfunc import columns

MAX_BATCH_ROWS_ENV = "HEALTH_PREDICT_MAX_BATCH_ROWS"
DEFAULT_MAX_BATCH_ROWS = 10_000

_NULLABLE = frozenset(columns.NULLABLE_COLUMNS)
_ALLOWED_TEXT = {
    name: frozenset(values) for name, values in columns.CATEGORY_VALUES.items() if values
}
# Coded ids: a lookup table indexed by code, True where the code is defined.
_ALLOWED_CODES = {
    name: np.isin(np.arange(max(codes) + 1), sorted(codes))
    for name, codes in columns.CODED_ID_VALUES.items()
}
_TEXT_COLUMNS = list(columns.STRING_INPUT_COLUMNS)
_INTEGER_COLUMNS = list(columns.INTEGER_INPUT_COLUMNS)
_POSITION = {name: j for j, name in enumerate(columns.INPUT_COLUMNS)}
_BLANK_TEXT = frozenset({columns.MISSING_MARKER, ""})
_NUMBER_TYPES = (int, float, np.integer, np.floating)
_BOOL_TYPES = (bool, np.bool_)


class InvalidModelInput(MlflowException):
    """A request the model refuses: HTTP 400 ``INVALID_PARAMETER_VALUE``, naming columns only.

    The scoring server rewrites ``e.message`` of any ``MlflowException`` to start with the whole
    input frame; this class keeps its first message, so the error body says exactly what is wrong
    and contains no patient value.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            "Invalid model input: " + "; ".join(self.problems),
            error_code=INVALID_PARAMETER_VALUE,
        )

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_message"):
            self._message = value


def input_schema() -> Schema:
    """MLflow input schema on the raw columns that MLflow's enforcement can never reject.

    Text columns are ``string`` (a no-op for object/string columns); counts and coded ids are
    ``Any`` so that a wrong type reaches :func:`validate_model_input` instead of a server error
    that quotes the value. Identifiers are declared so that they pass through (and are dropped).
    """
    specs = [ColSpec(AnyType(), name, required=False) for name in columns.ID_COLUMNS]
    for name in columns.INPUT_COLUMNS:
        kind = AnyType() if name in columns.INTEGER_INPUT_COLUMNS else DataType.string
        specs.append(ColSpec(kind, name, required=False))
    return Schema(specs)


def max_batch_rows() -> int | None:
    """Largest accepted batch: ``HEALTH_PREDICT_MAX_BATCH_ROWS``, else 10,000 when served by
    MLflow's scoring server and unlimited elsewhere (monitoring and ``mlflow models predict``
    score whole files)."""
    configured = os.environ.get(MAX_BATCH_ROWS_ENV)
    if configured:
        return int(configured)
    return DEFAULT_MAX_BATCH_ROWS if _in_scoring_server() else None


def _in_scoring_server() -> bool:
    """True inside MLflow's scoring server (not in ``mlflow models predict``, a batch job)."""
    return "mlflow.pyfunc.scoring_server.app" in sys.modules


def _type_names(values) -> str:
    names = {"str": "text", "float": "a number", "int": "a number", "bool": "a boolean"}
    found = {names.get(type(v).__name__, type(v).__name__) for v in values}
    return " and ".join(sorted(found))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _is_plain_integer(dtype) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind in "iu"


def _integer_problem(name: str, numbers: np.ndarray) -> str | None:
    """What is wrong with the int64 values of a count or coded-id column, if anything."""
    if name in _ALLOWED_CODES:
        known = _ALLOWED_CODES[name]
        in_table = (numbers >= 0) & (numbers < len(known))
        unknown = int((~in_table).sum() + (~known[numbers[in_table]]).sum())
        if unknown:
            codes = np.flatnonzero(known)
            return (
                f"column '{name}' must be a code from {codes[0]} to {codes[-1]} "
                f"(IDs_mapping.csv); {_rows(unknown)} not"
            )
        return None
    low, high = columns.COUNT_RANGES[name]
    outside = int(((numbers < low) | (numbers > high)).sum())
    if outside:
        return f"column '{name}' must be within [{low}, {high}]; {_rows(outside)} not"
    return None


def _coerce_integer_column(name: str, values: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """A column that is not plain int64: (its int64 values, None) or (None, the problem)."""
    missing = np.fromiter(map(_is_missing, values), dtype=bool, count=len(values))
    present = values[~missing]
    wrong = [v for v in present if not isinstance(v, _NUMBER_TYPES) or isinstance(v, _BOOL_TYPES)]
    if wrong:
        return None, (
            f"column '{name}' must hold whole numbers, got {_type_names(wrong)} "
            f"in {_rows(len(wrong))}"
        )
    if missing.any():
        return None, f"column '{name}' must not be null ({_rows(int(missing.sum()))})"
    floats = present.astype("float64")
    fractional = int(((floats % 1 != 0) | ~np.isfinite(floats)).sum())
    if fractional:
        return (
            None,
            f"column '{name}' must hold whole numbers, got a fraction in {_rows(fractional)}",
        )
    return floats.astype("int64"), None


def _text_problem(name: str, values: np.ndarray) -> str | None:
    """What is wrong with a text column, if anything (checked on its distinct values)."""
    try:
        distinct = set(values)
    except TypeError:  # lists or objects in the column
        distinct = None
    if distinct is None or any(not isinstance(v, str) and not _is_missing(v) for v in distinct):
        wrong = [v for v in values if not isinstance(v, str) and not _is_missing(v)]
        return f"column '{name}' must hold text, got {_type_names(wrong)} in {_rows(len(wrong))}"
    blank = {v for v in distinct if _is_missing(v) or v in _BLANK_TEXT}
    if blank and name not in _NULLABLE:
        count = sum(1 for v in values if _is_missing(v) or v in _BLANK_TEXT)
        hint = ' (use "None" for not measured)' if "None" in _ALLOWED_TEXT.get(name, ()) else ""
        return f"column '{name}' must not be null{hint} ({_rows(count)})"
    allowed = _ALLOWED_TEXT.get(name)
    if allowed is not None and not (distinct - blank) <= allowed:
        count = sum(1 for v in values if v not in allowed and v not in blank)
        categories = sorted(allowed)
        return f"column '{name}' has a value outside its categories {categories} in {_rows(count)}"
    return None


def _integer_columns(
    selected: pd.DataFrame, block: np.ndarray, problems: list[str]
) -> dict[str, np.ndarray]:
    """The count and coded-id columns that needed coercion to int64 (problems appended)."""
    coerced = {}
    dtypes = selected.dtypes.to_numpy()
    for name in _INTEGER_COLUMNS:
        position = _POSITION[name]
        if _is_plain_integer(dtypes[position]):  # the usual JSON case
            values = block[:, position].astype("int64")
        else:
            values, problem = _coerce_integer_column(name, block[:, position])
            if problem:
                problems.append(problem)
                continue
            coerced[name] = values
        if problem := _integer_problem(name, values):
            problems.append(problem)
    return coerced


def validate_model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` restricted to the input contract (identifiers and extra columns dropped).

    Counts and coded ids come back as integers; text columns keep their values (missing as
    None/NaN). Raises :class:`InvalidModelInput` listing every problem found: empty or oversized
    batch, duplicated or missing columns, wrong types (text in a count, a fraction in an integer
    column, a number in a text column), nulls outside ``columns.NULLABLE_COLUMNS`` (a null in
    ``columns.NOT_MEASURED_COLUMNS`` is read as ``"None"``, not measured), out-of-range
    counts, unknown coded ids and values outside a closed category set. Open sets (payer,
    specialty, ICD-9 codes) accept unseen values; the features handle them.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidModelInput(["input must be a table of encounters (a DataFrame)"])
    if len(frame) == 0:
        raise InvalidModelInput(["the request has no rows"])
    limit = max_batch_rows()
    if limit is not None and len(frame) > limit:
        raise InvalidModelInput(
            [f"the batch has {len(frame)} rows, more than {limit} ({MAX_BATCH_ROWS_ENV})"]
        )
    if frame.columns.has_duplicates:
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise InvalidModelInput([f"column '{c}' appears more than once" for c in duplicated])
    present = set(frame.columns)
    missing = [c for c in columns.INPUT_COLUMNS if c not in present]
    if missing:
        raise InvalidModelInput([f"missing required columns {missing}"])

    problems: list[str] = []
    selected = columns.fill_not_measured(frame[list(columns.INPUT_COLUMNS)])
    block = selected.to_numpy(dtype=object)
    for name in _TEXT_COLUMNS:
        if problem := _text_problem(name, block[:, _POSITION[name]]):
            problems.append(problem)
    coerced = _integer_columns(selected, block, problems)
    if problems:
        raise InvalidModelInput(problems)
    return selected.assign(**coerced) if coerced else selected


def read_csv_input(csv_input, schema: Schema | None = None) -> pd.DataFrame:
    """Encounters from a CSV body, file path or stream, read as the project writes its files.

    Replaces MLflow's ``parse_csv_input`` (see :func:`install_csv_reader`): ``?`` and empty cells
    are missing, ``None`` stays text, ICD-9 codes stay text (pandas' default reader turns
    ``428`` into ``428.0`` and a column of such codes into numbers), counts and coded ids become
    numbers where they are numbers (anything else is left for :func:`validate_model_input` to
    name). ``schema`` is accepted for MLflow's call and not needed.
    """
    payload = csv_input.read() if hasattr(csv_input, "read") else Path(csv_input).read_bytes()
    try:
        text = payload if isinstance(payload, str) else payload.decode("utf-8")
        frame = columns.read_encounters_csv(text.encode("utf-8"), as_text=True)
    except (ValueError, pd.errors.ParserError, UnicodeError):
        raise InvalidModelInput(
            ["the CSV input cannot be read as a table (UTF-8, a header line, one row per line)"]
        ) from None
    converted: dict[str, pd.Series] = {}
    for name in frame.columns:
        values = frame[name]
        if name in columns.INTEGER_INPUT_COLUMNS:
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().sum() == values.notna().sum():
                converted[name] = numbers
            else:  # keep the text cells so that validation can count them
                converted[name] = values.astype(object).where(numbers.isna(), numbers)
        else:
            converted[name] = values.astype("string")
    return frame.assign(**converted)


def install_csv_reader() -> None:
    """Make MLflow read CSV input with :func:`read_csv_input` in this process (idempotent).

    MLflow's ``text/csv`` handler (scoring server) and ``mlflow models predict -t csv`` parse with
    pandas' defaults or the signature's types; neither can read the project's own files (ICD-9
    codes become floats, ``None`` becomes NaN, ``Any`` columns have no pandas type). Both look
    ``parse_csv_input`` up in ``mlflow.pyfunc.scoring_server`` at call time, after loading the
    model, so the model's ``load_context`` replaces it there. Does nothing in processes that
    have not imported the scoring server.
    """
    scoring_server = sys.modules.get("mlflow.pyfunc.scoring_server")
    if scoring_server is not None:
        scoring_server.parse_csv_input = read_csv_input
