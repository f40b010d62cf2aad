"""The fitted model as one picklable object: features → estimator → calibrated probability → 0/1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV

from custom_pyfunc import features

OUTPUT_COLUMNS = ("prediction", "probability_score")


@dataclass
class ReadmissionPredictor:
    """A fitted classifier on engineered features, its calibration and decision threshold.

    ``estimator`` is a scikit-learn classifier whose input is :func:`features.engineer_features`
    output (a ``Pipeline`` of ``FeatureEncoder`` + model); ``calibrated`` is, when calibration
    helped, a ``CalibratedClassifierCV`` over that same estimator frozen (``FrozenEstimator``)
    whose calibrator was fitted on held-out labelled rows.
    """

    estimator: Any
    threshold: float
    family: str
    calibrated: CalibratedClassifierCV | None = None

    @property
    def calibration(self) -> str:
        """How probabilities are calibrated: ``none``, ``sigmoid`` or ``isotonic``."""
        return self.calibrated.method if self.calibrated is not None else "none"

    def raw_probability(self, frame: pd.DataFrame) -> np.ndarray:
        """The estimator's uncalibrated score for each raw encounter in ``frame``."""
        engineered = features.engineer_features(features.clean_data(frame))
        return self.estimator.predict_proba(engineered)[:, 1]

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of 30-day readmission for each raw encounter in ``frame``."""
        engineered = features.engineer_features(features.clean_data(frame))
        model = self.calibrated if self.calibrated is not None else self.estimator
        return model.predict_proba(engineered)[:, 1]

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``prediction`` (0/1 at ``threshold``) and ``probability_score``, in input order."""
        probability = self.probability(frame)
        return pd.DataFrame(
            {
                "prediction": (probability >= self.threshold).astype("int64"),
                "probability_score": probability.astype("float64"),
            },
            index=frame.index,
        )
