"""The Evidently 0.7 reports behind a monitoring decision, and the numbers read back from them.

Two reports, each one HTML file:

* data drift (batch vs reference): ``ValueDrift`` on every cleaned input column (Evidently's
  default method per column type and size), ``ValueDrift`` with PSI on ``probability_score``
  (prediction drift), and data quality: ``MissingValueCount`` per column, ``OutListValueCount``
  for categories never seen in the reference or the contract, ``OutRangeValueCount`` for counts
  outside the contract's ranges;
* model performance (labelled batch rows vs the labelled held-out baseline): ``RocAuc``,
  ``Precision``, ``Recall`` and ``MeanValue`` of the score and of the label (calibration in the
  large: mean predicted vs observed rate).

The HTML holds aggregates only (histograms, counts, metric values), never a row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import (
    MeanValue,
    MissingValueCount,
    OutListValueCount,
    OutRangeValueCount,
    Precision,
    Recall,
    RocAuc,
    ValueDrift,
)
from sklearn.exceptions import UndefinedMetricWarning

from custom_pyfunc import columns, features

SCORE = "probability_score"
PREDICTION = "prediction"
TARGET = "target"
PREDICTION_DRIFT_METHOD = "psi"
# The conventional "moderate shift" PSI; prediction drift is a diagnostic, never an alert.
PREDICTION_DRIFT_PSI = 0.1
# Jensen-Shannon distance between a 5,000-row batch and the reference is 0.16-0.18 for the ICD-9
# columns even when both are drawn from the same data (sparse categories), above Evidently's
# default 0.1; 0.25 clears that noise (docs/monitoring.md).
HIGH_CARDINALITY_LEVELS = 100
HIGH_CARDINALITY_JS_THRESHOLD = 0.25


@dataclass
class DataDriftResult:
    """Per-column drift, prediction drift and data quality of one batch against the reference."""

    snapshot: Snapshot
    column_drift: dict[str, dict]
    prediction_drift: dict
    data_quality: dict


@dataclass
class PerformanceResult:
    """Classification metrics of the labelled batch rows and of the baseline."""

    snapshot: Snapshot
    batch: dict[str, float]
    baseline: dict[str, float]


def monitoring_frame(cleaned: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``cleaned`` (``features.clean_data`` output) with the model's score and 0/1 prediction.

    Rows without a score (they broke the input contract) keep missing values there.
    """
    frame = cleaned.copy()
    frame[SCORE] = scores[SCORE].reindex(frame.index)
    frame[PREDICTION] = scores[PREDICTION].reindex(frame.index).astype("Int64")
    return frame


def _definition(drift_columns: list[str]) -> DataDefinition:
    numeric = [c for c in drift_columns if c in features.CLEAN_NUMERIC_COLUMNS]
    categorical = [c for c in drift_columns if c not in numeric]
    return DataDefinition(numerical_columns=[*numeric, SCORE], categorical_columns=categorical)


def _known_categories(reference: pd.DataFrame, name: str) -> list[str]:
    """Values of ``name`` the reference holds, plus the contract's closed set if it has one."""
    known = set(reference[name].dropna().astype(str))
    known.update(columns.CATEGORY_VALUES.get(name) or ())
    return sorted(known)


def _quality_metrics(reference: pd.DataFrame, drift_columns: list[str]) -> list:
    metrics: list = [MissingValueCount(column=c) for c in features.CLEAN_COLUMNS]
    metrics += [
        OutListValueCount(column=c, values=_known_categories(reference, c))
        for c in features.CLEAN_CATEGORICAL_COLUMNS
        if c in drift_columns
    ]
    metrics += [
        OutRangeValueCount(column=c, left=low, right=high)
        for c, (low, high) in columns.COUNT_RANGES.items()
    ]
    return metrics


def _column_drift_metric(reference: pd.DataFrame, name: str) -> ValueDrift:
    """Evidently's default drift test for ``name``, with a noise-aware threshold when the column
    has too many categories for a batch to estimate (ICD-9 codes: ~700 values)."""
    many_levels = reference[name].nunique() > HIGH_CARDINALITY_LEVELS
    if name in features.CLEAN_CATEGORICAL_COLUMNS and many_levels:
        return ValueDrift(
            column=name, method="jensenshannon", threshold=HIGH_CARDINALITY_JS_THRESHOLD
        )
    return ValueDrift(column=name)


def data_drift_report(
    batch: pd.DataFrame,
    reference: pd.DataFrame,
    drift_columns: list[str],
) -> DataDriftResult:
    """Run the data-drift report; ``batch``/``reference`` are :func:`monitoring_frame` output."""
    drift_metrics = [_column_drift_metric(reference, c) for c in drift_columns]
    prediction_metric = ValueDrift(
        column=SCORE, method=PREDICTION_DRIFT_METHOD, threshold=PREDICTION_DRIFT_PSI
    )
    report = Report(
        [*drift_metrics, prediction_metric, *_quality_metrics(reference, drift_columns)],
        include_tests=True,
    )
    definition = _definition(drift_columns)
    snapshot = report.run(
        Dataset.from_pandas(_for_evidently(batch), data_definition=definition),
        Dataset.from_pandas(_for_evidently(reference), data_definition=definition),
    )
    drift = _value_drift_results(snapshot)
    return DataDriftResult(
        snapshot=snapshot,
        column_drift={c: drift[c] for c in drift_columns},
        prediction_drift=drift[SCORE],
        data_quality=_quality_results(snapshot, len(batch)),
    )


