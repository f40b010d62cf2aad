"""The data contract of the raw encounter table, shared by ingest, training, serving and monitoring.

Missing values are written ``?`` in the raw file. ``None`` in ``max_glu_serum`` / ``A1Cresult`` is a
real category ("not measured"), so CSVs must be read with :func:`read_encounters_csv`, never with
pandas' default NA handling (which would turn ``None`` into NaN).
"""

from __future__ import annotations

import io
from typing import IO

import pandas as pd

ID_COLUMNS = ("encounter_id", "patient_nbr")
LABEL_COLUMN = "readmitted"
LABEL_VALUES = ("<30", ">30", "NO")

# Death or hospice: such encounters cannot be followed by a readmission.
DEATH_OR_HOSPICE_DISPOSITIONS = frozenset({11, 13, 14, 19, 20, 21})

MEDICATION_COLUMNS = (
    "metformin", "repaglinide", "nateglinide", "chlorpropamide", "glimepiride", "acetohexamide",
    "glipizide", "glyburide", "tolbutamide", "pioglitazone", "rosiglitazone", "acarbose",
    "miglitol", "troglitazone", "tolazamide", "examide", "citoglipton", "insulin",
    "glyburide-metformin", "glipizide-metformin", "glimepiride-pioglitazone",
    "metformin-rosiglitazone", "metformin-pioglitazone",
)  # fmt: skip
MEDICATION_VALUES = ("No", "Steady", "Up", "Down")

CODED_ID_COLUMNS = ("admission_type_id", "discharge_disposition_id", "admission_source_id")
DIAGNOSIS_COLUMNS = ("diag_1", "diag_2", "diag_3")

# Integer counts and their plausible ranges (inclusive); the raw data lies well inside them.
COUNT_RANGES: dict[str, tuple[int, int]] = {
    "time_in_hospital": (1, 14),
    "num_lab_procedures": (0, 200),
    "num_procedures": (0, 20),
    "num_medications": (0, 150),
    "number_outpatient": (0, 100),
    "number_emergency": (0, 100),
    "number_inpatient": (0, 100),
    "number_diagnoses": (1, 20),
}

# Coded ids: the codes IDs_mapping.csv defines.
CODED_ID_VALUES: dict[str, frozenset[int]] = {
    "admission_type_id": frozenset(range(1, 9)),
    "discharge_disposition_id": frozenset(range(1, 31)),
    "admission_source_id": frozenset(range(1, 27)),
}

# Lab results whose "not measured" value is the text ``None``; pandas' default CSV reader turns it
# into NaN, so a null here means "not measured" too (see :func:`fill_not_measured`).
NOT_MEASURED = "None"
NOT_MEASURED_COLUMNS = ("max_glu_serum", "A1Cresult")

# Columns where the raw data has missing values (``?``); every other column is always filled.
NULLABLE_COLUMNS = (
    "race", "weight", "payer_code", "medical_specialty", "diag_1", "diag_2", "diag_3",
)  # fmt: skip

AGE_BRACKETS = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))

# Categorical columns with a closed set of values (None = open set, e.g. specialties, ICD-9 codes).
CATEGORY_VALUES: dict[str, tuple[str, ...] | None] = {
    "race": ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"),
    "gender": ("Female", "Male", "Unknown/Invalid"),
    "age": AGE_BRACKETS,
    "weight": (
        "[0-25)", "[25-50)", "[50-75)", "[75-100)", "[100-125)", "[125-150)", "[150-175)",
        "[175-200)", ">200",
    ),
    "payer_code": None,
    "medical_specialty": None,
    "diag_1": None,
    "diag_2": None,
    "diag_3": None,
    "max_glu_serum": ("None", "Norm", ">200", ">300"),
    "A1Cresult": ("None", "Norm", ">7", ">8"),
    **{name: MEDICATION_VALUES for name in MEDICATION_COLUMNS},
    "change": ("No", "Ch"),
    "diabetesMed": ("No", "Yes"),
}  # fmt: skip

