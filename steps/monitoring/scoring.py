"""Scores from the monitored model, cached per (model, data file) so the reference is scored once.

The reference and the baseline are the same files batch after batch, so their scores are kept in
the data store under ``config.SCORE_CACHE_DIR/<model id>/<file sha256>.csv`` (and in memory for
the life of the process); only the new batch is scored on every call.
"""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PyFuncModel

from custom_pyfunc import columns, features
from steps.core import config, storage, tracking
from steps.monitoring.inputs import EncounterTable, MonitorInputError

SCORE_COLUMNS = ("prediction", "probability_score")
# The served model refuses larger requests (custom_pyfunc.validation.DEFAULT_MAX_BATCH_ROWS).
SCORING_CHUNK_ROWS = 5_000

_models: dict[str, PyFuncModel] = {}
_scores: dict[tuple[str, str], pd.DataFrame] = {}


def load_model(model_uri: str) -> PyFuncModel:
    """The pyfunc at ``model_uri`` (kept for the process; aliases are resolved on every call)."""
    config.configure_mlflow()
    try:
        resolved = tracking.pin_alias(model_uri)
        if resolved not in _models:
            _models[resolved] = mlflow.pyfunc.load_model(resolved)
    except Exception as exc:  # registry, store and download errors all mean "unreachable"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise MonitorInputError(
            f"model {model_uri} cannot be loaded ({type(exc).__name__}: {reason})"
        ) from exc
    return _models[resolved]


def model_id(model: PyFuncModel) -> str:
    """A stable identity of the logged model (its MLflow model UUID)."""
    return model.metadata.model_uuid


def score(model: PyFuncModel, frame: pd.DataFrame) -> pd.DataFrame:
    """``prediction`` and ``probability_score`` for every row of ``frame`` (same index)."""
    inputs = frame[list(columns.INPUT_COLUMNS)]
    parts = []
    for start in range(0, len(inputs), SCORING_CHUNK_ROWS):
        chunk = inputs.iloc[start : start + SCORING_CHUNK_ROWS]
        try:
            output = model.predict(chunk)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise MonitorInputError(f"the model refused the rows: {message}") from exc
        parts.append(pd.DataFrame(output, columns=list(SCORE_COLUMNS)).set_axis(chunk.index))
    scores = pd.concat(parts)
    probability = scores["probability_score"].to_numpy(dtype="float64")
    if not np.all((probability >= 0) & (probability <= 1)):
        raise MonitorInputError("the model returned a probability_score outside [0, 1]")
    return scores.astype({"prediction": "int64", "probability_score": "float64"})


def cached_scores(
    model: PyFuncModel, table: EncounterTable, rows: pd.Index, data_uri: str
) -> pd.DataFrame:
    """Scores of ``table.frame.loc[rows]``, computed once per model and file content."""
    key = (model_id(model), table.sha256)
    if key in _scores and _scores[key].index.equals(rows):
        return _scores[key]
    cache_uri = storage.join(data_uri, config.SCORE_CACHE_DIR, key[0], f"{key[1]}.csv")
    cached = _read_cache(cache_uri)
    if cached is not None and cached.index.equals(rows):
        scores = cached
    else:
        scores = score(model, table.frame.loc[rows])
        storage.write_csv(scores.rename_axis("row").reset_index(), cache_uri)
    _scores[key] = scores
    return scores


def _read_cache(cache_uri: str) -> pd.DataFrame | None:
    """A cached score table, or None when absent or unreadable (it is then recomputed)."""
    if not storage.exists(cache_uri):
        return None
    try:
        cached = pd.read_csv(io.BytesIO(storage.read_bytes(cache_uri)), index_col="row")
    except (ValueError, storage.StorageError):
        return None
    if list(cached.columns) != list(SCORE_COLUMNS):
        return None
    return cached.rename_axis(None)


RELIANCE_SAMPLE_ROWS = 1_000


def column_reliance(
    model: PyFuncModel, table: EncounterTable, rows: pd.Index, data_uri: str
) -> dict[str, float]:
    """How much the model relies on each input column, as shares summing to 1.

    Permutation reliance on a fixed sample of ``table``: the mean absolute change of
    ``probability_score`` when the column's values are shuffled across rows (no labels needed).
    Keyed like :func:`cached_scores`; ``weight`` is reported as ``features.WEIGHT_RECORDED``, the
    cleaned column the drift report compares.
    """
    cache_uri = storage.join(
        data_uri, config.SCORE_CACHE_DIR, model_id(model), f"{table.sha256}_reliance.json"
    )
    if storage.exists(cache_uri):
        return storage.read_json(cache_uri)
    sample = (
        table.frame.loc[rows]
        .sample(n=min(RELIANCE_SAMPLE_ROWS, len(rows)), random_state=0)
        .reset_index(drop=True)
    )
    rng = np.random.default_rng(0)
    shuffled_copies = []
    for name in columns.INPUT_COLUMNS:
        copy = sample.copy()
        copy[name] = sample[name].to_numpy()[rng.permutation(len(sample))]
        shuffled_copies.append(copy)
    stacked = pd.concat([sample, *shuffled_copies], ignore_index=True)
    probability = score(model, stacked)["probability_score"].to_numpy().reshape(-1, len(sample))
    change = np.abs(probability[1:] - probability[0]).mean(axis=1)
    total = change.sum() or 1.0
    names = [features.WEIGHT_RECORDED if c == "weight" else c for c in columns.INPUT_COLUMNS]
    reliance = {name: round(float(v / total), 6) for name, v in zip(names, change, strict=True)}
    storage.write_json(reliance, cache_uri)
    return reliance
