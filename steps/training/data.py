"""The training data: labelled splits, their hashes and URIs, and each family's feature matrices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from custom_pyfunc import features
from custom_pyfunc.preprocessing import FeatureEncoder
from steps.core import config, storage
from steps.core.tracking import DATA_TAG_PREFIX
from steps.data import labelled
from steps.evaluation import evaluate
from steps.training.families import ENCODING

SPLIT_FILES = {
    "initial_train": config.INITIAL_TRAIN_KEY,
    "initial_validation": config.INITIAL_VALIDATION_KEY,
    "initial_test": config.INITIAL_TEST_KEY,
}
# Labelled rows to calibrate on and set the alert threshold on instead of initial_validation
# (retraining: part of the newest matured batch, ``loop.retraining_inputs``).
CALIBRATION_SPLIT = "calibration"


@dataclass
class TrainingData:
    """Engineered features and labels of the splits, and what they were read from."""

    frames: dict[str, pd.DataFrame]
    labels: dict[str, np.ndarray]
    raw: dict[str, pd.DataFrame]
    hashes: dict[str, str] = field(default_factory=dict)
    uris: dict[str, str] = field(default_factory=dict)

    def data_tags(self) -> dict[str, str]:
        """:func:`data_tags` of the file sets read."""
        return data_tags(self.hashes, self.uris)


def data_tags(hashes: dict[str, str], uris: dict[str, str]) -> dict[str, str]:
    """Tags naming each file set's sha256 and its files (comma-separated URIs), so that
    ``register`` and ``monitor`` can keep their data patient-disjoint from them and ``monitor``
    can compare batches with what the model was fitted on."""
    return {
        **{f"{DATA_TAG_PREFIX}{name}_sha256": h for name, h in hashes.items()},
        **{f"{DATA_TAG_PREFIX}{name}_uri": u for name, u in uris.items()},
    }


def load_training_data(
    data_uri: str, target: str, extra_train_uri: str = "", calibration_uri: str = ""
) -> TrainingData:
    """Read the three initial splits (plus optional extra training data and calibration rows,
    :data:`CALIBRATION_SPLIT`) and engineer features."""
    root = data_uri or config.data_uri()
    raw, hashes, uris = {}, {}, {}
    for name, key in SPLIT_FILES.items():
        split_file = labelled.read_labelled(storage.join(root, key))
        raw[name], hashes[name] = split_file.frame, split_file.sha256
        uris[name] = ",".join(split_file.uris)
    if extra_train_uri:
        extra = labelled.read_labelled(extra_train_uri)
        hashes["extra_train"], uris["extra_train"] = extra.sha256, ",".join(extra.uris)
        raw["initial_train"] = pd.concat([raw["initial_train"], extra.frame], ignore_index=True)
    if calibration_uri:
        calibration = labelled.read_labelled(calibration_uri)
        raw[CALIBRATION_SPLIT] = calibration.frame
        hashes[CALIBRATION_SPLIT] = calibration.sha256
        uris[CALIBRATION_SPLIT] = ",".join(calibration.uris)
    frames, labels = {}, {}
    for name, frame in raw.items():
        raw[name], labels[name] = evaluate.labelled_rows(frame, target)
        frames[name] = features.engineer_features(features.clean_data(raw[name]))
    return TrainingData(frames=frames, labels=labels, raw=raw, hashes=hashes, uris=uris)


def feature_matrices(data: TrainingData, families: list[str], seed: int) -> dict[str, tuple]:
    """Per encoding needed by ``families``: (X_train, y_train, X_validation, y_validation)."""
    matrices = {}
    y_train, y_val = data.labels["initial_train"], data.labels["initial_validation"]
    for encoding in sorted({ENCODING[f] for f in families}):
        encoder = FeatureEncoder(encoding=encoding, random_state=seed)
        x_train = encoder.fit_transform(data.frames["initial_train"], y_train)
        x_val = encoder.transform(data.frames["initial_validation"])
        matrices[encoding] = (x_train, y_train, x_val, y_val)
    return matrices


def log_dataset_inputs(data: TrainingData, model_id: str | None = None) -> dict[str, Any]:
    """Log the rows trained, tuned and tested on as dataset inputs of the active run (and of the
    logged model ``model_id``); returns the datasets by split name."""
    datasets = {}
    for name, frame in data.raw.items():
        parts = [name, "extra_train"] if name == "initial_train" else [name]
        parts = [part for part in parts if part in data.hashes]
        datasets[name] = labelled.log_dataset(
            frame,
            name,
            ",".join(data.uris[part] for part in parts),
            "+".join(data.hashes[part] for part in parts),
            model_id,
        )
    return datasets
