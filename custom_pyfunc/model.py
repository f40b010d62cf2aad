"""The served model: an MLflow pyfunc holding cleaning, features and the fitted classifier.

Logged with MLflow's models-from-code: this file is the model's code and ends with
``set_model``; the fitted :class:`ReadmissionPredictor` travels as an artifact and the whole
``custom_pyfunc`` package as ``code_paths``, so training and serving run the same functions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import joblib
import mlflow
import pandas as pd
from mlflow.models import ModelSignature, set_model
from mlflow.models.model import ModelInfo
from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from custom_pyfunc import columns, reasons, serving, validation
from custom_pyfunc.predictor import ReadmissionPredictor
from custom_pyfunc.requirements import pinned_requirements

PREDICTOR_ARTIFACT = "predictor"
PREDICTOR_FILE = "predictor.joblib"


class ReadmissionModel(mlflow.pyfunc.PythonModel):
    """Raw encounters in; ``prediction`` and ``probability_score`` out, in input order; with
    ``params={"reasons": k}`` (k > 0) also each row's top-k reasons each way (``reasons.py``)."""

    def load_context(self, context) -> None:
        self._predictor: ReadmissionPredictor = joblib.load(context.artifacts[PREDICTOR_ARTIFACT])
        serving.install()
        validation.install_csv_reader()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        k = reasons.requested_reasons(params)
        return self.predict_validated(validation.validate_model_input(model_input), k)

    def predict_validated(self, frame: pd.DataFrame, k: int) -> pd.DataFrame:
        """:meth:`predict` of a frame already through ``validate_model_input``, with ``k``
        reasons each way (what the scoring server calls once it has validated the request)."""
        if k == 0:
            return self._predictor.predict(frame)
        engineered = self._predictor.engineered(frame)
        per_reason, _ = reasons.contributions(self._predictor, engineered)
        answer = self._predictor.answer(engineered)
        return pd.concat([answer, reasons.top_reasons(per_reason, k)], axis=1)


def input_signature() -> ModelSignature:
    """Signature on the raw input columns (the input schema is the validation module's) and the
    ``reasons`` inference param (0: no reasons)."""
    outputs = Schema(
        [ColSpec(DataType.long, "prediction"), ColSpec(DataType.double, "probability_score")]
    )
    params = ParamSchema([ParamSpec(reasons.PARAM, DataType.long, 0)])
    return ModelSignature(inputs=validation.input_schema(), outputs=outputs, params=params)


def example_input() -> pd.DataFrame:
    """One made-up encounter (not a patient record) with every input column."""
    row: dict[str, object] = {name: "No" for name in columns.MEDICATION_COLUMNS}
    row.update(
        race="Other", gender="Female", age="[60-70)", weight=None, admission_type_id=1,
        discharge_disposition_id=1, admission_source_id=7, time_in_hospital=3, payer_code=None,
        medical_specialty="InternalMedicine", num_lab_procedures=40, num_procedures=1,
        num_medications=12, number_outpatient=0, number_emergency=0, number_inpatient=1,
        diag_1="428", diag_2="250.01", diag_3="401", number_diagnoses=7, max_glu_serum="None",
        A1Cresult=">8", insulin="Up", metformin="Steady", change="Ch", diabetesMed="Yes",
    )  # fmt: skip
    return pd.DataFrame([row])[list(columns.INPUT_COLUMNS)]


def log_readmission_model(predictor: ReadmissionPredictor, name: str = "model") -> ModelInfo:
    """Log ``predictor`` as the custom pyfunc in the active MLflow run and return its info."""
    package_dir = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        predictor_path = Path(tmp) / PREDICTOR_FILE
        joblib.dump(predictor, predictor_path)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(package_dir / "model.py"),
            artifacts={PREDICTOR_ARTIFACT: str(predictor_path)},
            code_paths=[str(package_dir)],
            signature=input_signature(),
            input_example=example_input(),
            pip_requirements=pinned_requirements(predictor),
        )


set_model(ReadmissionModel())
