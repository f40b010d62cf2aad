"""The project's own files, scored the usual ways, give the answers of in-process ``predict``.

``pd.read_csv`` turns the text ``None`` ("not measured" in ``max_glu_serum`` / ``A1Cresult``)
into NaN; ``mlflow models predict -t csv`` read ICD-9 codes as numbers; ``text/csv`` had no
reader for the ``Any`` columns. A slice of the real future data goes through each path: pandas'
default reader, ``mlflow models predict`` (CSV and JSON, real subprocesses), ``text/csv`` on a
real scoring server, and the monitor on a batch re-exported by pandas.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from custom_pyfunc import columns
from steps.core import config, storage
from steps.monitoring import assess
from tests.fixtures_serving import LOCAL_MAX_BATCH_ROWS

pytestmark = pytest.mark.slow

MLFLOW = str(Path(sys.executable).parent / "mlflow")
SLICE_ROWS = LOCAL_MAX_BATCH_ROWS  # the local scoring server's batch limit
MONITOR_ROWS = 2500
SENTINEL = "ZQX-SENTINEL-4471"


def _future_head(data_uri: str, rows: int) -> bytes:
    """The header and the first ``rows`` rows of ``future_data.csv``, as split wrote them."""
    payload = storage.read_bytes(storage.join(data_uri, config.FUTURE_DATA_KEY))
    return b"\n".join(payload.split(b"\n")[: rows + 1]) + b"\n"


@pytest.fixture(scope="module")
def future_slice(processed_data_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch_scoring") / "future_slice.csv"
    path.write_bytes(_future_head(processed_data_uri, SLICE_ROWS))
    return path


@pytest.fixture(scope="module")
def in_process(trained_model, future_slice: Path) -> pd.DataFrame:
    """The pyfunc's answers on the slice read with the data contract's reader."""
    frame = columns.read_encounters_csv(future_slice.read_bytes())
    return mlflow.pyfunc.load_model(trained_model.model_uri).predict(frame)


def _read_csv_the_usual_way(path: Path) -> pd.DataFrame:
    """``pd.read_csv`` with its default NA handling ("None" becomes NaN); ICD-9 codes declared as
    text, since a code is not a number (the model refuses ``428.0`` for ``"428"``, as before)."""
    return pd.read_csv(path, dtype={name: str for name in columns.DIAGNOSIS_COLUMNS})


def _assert_same_answers(answers: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(answers) == len(expected)
    np.testing.assert_array_equal(answers["prediction"], expected["prediction"])
    np.testing.assert_allclose(answers["probability_score"], expected["probability_score"])


def _models_predict(model_uri: str, input_path: Path, content_type: str):
    output = input_path.with_suffix(f".{content_type}.out.json")
    files = ["-i", str(input_path), "-o", str(output), "-t", content_type]
    done = subprocess.run(
        [MLFLOW, "models", "predict", "-m", model_uri, *files, "--env-manager", "local"],
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done, output


def test_pandas_default_reader_gives_the_same_answers(trained_model, future_slice, in_process):
    frame = _read_csv_the_usual_way(future_slice)
    assert frame["max_glu_serum"].isna().any() and frame["A1Cresult"].isna().any()
    answers = mlflow.pyfunc.load_model(trained_model.model_uri).predict(frame)
    _assert_same_answers(answers, in_process)


def test_mlflow_models_predict_reads_the_projects_csv(trained_model, future_slice, in_process):
    done, output = _models_predict(trained_model.model_uri, future_slice, "csv")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_answers(pd.DataFrame(json.loads(output.read_text())["predictions"]), in_process)


def test_mlflow_models_predict_reads_json_built_by_pandas(trained_model, future_slice, in_process):
    frame = _read_csv_the_usual_way(future_slice)  # "None" is NaN here, null in the JSON
    path = future_slice.with_name("future_slice.json")
    split = json.loads(frame.to_json(orient="split", index=False))
    path.write_text(json.dumps({"dataframe_split": split}))
    done, output = _models_predict(trained_model.model_uri, path, "json")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_answers(pd.DataFrame(json.loads(output.read_text())["predictions"]), in_process)


def test_mlflow_models_predict_errors_name_columns_not_values(trained_model, future_slice):
    frame = columns.read_encounters_csv(future_slice.read_bytes()).astype(
        {"num_medications": object}
    )
    frame.at[3, "num_medications"] = SENTINEL
    path = future_slice.with_name("bad_slice.csv")
    path.write_bytes(columns.to_raw_csv_bytes(frame))
    done, _ = _models_predict(trained_model.model_uri, path, "csv")
    assert done.returncode != 0
    assert "'num_medications' must hold whole numbers, got text in 1 row" in done.stderr
    assert SENTINEL not in done.stdout + done.stderr
    assert frame.at[5, "diag_1"] not in (done.stdout + done.stderr).split()


def test_text_csv_on_the_scoring_server(scoring_service, future_slice, in_process):
    response = requests.post(
        f"{scoring_service.base_url}/invocations",
        data=future_slice.read_bytes(),
        headers={"Content-Type": "text/csv"},
        timeout=120,
    )
    assert response.status_code == 200, response.text[:500]
    _assert_same_answers(pd.DataFrame(response.json()["predictions"]), in_process)


def test_a_batch_reexported_by_pandas_is_not_drift(processed_data_uri, trained_model):
    payload = _future_head(processed_data_uri, MONITOR_ROWS)
    exported = pd.read_csv(io.BytesIO(payload)).to_csv(index=False).encode()
    assert exported != payload  # "None" became empty cells
    batch_dir = storage.join(processed_data_uri, config.CURRENT_BATCH_DIR)
    summaries = [
        assess.assess(
            storage.write_bytes(storage.join(batch_dir, name), content),
            model_uri=trained_model.model_uri,
        )
        for name, content in (("as_split_wrote_it.csv", payload), ("via_pandas.csv", exported))
    ]
    for key in ("alerts", "data_quality", "performance", "drift"):
        assert summaries[1][key] == summaries[0][key], key
