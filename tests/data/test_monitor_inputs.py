"""Bad monitor input is refused with one clear line and exit status 2, never a silent OK.

(A batch whose rows all break the contract is not refused: it is a ``data_quality`` alert,
``tests/model/test_monitor_alerts.py``.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns, features
from steps.core import config, storage
from steps.monitoring.inputs import (
    MonitorInputError,
    comparable_columns,
    contract_violations,
    load_table,
)
from tests.fixtures_data import synthetic_encounters
from steps import monitor


def _run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = monitor.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write(frame: pd.DataFrame, uri: str) -> str:
    return storage.write_bytes(uri, columns.to_raw_csv_bytes(frame))


@pytest.fixture(scope="module")
def validation_rows(processed_data_uri: str) -> pd.DataFrame:
    uri = storage.join(processed_data_uri, config.INITIAL_VALIDATION_KEY)
    return columns.read_encounters_csv(storage.read_bytes(uri)).head(300)


@pytest.mark.parametrize("case", ["empty", "missing_columns", "unreadable"])
def test_bad_batch_exits_2_with_one_line(case, validation_rows, tmp_path, capsys):
    batch = validation_rows.copy()
    if case == "empty":
        batch = batch.iloc[:0]
    elif case == "missing_columns":
        batch = batch.drop(columns=["age", "insulin"])
    uri = str(tmp_path / "batch.csv")
    if case == "unreadable":
        storage.write_bytes(uri, b"")
    else:
        _write(batch, uri)
    report_uri = str(tmp_path / "report")

    code, out, err = _run_cli(capsys, "--batch-uri", uri, "--report-uri", report_uri)

    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "OK" not in out and "ALERT" not in out
    assert storage.list_keys(report_uri) == []
    expected = {
        "empty": "no rows",
        "missing_columns": "missing required columns: age, insulin",
        "unreadable": "empty",
    }[case]
    assert expected in err


def test_unreachable_model_exits_2(validation_rows, tmp_path, capsys):
    uri = _write(validation_rows, str(tmp_path / "batch.csv"))
    code, out, err = _run_cli(
        capsys, "--batch-uri", uri, "--model-uri", "models:/no-such-model@champion"
    )
    assert code == 2
    assert err.startswith("error: model models:/no-such-model@champion cannot be loaded")
    assert out == ""


def test_missing_batch_file_exits_2(tmp_path, capsys):
    code, _, err = _run_cli(capsys, "--batch-uri", str(tmp_path / "absent.csv"))
    assert code == 2 and "batch" in err and "cannot be read" in err


def test_errors_never_echo_patient_values(validation_rows, tmp_path, capsys):
    batch = validation_rows.drop(columns=["diag_1"])
    batch["readmitted"] = batch["readmitted"].astype(object)
    batch.iloc[0, batch.columns.get_loc("readmitted")] = "maybe"
    code, _, err = _run_cli(capsys, "--batch-uri", _write(batch, str(tmp_path / "b.csv")))
    assert code == 2
    for value in batch["encounter_id"].astype(str).head(20):
        assert value not in err


def test_unknown_label_value_is_refused(validation_rows, tmp_path, capsys):
    batch = validation_rows.copy()
    batch["readmitted"] = batch["readmitted"].astype(object)
    batch.iloc[3, batch.columns.get_loc("readmitted")] = "soon"
    code, _, err = _run_cli(capsys, "--batch-uri", _write(batch, str(tmp_path / "b.csv")))
    assert code == 2 and "'readmitted' has values outside" in err and "soon" not in err


def test_contract_violations_flag_each_rule():
    frame = synthetic_encounters(50, seed=3)
    frame.loc[0, "time_in_hospital"] = 40  # count out of range
    frame.loc[1, "admission_type_id"] = 99  # unknown code
    frame.loc[2, "A1Cresult"] = "High"  # outside a closed category set
    frame.loc[3, "age"] = None  # missing where a value is required
    frame.loc[4, "medical_specialty"] = "Telemedicine"  # open set: allowed
    frame.loc[5, "payer_code"] = None  # nullable: allowed
    violations = contract_violations(frame)
    assert violations.loc[0, "time_in_hospital"]
    assert violations.loc[1, "admission_type_id"]
    assert violations.loc[2, "A1Cresult"]
    assert violations.loc[3, "age"]
    assert violations.any(axis=1).tolist() == [True] * 4 + [False] * 46


def test_comparable_columns_skip_empty_columns_and_refuse_no_overlap():
    batch = features.clean_data(synthetic_encounters(40, seed=1))
    reference = features.clean_data(synthetic_encounters(60, seed=2))
    batch["payer_code"] = None
    shared = comparable_columns(batch, reference)
    assert "payer_code" not in shared and "age" in shared
    empty = batch.copy()
    for name in features.CLEAN_COLUMNS:
        empty[name] = np.nan if name in features.CLEAN_NUMERIC_COLUMNS else None
    empty[features.WEIGHT_RECORDED] = 0.0
    with pytest.raises(MonitorInputError, match="no overlap"):
        comparable_columns(empty, reference)


def test_a_comma_separated_table_reads_every_file_in_order(validation_rows, tmp_path):
    first = _write(validation_rows.head(100), str(tmp_path / "first.csv"))
    second = _write(validation_rows.tail(50), str(tmp_path / "second.csv"))
    both = load_table(f"{first},{second}", "reference")
    assert len(both.frame) == 150
    assert both.frame["encounter_id"].tolist() == [
        *validation_rows.head(100)["encounter_id"],
        *validation_rows.tail(50)["encounter_id"],
    ]
    assert both.sha256 != load_table(first, "reference").sha256
    assert both.sha256 == load_table(f"{first}, {second}", "reference").sha256
    # A missing part is named, not the whole list.
    with pytest.raises(MonitorInputError, match=r"^reference \S*missing\.csv cannot be read"):
        load_table(f"{first},{tmp_path / 'missing.csv'}", "reference")
