"""The pandera schema of the raw table: types, allowed values, ranges, and value-free reasons."""

from __future__ import annotations

import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.data import schema
from tests.fixtures_data import synthetic_encounters


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return columns.read_encounters_csv(columns.to_raw_csv_bytes(frame), as_text=True)


def test_schema_covers_all_50_columns_in_order():
    assert list(schema.RAW_SCHEMA.columns) == list(columns.RAW_COLUMNS)
    assert len(schema.RAW_SCHEMA.columns) == 50


def test_valid_rows_pass_and_come_back_with_contract_dtypes():
    frame = synthetic_encounters(300, seed=1)
    result = schema.validate_encounters(_as_text(frame))
    assert result.rejected.empty and result.reason_counts == {}
    pd.testing.assert_frame_equal(result.valid, frame)


@pytest.mark.parametrize(
    ("column", "bad_value", "reason"),
    [
        ("time_in_hospital", "abc", "time_in_hospital: not an integer"),
        ("num_lab_procedures", "999", "num_lab_procedures: out of range (0, 200)"),
        ("admission_type_id", "99", "admission_type_id: not an allowed value"),
        ("race", "Martian", "race: not an allowed value"),
        ("age", "[100-110)", "age: not an allowed value"),
        ("diag_1", "XYZ.1", "diag_1: not a valid code"),
        ("payer_code", "lowercase", "payer_code: not a valid code"),
        ("readmitted", None, "readmitted: missing"),
        ("gender", None, "gender: missing"),
        ("patient_nbr", "-4", "patient_nbr: not a positive id"),
        ("number_diagnoses", "2.5", "number_diagnoses: not an integer"),
    ],
)
def test_bad_cell_rejects_its_row_with_a_value_free_reason(column, bad_value, reason):
    text = _as_text(synthetic_encounters(40, seed=2))
    text.loc[7, column] = bad_value
    result = schema.validate_encounters(text)
    assert list(result.rejected[schema.SOURCE_ROW_COLUMN]) == [8]
    assert list(result.rejected[schema.QUARANTINE_REASON_COLUMN]) == [reason]
    assert len(result.valid) == 39
    if bad_value is not None:
        assert bad_value not in reason
    # The rejected row is kept exactly as read, for a human to inspect.
    assert result.rejected.loc[0, column] == bad_value or pd.isna(bad_value)


def test_duplicate_encounter_keeps_the_first_and_lists_every_problem_of_a_row():
    text = _as_text(synthetic_encounters(30, seed=3))
    text.loc[20, "encounter_id"] = text.loc[5, "encounter_id"]
    text.loc[20, "race"] = "Martian"
    result = schema.validate_encounters(text)
    assert list(result.rejected[schema.SOURCE_ROW_COLUMN]) == [21]
    assert result.rejected.loc[0, schema.QUARANTINE_REASON_COLUMN] == (
        "encounter_id: duplicate; race: not an allowed value"
    )
    assert result.reason_counts == {"encounter_id: duplicate": 1, "race: not an allowed value": 1}


def test_missing_is_allowed_only_in_nullable_columns():
    text = _as_text(synthetic_encounters(20, seed=4))
    for name in columns.NULLABLE_COLUMNS:
        text[name] = None
    assert schema.validate_encounters(text).rejected.empty
    text.loc[3, "A1Cresult"] = None
    assert schema.validate_encounters(text).reason_counts == {"A1Cresult: missing": 1}
