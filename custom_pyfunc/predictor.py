"""The fitted model as one picklable object: features → estimator → calibrated probability → 0/1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from custom_pyfunc import features

OUTPUT_COLUMNS = ("prediction", "probability_score")
_EPSILON = 1e-6


@dataclass
class ProbabilityCalibrator:
    """Maps a model's scores to calibrated probabilities: ``sigmoid`` (Platt scaling on the
    log-odds) or ``isotonic`` regression, both fitted on held-out labelled scores."""

    method: str
    model: Any = None

    def fit(self, probability: np.ndarray, y_true: np.ndarray) -> ProbabilityCalibrator:
        """Fit the mapping on held-out scores and labels."""
        if self.method == "isotonic":
            self.model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            self.model.fit(probability, y_true)
        elif self.method == "sigmoid":
            self.model = LogisticRegression(C=1e4).fit(_log_odds(probability), y_true)
        else:
            raise ValueError(f"unknown calibration {self.method!r}: use 'sigmoid' or 'isotonic'")
        return self

    def transform(self, probability: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for ``probability``."""
        if self.method == "isotonic":
            return self.model.predict(probability)
        return self.model.predict_proba(_log_odds(probability))[:, 1]


def _log_odds(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(probability, _EPSILON, 1 - _EPSILON)
    return np.log(clipped / (1 - clipped)).reshape(-1, 1)


@dataclass
class ReadmissionPredictor:
    """A fitted classifier on engineered features, its calibration and decision threshold.

    ``estimator`` is a scikit-learn classifier whose input is :func:`features.engineer_features`
    output (a ``Pipeline`` of ``FeatureEncoder`` + model).
    """

    estimator: Any
    threshold: float
    family: str
    calibrator: ProbabilityCalibrator | None = None

    @property
    def calibration(self) -> str:
        """How probabilities are calibrated: ``none``, ``sigmoid`` or ``isotonic``."""
        return self.calibrator.method if self.calibrator else "none"

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of 30-day readmission for each raw encounter in ``frame``."""
        engineered = features.engineer_features(features.clean_data(frame))
        probability = self.estimator.predict_proba(engineered)[:, 1]
        return self.calibrator.transform(probability) if self.calibrator else probability

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