RAW_COLUMNS = (
    "encounter_id", "patient_nbr", "race", "gender", "age", "weight", "admission_type_id",
    "discharge_disposition_id", "admission_source_id", "time_in_hospital", "payer_code",
    "medical_specialty", "num_lab_procedures", "num_procedures", "num_medications",
    "number_outpatient", "number_emergency", "number_inpatient", "diag_1", "diag_2", "diag_3",
    "number_diagnoses", "max_glu_serum", "A1Cresult", *MEDICATION_COLUMNS, "change",
    "diabetesMed", "readmitted",
)  # fmt: skip

# What a client sends to the model: every raw column but the identifiers and the label.
INPUT_COLUMNS = tuple(c for c in RAW_COLUMNS if c not in ID_COLUMNS and c != LABEL_COLUMN)
INTEGER_INPUT_COLUMNS = tuple(c for c in INPUT_COLUMNS if c in COUNT_RANGES or c in CODED_ID_VALUES)
STRING_INPUT_COLUMNS = tuple(c for c in INPUT_COLUMNS if c not in INTEGER_INPUT_COLUMNS)

MISSING_MARKER = "?"
_CSV_DTYPES = {
    **{c: "Int64" for c in (*ID_COLUMNS, *INTEGER_INPUT_COLUMNS)},
    **{c: "string" for c in (*STRING_INPUT_COLUMNS, LABEL_COLUMN)},
}


def read_encounters_csv(source: str | bytes | IO[bytes], *, as_text: bool = False) -> pd.DataFrame:
    """Encounters from a raw-format CSV: ``?`` and empty cells are missing, ``None`` is a value.

    Known columns get their contract dtype (nullable ``Int64`` counts and ids, ``string``
    categories); unknown columns are read as text so that validation can name them.
    ``as_text=True`` reads every column as text, so that validation sees unparseable cells.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    header = pd.read_csv(source, nrows=0, dtype=str).columns if hasattr(source, "seek") else None
    if header is not None:
        source.seek(0)
    dtypes = {c: t for c, t in _CSV_DTYPES.items() if header is None or c in header}
    return pd.read_csv(
        source,
        dtype=str if as_text else dtypes,
        keep_default_na=False,
        na_values=[MISSING_MARKER, ""],
    )


def fill_not_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with nulls in ``NOT_MEASURED_COLUMNS`` replaced by ``"None"`` (not measured).

    A copy only when there is something to fill; other columns and other values are untouched.
    """
    present = [c for c in NOT_MEASURED_COLUMNS if c in frame.columns and frame[c].isna().any()]
    if not present:
        return frame
    filled = {
        c: (frame[c] if pd.api.types.is_string_dtype(frame[c]) else frame[c].astype(object)).fillna(
            NOT_MEASURED
        )
        for c in present
    }
    return frame.assign(**filled)


def to_raw_csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` in the raw file's format (missing as ``?``), so it reads back identically."""
    return frame.to_csv(index=False, na_rep=MISSING_MARKER, lineterminator="\n").encode("utf-8")


# Label definitions (the ``readmitted`` values counted as positive) and the one used by default.
TARGETS = {"30d": ("<30",), "any": ("<30", ">30")}
DEFAULT_TARGET = "30d"


def make_label(frame: pd.DataFrame, target: str = DEFAULT_TARGET) -> pd.Series:
    """The binary label: ``30d`` is readmitted within 30 days (``<30``); ``any`` adds ``>30``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: use one of {sorted(TARGETS)}")
    return frame[LABEL_COLUMN].isin(TARGETS[target]).astype("int8")


def is_label_eligible(frame: pd.DataFrame) -> pd.Series:
    """True where a readmission was possible (the encounter did not end in death or hospice)."""
    disposition = pd.to_numeric(frame["discharge_disposition_id"], errors="coerce")
    return ~disposition.isin(DEATH_OR_HOSPICE_DISPOSITIONS)
