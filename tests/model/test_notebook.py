"""The EDA/baseline notebook runs top to bottom as a script on the real data."""

from __future__ import annotations

import os
import subprocess
import sys

import jupytext
import pytest

from steps.core import config

NOTEBOOK = config.PROJECT_ROOT / "notebooks" / "01_eda_baseline.py"


def test_notebook_is_valid_jupytext():
    notebook = jupytext.read(NOTEBOOK)
    assert sum(cell.cell_type == "code" for cell in notebook.cells) >= 4


@pytest.mark.slow
def test_notebook_runs_as_a_script_and_writes_figures(tmp_path, raw_data_source):
    env = {
        **os.environ,
        "HEALTH_PREDICT_RAW_DATA": raw_data_source,
        "HEALTH_PREDICT_NOTEBOOK_OUTPUT": str(tmp_path),
        "MPLBACKEND": "Agg",
    }
    completed = subprocess.run(
        [sys.executable, str(NOTEBOOK)], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "logistic regression baseline: ROC-AUC" in completed.stdout
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "missing_share.png",
        "readmission_rates.png",
    }