def _for_evidently(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing text as NaN (Evidently's quality checks trip over ``pd.NA``) and counts as float."""
    ready = frame.copy()
    for name in ready.columns:
        if ready[name].dtype == object:
            ready[name] = ready[name].where(ready[name].notna(), float("nan"))
        elif str(ready[name].dtype) == "Int64":
            ready[name] = ready[name].astype("float64")
    return ready


def _value_drift_results(snapshot: Snapshot) -> dict[str, dict]:
    """Column -> method, threshold, score and Evidently's drift verdict for each ``ValueDrift``."""
    verdicts = {
        test["metric_config"]["metric_id"]: test["status"] == "FAIL"
        for test in snapshot.dict()["tests"]
        if test["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    results = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            results[config["column"]] = {
                "method": config["method"],
                "threshold": float(config["threshold"]),
                "score": float(metric["value"]),
                "drifted": bool(verdicts[metric["id"]]),
            }
    return results


def _quality_results(snapshot: Snapshot, rows: int) -> dict:
    """Missing shares, unseen-category counts and out-of-range counts per column (batch side)."""
    quality: dict[str, dict] = {"missing_share": {}, "unseen_categories": {}, "out_of_range": {}}
    keys = {
        "MissingValueCount": "missing_share",
        "OutListValueCount": "unseen_categories",
        "OutRangeValueCount": "out_of_range",
    }
    for metric in snapshot.dict()["metrics"]:
        kind = metric["config"]["type"].rsplit(":", 1)[-1]
        if kind in keys:
            value = metric["value"]
            entry = round(value["share"], 4) if kind == "MissingValueCount" else int(value["count"])
            quality[keys[kind]][metric["config"]["column"]] = entry
    quality["unseen_categories"] = {c: n for c, n in quality["unseen_categories"].items() if n}
    quality["out_of_range"] = {c: n for c, n in quality["out_of_range"].items() if n}
    quality["rows"] = rows
    return quality


def performance_report(batch: pd.DataFrame, baseline: pd.DataFrame) -> PerformanceResult:
    """Classification metrics of ``batch`` vs ``baseline`` (scored, labelled, with ``target``):
    ROC-AUC, precision, recall, share flagged and lift at the model's threshold, calibration."""
    wanted = [SCORE, PREDICTION, TARGET]
    definition = DataDefinition(
        numerical_columns=[SCORE],
        categorical_columns=[PREDICTION, TARGET],
        # Two views of one model: scores for ROC-AUC, and the model's own 0/1 predictions (at its
        # chosen threshold) for precision/recall; with scores alone Evidently would cut at 0.5.
        classification=[
            BinaryClassification(
                name="scores", target=TARGET, prediction_probas=SCORE, pos_label=1
            ),
            BinaryClassification(
                name="labels", target=TARGET, prediction_labels=PREDICTION, pos_label=1
            ),
        ],
    )
    metrics = {
        "roc_auc": RocAuc(classification_name="scores"),
        "precision": Precision(classification_name="labels"),
        "recall": Recall(classification_name="labels"),
        "mean_predicted": MeanValue(column=SCORE),
        "observed_rate": MeanValue(column=TARGET),
    }
    with warnings.catch_warnings():
        # The score-only view also computes precision at 0.5, often with no positive prediction.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        snapshot = Report(list(metrics.values())).run(
            Dataset.from_pandas(_as_int(batch[wanted]), data_definition=definition),
            Dataset.from_pandas(_as_int(baseline[wanted]), data_definition=definition),
        )
    current, reference = {}, {}
    for name, metric in metrics.items():
        metric_id = metric.metric_id
        current[name] = float(snapshot.metric_results[metric_id].value)
        reference[name] = float(snapshot.context.get_reference_metric_result(metric_id).value)
    for values, frame in ((current, batch), (reference, baseline)):
        values["calibration_ratio"] = values["mean_predicted"] / max(values["observed_rate"], 1e-9)
        # The operating point: the share flagged at the model's alert-budget threshold, and how
        # many times the readmission rate its flags find (precision / observed rate).
        values["flag_rate"] = float(frame[PREDICTION].astype("float64").mean())
        values["lift"] = values["precision"] / max(values["observed_rate"], 1e-9)
    return PerformanceResult(snapshot=snapshot, batch=current, baseline=reference)


def _as_int(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({PREDICTION: "int64", TARGET: "int64", SCORE: "float64"})
