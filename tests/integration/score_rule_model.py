"""A tiny real pyfunc for registry tests, logged with models-from-code.

Its probability is a logistic score of a few raw columns, with weights from ``model_config``, so a
test can log models of known quality quickly. It honours the pyfunc contract of
``custom_pyfunc.model``: a DataFrame with ``prediction`` (0/1) and ``probability_score``.
"""

import mlflow
import numpy as np
import pandas as pd


class ScoreRuleModel(mlflow.pyfunc.PythonModel):
    """``sigmoid(bias + sum(weight * column))``, flagged at ``threshold``."""

    def load_context(self, context):
        self.config = context.model_config

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        logit = np.full(len(frame), float(self.config.get("bias", 0.0)))
        for column, weight in self.config["weights"].items():
            logit += weight * pd.to_numeric(frame[column]).fillna(0).to_numpy(dtype=float)
        probability = 1 / (1 + np.exp(-logit))
        prediction = (probability >= self.config.get("threshold", 0.5)).astype(int)
        return pd.DataFrame({"prediction": prediction, "probability_score": probability})


mlflow.models.set_model(ScoreRuleModel())
