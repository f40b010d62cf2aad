"""``custom_pyfunc.validation``: the served model's input contract, in-process and fast."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.models.utils import _enforce_schema
from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

from custom_pyfunc import columns
from custom_pyfunc.validation import (
    MAX_BATCH_ROWS_ENV,
    InvalidModelInput,
    input_schema,
    validate_model_input,
)
from tests.fixtures_data import synthetic_encounters

SENTINEL = "ZQX-SENTINEL-4471"


def records_frame(n_rows: int = 4, seed: int = 1) -> pd.DataFrame:
    """Synthetic encounters shaped as the scoring server builds them from JSON records."""
    frame = synthetic_encounters(n_rows, seed=seed).drop(columns=[columns.LABEL_COLUMN])
    return pd.DataFrame(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"))


def problems_of(frame: pd.DataFrame) -> str:
    with pytest.raises(InvalidModelInput) as raised:
        validate_model_input(frame)
    assert SENTINEL not in raised.value.message
    return raised.value.message


def test_valid_frame_is_restricted_to_the_contract():
    frame = records_frame()
    validated = validate_model_input(frame)
    assert list(validated.columns) == list(columns.INPUT_COLUMNS)
    assert validated.index.equals(frame.index)
    assert all(validated[c].dtype == "int64" for c in columns.INTEGER_INPUT_COLUMNS)


def test_contract_dtypes_from_csv_are_accepted():
    frame = synthetic_encounters(6, seed=2)  # nullable Int64 and string columns, pd.NA
    validated = validate_model_input(frame)
    assert all(validated[c].dtype == "int64" for c in columns.INTEGER_INPUT_COLUMNS)
    assert "encounter_id" not in validated and columns.LABEL_COLUMN not in validated


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("num_medications", SENTINEL, "'num_medications' must hold whole numbers, got text"),
        ("num_medications", 12.5, "got a fraction"),
        ("num_medications", True, "got a boolean"),
        ("num_medications", None, "'num_medications' must not be null"),
        ("number_inpatient", 987_654_321, "'number_inpatient' must be within [0, 100]"),
        ("admission_type_id", 99, "'admission_type_id' must be a code from 1 to 8"),
        ("gender", None, "'gender' must not be null"),
        ("max_glu_serum", "?", 'use "None" for not measured'),
        ("race", SENTINEL, "'race' has a value outside its categories"),
        ("diag_1", 428, "'diag_1' must hold text, got a number"),
        ("age", [SENTINEL], "'age' must hold text, got list"),
    ],
)
def test_bad_value_is_named_by_column_and_problem_only(column, value, expected):
    frame = records_frame().astype({column: object})
    frame.at[1, column] = value
    frame.at[2, "diag_2"] = SENTINEL  # a valid open-set value that must not leak either
    message = problems_of(frame)
    assert expected in message
    assert "1 row" in message


def test_every_problem_is_reported_at_once():
    frame = records_frame().astype({"num_medications": object})
    frame.at[0, "num_medications"] = SENTINEL
    frame.at[0, "race"] = SENTINEL
    message = problems_of(frame)
    assert "'num_medications'" in message and "'race'" in message


def test_nullable_columns_and_whole_floats_and_unseen_open_values_pass():
    frame = records_frame().astype({"time_in_hospital": "float64"})
    for name in columns.NULLABLE_COLUMNS:
        frame[name] = None
    frame["medical_specialty"] = "Never-Seen-Specialty"
    validated = validate_model_input(frame)
    assert validated["time_in_hospital"].dtype == "int64"


def test_missing_duplicated_and_empty_inputs():
    assert "missing required columns ['age']" in problems_of(records_frame().drop(columns="age"))
    duplicated = pd.concat([records_frame(), records_frame()[["race"]]], axis=1)
    assert "'race' appears more than once" in problems_of(duplicated)
    assert "no rows" in problems_of(records_frame().iloc[:0])


def test_batch_limit_applies_when_configured(monkeypatch):
    validate_model_input(records_frame(30))  # in-process without the variable: no limit
    monkeypatch.setenv(MAX_BATCH_ROWS_ENV, "20")
    assert "more than 20" in problems_of(records_frame(30))


def test_server_cannot_overwrite_the_message():
    error = InvalidModelInput(["column 'age' must not be null (1 row)"])
    error.message = f"Failed to predict data '{SENTINEL}'"  # what MLflow's scoring server does
    assert SENTINEL not in error.serialize_as_json()
    assert error.get_http_status_code() == 400


def test_mlflow_parsing_and_enforcement_never_reject_what_validation_reports():
    """The scoring server's own path (JSON records → cast → schema enforcement) lets every bad
    value through to ``validate_model_input``, which is the only place that rejects it."""
    records = records_frame().drop(columns="age").to_dict(orient="records")
    records[0]["num_medications"] = SENTINEL
    records[1]["diag_1"] = 428
    for record in records:
        record["gender"] = None
    schema = input_schema()
    parsed = dataframe_from_parsed_json(records, pandas_orient="records", schema=schema)
    enforced = _enforce_schema(parsed, schema)
    assert "missing required columns ['age']" in problems_of(enforced)
    enforced["age"] = "[50-60)"
    message = problems_of(enforced)
    for column in ("num_medications", "diag_1", "gender"):
        assert f"'{column}'" in message


def test_null_lab_result_is_not_measured_and_nothing_else_is_loosened():
    frame = records_frame(6).astype({"max_glu_serum": object, "A1Cresult": object})
    frame.loc[[0, 1], "max_glu_serum"] = None
    frame.loc[[2], "A1Cresult"] = float("nan")
    validated = validate_model_input(frame)
    assert list(validated.loc[[0, 1], "max_glu_serum"]) == ["None", "None"]
    assert validated.at[2, "A1Cresult"] == "None"
    frame.at[3, "A1Cresult"] = ""  # blank text is not null: still refused
    frame.at[4, "gender"] = None  # other closed categories still refuse null
    message = problems_of(frame)
    assert "'A1Cresult' must not be null" in message and "'gender' must not be null" in message
    assert "max_glu_serum" not in message
