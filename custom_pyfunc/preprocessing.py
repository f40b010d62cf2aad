"""A lean scikit-learn transformer from engineered features to the numeric matrix a model needs.

Category → index maps are plain dicts learnt at fit time, so transforming one row costs a few
dictionary look-ups instead of a ``ColumnTransformer``'s per-call validation and concatenation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import TargetEncoder

from custom_pyfunc import features

MISSING_CATEGORY = "__missing__"
# High-cardinality columns that also get a (cross-fitted, so leak-free) target encoding.
TARGET_ENCODED_COLUMNS = (
    "diag_1",
    "diag_2",
    "diag_3",
    "medical_specialty",
    "payer_code",
    "discharge_disposition_id",
    "admission_source_id",
)


def categorical_indices() -> list[int]:
    """Columns of the ordinal matrix holding low-cardinality category codes (for LightGBM)."""
    start = len(features.FEATURE_NUMERIC_COLUMNS)
    return [
        start + j
        for j, name in enumerate(features.FEATURE_CATEGORICAL_COLUMNS)
        if name not in TARGET_ENCODED_COLUMNS
    ]


NATIVE_COLUMNS = (*features.FEATURE_NUMERIC_COLUMNS, *features.FEATURE_CATEGORICAL_COLUMNS)


def native_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Engineered features for a model with native categoricals: numeric columns as float64,
    categorical columns as text with missing as ``MISSING_CATEGORY``."""
    numeric = features.numeric_columns(frame, features.FEATURE_NUMERIC_COLUMNS)
    text = features.text_columns(frame, features.FEATURE_CATEGORICAL_COLUMNS)
    text[pd.isna(text)] = MISSING_CATEGORY
    blocks = [
        (numeric, features.FEATURE_NUMERIC_COLUMNS),
        (text, features.FEATURE_CATEGORICAL_COLUMNS),
    ]
    return features.frame_of_blocks(blocks, frame.index)


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Numeric matrix from :func:`features.engineer_features` output.

    ``encoding="ordinal"`` (tree models): numeric columns as they are (NaN = missing), one integer
    code per categorical column (frequency-ranked; categories seen fewer than ``min_frequency``
    times and unseen ones share the last code; missing is its own category), plus the target
    encoding of ``TARGET_ENCODED_COLUMNS``. ``encoding="onehot"`` (linear models): standardised,
    median-imputed numeric columns and one indicator per category code. ``encoding="native"``
    (CatBoost, which encodes categories itself): a frame of the numeric columns as they are and
    the categorical columns as text (missing as ``__missing__``); nothing is learnt.
    """

    def __init__(self, encoding: str = "ordinal", min_frequency: int = 20, random_state: int = 0):
        self.encoding = encoding
        self.min_frequency = min_frequency
        self.random_state = random_state

    def _codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer category codes, one column per categorical feature."""
        block = features.text_columns(frame, self.vocabularies_)
        codes = np.empty(block.shape, dtype="int64")
        for j, vocabulary in enumerate(self.vocabularies_.values()):
            other = len(vocabulary)
            values = block[:, j]
            codes[:, j] = [
                vocabulary.get(MISSING_CATEGORY if v is None or v != v else v, other)
                for v in values
            ]
        return codes

    def _learn_vocabularies(self, frame: pd.DataFrame) -> None:
        self.vocabularies_: dict[str, dict[str, int]] = {}
        for name in features.FEATURE_CATEGORICAL_COLUMNS:
            counts = frame[name].fillna(MISSING_CATEGORY).value_counts()
            kept = counts[counts >= self.min_frequency].index
            self.vocabularies_[name] = {category: i for i, category in enumerate(kept)}

    def fit(self, frame: pd.DataFrame, y=None):
        """Learn vocabularies, numeric statistics and target encodings from ``frame``."""
        self.fit_transform(frame, y)
        return self

    def fit_transform(self, frame: pd.DataFrame, y=None, **fit_params) -> np.ndarray:
        """Fit and return the training matrix (target encoding cross-fitted, so leak-free)."""
        if self.encoding == "native":
            return native_frame(frame)
        self._learn_vocabularies(frame)
        numeric = frame[list(features.FEATURE_NUMERIC_COLUMNS)].to_numpy(dtype="float64")
        codes = self._codes(frame)
        if self.encoding == "onehot":
            self.medians_ = np.nanmedian(numeric, axis=0)
            imputed = np.where(np.isnan(numeric), self.medians_, numeric)
            self.means_ = imputed.mean(axis=0)
            self.scales_ = imputed.std(axis=0)
            self.scales_[self.scales_ == 0] = 1.0
            self.onehot_offsets_ = np.cumsum(
                [0] + [len(v) + 1 for v in self.vocabularies_.values()]
            )
            matrix = self._onehot_matrix(numeric, codes)
            # The reference row of a linear model's per-column contributions.
            self.training_means_ = matrix.mean(axis=0)
            return matrix
        if self.encoding != "ordinal":
            raise ValueError(
                f"unknown encoding {self.encoding!r}: use 'ordinal', 'onehot' or 'native'"
            )
        if y is None:
            raise ValueError("ordinal encoding needs the label for its target encoding")
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=self.random_state)
        self.target_encoder_ = TargetEncoder(target_type="binary", cv=folds)
        encoded = self.target_encoder_.fit_transform(codes[:, self._target_encoded_idx()], y)
        self.target_lookups_ = self._target_lookups()
        return np.hstack([numeric, codes, encoded])

    def _target_lookups(self) -> list[np.ndarray]:
        """Per target-encoded column, its encoding indexed by category code (the fitted
        ``TargetEncoder``'s values; codes it never saw get the overall target mean, as there)."""
        lookups = []
        for j, name in enumerate(TARGET_ENCODED_COLUMNS):
            lookup = np.full(len(self.vocabularies_[name]) + 1, self.target_encoder_.target_mean_)
            categories = self.target_encoder_.categories_[j].astype("int64")
            lookup[categories] = self.target_encoder_.encodings_[j]
            lookups.append(lookup)
        return lookups

    def _target_encoded_idx(self) -> list[int]:
        names = list(self.vocabularies_)
        return [names.index(c) for c in TARGET_ENCODED_COLUMNS]

    def _onehot_matrix(self, numeric: np.ndarray, codes: np.ndarray) -> np.ndarray:
        scaled = (np.where(np.isnan(numeric), self.medians_, numeric) - self.means_) / self.scales_
        indicators = np.zeros((len(codes), self.onehot_offsets_[-1]))
        rows = np.arange(len(codes))
        for j in range(codes.shape[1]):
            indicators[rows, self.onehot_offsets_[j] + codes[:, j]] = 1.0
        return np.hstack([scaled, indicators])

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The model matrix for ``frame`` (any number of rows, unseen categories allowed)."""
        if self.encoding == "native":
            return native_frame(frame)
        numeric = features.numeric_columns(frame, features.FEATURE_NUMERIC_COLUMNS)
        codes = self._codes(frame)
        if self.encoding == "onehot":
            return self._onehot_matrix(numeric, codes)
        target_codes = codes[:, self._target_encoded_idx()]
        encoded = np.column_stack(
            [lookup[target_codes[:, j]] for j, lookup in enumerate(self.target_lookups_)]
        )
        return np.hstack([numeric, codes, encoded])

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of the output columns."""
        if self.encoding == "native":
            return np.asarray(NATIVE_COLUMNS, dtype=object)
        if self.encoding == "onehot":
            names = [*features.FEATURE_NUMERIC_COLUMNS]
            for column, vocabulary in self.vocabularies_.items():
                names += [f"{column}={category}" for category in vocabulary]
                names.append(f"{column}=other")
            return np.asarray(names, dtype=object)
        names = [
            *features.FEATURE_NUMERIC_COLUMNS,
            *(f"{c}_code" for c in self.vocabularies_),
            *(f"{c}_target_mean" for c in TARGET_ENCODED_COLUMNS),
        ]
        return np.asarray(names, dtype=object)
