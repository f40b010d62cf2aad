"""Monitor one batch: Evidently drift and performance reports, and a retrain-or-not decision.

``monitor(batch_uri, ...)`` compares the batch with the reference data (default: the rows the model
was fitted on, ``initial_train`` plus any retraining rows, as its training run recorded them) and,
when the batch carries labels, the model's performance on it with its performance on a
held-out baseline (default: ``initial_test``). It writes ``drift_report.html``,
``performance_report.html`` (labelled batches) and ``drift_summary.json`` to ``report_uri``
(default ``<data store>/drift_reports/<batch file stem>-<content hash>/``), logs them with params
and metrics to an MLflow run of ``HealthPredict_Monitoring`` and returns the summary.

Per batch: the run is tagged with the batch's sha256; re-running on the same content replaces the
report folder and adds a run (earlier runs are kept as the audit record).

CLI: ``python -m steps.monitor --batch-uri ...``; the last stdout line is ``DRIFT_DETECTED`` or
``NO_DRIFT``. Bad input (empty batch, missing columns, no overlap with the reference, a model that
cannot be loaded) prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path, PurePosixPath

import mlflow
import pandas as pd

from custom_pyfunc import columns, features
from steps.core import config, storage, tracking
from steps.core.tracking import BATCH_TAG, DATA_TAG_PREFIX, DECISION_TAG
from steps.evaluation import patients
from steps.monitoring import cbpe
from steps.monitoring.decision import Thresholds, all_reasons, decision, labels_usable
from steps.monitoring.inputs import (
    EncounterTable,
    MonitorInputError,
    check_table,
    comparable_columns,
    contract_violations,
    has_labels,
    load_table,
)
from steps.monitoring.reports import (
    SCORE,
    TARGET,
    DataDriftResult,
    PerformanceResult,
    data_drift_report,
    monitoring_frame,
    performance_report,
)
from steps.monitoring.scoring import cached_scores, column_reliance, load_model, model_id, score

SUMMARY_NAME = "drift_summary.json"


DRIFT_REPORT_NAME = "drift_report.html"


PERFORMANCE_REPORT_NAME = "performance_report.html"


# The training run's file sets the model was fitted on: the default drift reference. A retrained
# champion is compared with the data it learnt from, not with the initial data it has moved past.
FITTED_ON = ("initial_train", "extra_train")


# Evidently's dataset-level rule, reported for reference (not used in the decision).
EVIDENTLY_DATASET_DRIFT_SHARE = 0.5


def batch_id(batch: EncounterTable) -> str:
    """``<file stem>-<first 12 hex digits of the content sha256>``: the batch's report folder."""
    return f"{PurePosixPath(batch.uri).stem}-{batch.sha256[:12]}"


def _valid_rows(table: EncounterTable) -> pd.Index:
    """Rows of ``table`` that satisfy the model's input contract."""
    return table.frame.index[~contract_violations(table.frame).any(axis=1).to_numpy()]


def _with_target(table: EncounterTable, scores: pd.DataFrame) -> pd.DataFrame:
    """Scored, labelled rows of ``table`` with the 0/1 30-day label as ``target``."""
    labelled = scores.index.intersection(table.frame.index[has_labels(table.frame).to_numpy()])
    frame = scores.loc[labelled].copy()
    if labelled.empty:
        return frame.assign(**{TARGET: pd.Series(dtype="int64")})
    frame[TARGET] = columns.make_label(table.frame.loc[labelled]).astype("int64")
    return frame


def model_lineage_tags(model) -> dict[str, str]:
    """The tags of the run that logged ``model`` and of its parents (empty when unknown)."""
    run_id = model.metadata.run_id
    if not run_id:
        return {}
    try:
        return tracking.lineage_tags(run_id)
    except mlflow.exceptions.MlflowException:
        return {}


def fitted_on_uri(tags: dict[str, str]) -> str | None:
    """The files the model was fitted on (``initial_train`` plus any retraining rows), comma-
    separated, from its lineage ``tags``; None when they record none."""
    uris = [tags.get(f"{DATA_TAG_PREFIX}{name}{patients.URI_TAG_SUFFIX}") for name in FITTED_ON]
    return ",".join(uri for uri in uris if uri) or None


def model_training_patients(tags: dict[str, str], model_uri: str) -> set[str] | None:
    """Patients of the data the model was trained, calibrated or tuned on, from its lineage
    ``tags`` (None when they cannot tell)."""
    try:
        return patients.training_patients(tags)
    except patients.PatientOverlapError as exc:
        raise MonitorInputError(f"model {model_uri}: {exc}") from None


def without_training_patients(
    scored: pd.DataFrame, table: EncounterTable, training: set[str] | None
) -> tuple[pd.DataFrame, dict]:
    """The labelled, scored rows of ``table`` whose patient the model never saw in training
    (asserted), and the counts (never an identifier)."""
    if training is None or patients.PATIENT_COLUMN not in table.frame.columns:
        return scored, {"check": "not possible: no training data or no patient column"}
    rows = table.frame.loc[scored.index]
    try:
        disjoint = patients.disjoint_rows(rows, training)
    except patients.PatientOverlapError as exc:
        raise MonitorInputError(f"{table.uri}: {exc}") from None
    counts = {"rows_excluded": disjoint.rows_excluded,
              "patients_excluded": disjoint.patients_excluded}  # fmt: skip
    return scored[disjoint.keep], {"check": "passed", **counts}


def monitor(
    batch_uri: str,
    reference_uri: str | None = None,
    model_uri: str = config.CHAMPION_MODEL_URI,
    report_uri: str | None = None,
    experiment: str = config.MONITORING_EXPERIMENT,
    baseline_uri: str | None = None,
    thresholds: Thresholds | None = None,
    labelled_uri: str | None = None,
) -> dict:
    """Compare ``batch_uri`` with the reference, decide, publish the reports; returns the summary.

    Raises :class:`MonitorInputError` for unusable input (nothing is written then).
    """
    started = time.perf_counter()
    summary, drift, performance = assess(
        batch_uri, reference_uri, model_uri, report_uri, baseline_uri, thresholds, labelled_uri
    )
    _publish(summary, drift, performance, experiment, started)
    return summary


def assess(
    batch_uri: str,
    reference_uri: str | None = None,
    model_uri: str = config.CHAMPION_MODEL_URI,
    report_uri: str | None = None,
    baseline_uri: str | None = None,
    thresholds: Thresholds | None = None,
    labelled_uri: str | None = None,
) -> tuple[dict, DataDriftResult, PerformanceResult | None]:
    """The summary and Evidently results for one batch, without publishing anything.

    Realised performance is judged on ``labelled_uri`` (the newest batch whose labels have
    matured) when given, else on the batch's own labels; drift and CBPE on the batch's inputs.
    Long because it is one linear sequence of stages (to be split into the quality and
    performance modules under way).
    """
    thresholds = thresholds or Thresholds()
    data_root = config.data_uri()
    baseline_uri = baseline_uri or storage.join(data_root, config.INITIAL_TEST_KEY)

    batch = load_table(batch_uri, "batch")
    check_table(batch)
    batch_rows = _valid_rows(batch)
    if batch_rows.empty:
        raise MonitorInputError(f"batch {batch_uri}: no row satisfies the model's input contract")
    model = load_model(model_uri)
    lineage = model_lineage_tags(model)
    reference_uri = (
        reference_uri or fitted_on_uri(lineage) or storage.join(data_root, config.INITIAL_TRAIN_KEY)
    )
    reference = load_table(reference_uri, "reference")
    check_table(reference)
    batch_clean = features.clean_data(batch.frame)
    reference_clean = features.clean_data(reference.frame)
    drift_columns = comparable_columns(batch_clean, reference_clean)

    batch_scores = score(model, batch.frame.loc[batch_rows])
    reference_rows = _valid_rows(reference)
    reference_scores = cached_scores(model, reference, reference_rows, data_root)
    reliance = column_reliance(model, reference, reference_rows, data_root)
    drift = data_drift_report(
        monitoring_frame(batch_clean, batch_scores),
        monitoring_frame(reference_clean, reference_scores),
        drift_columns,
        thresholds.prediction_drift_psi,
    )
    drifted = [c for c, result in drift.column_drift.items() if result["drifted"]]
    important_drift_share = round(sum(reliance.get(c, 0.0) for c in drifted), 4)

    baseline = load_table(baseline_uri, "baseline")
    check_table(baseline)
    baseline_scores = cached_scores(model, baseline, _valid_rows(baseline), data_root)
    training = model_training_patients(lineage, model_uri)
    baseline_labelled, baseline_overlap = without_training_patients(
        _with_target(baseline, baseline_scores), baseline, training
    )
    if baseline_labelled.empty:
        raise MonitorInputError(f"baseline {baseline_uri} has no labelled rows")
    # Death/hospice rows never get a label: CBPE estimates on the rows that can have one.
    eligible = columns.is_label_eligible(batch.frame.loc[batch_rows]).to_numpy()
    estimated = {
        "batch": cbpe.estimate(batch_scores.loc[eligible, SCORE].to_numpy()),
        "baseline": cbpe.estimate(baseline_labelled[SCORE].to_numpy()),
    }
    if labelled_uri:
        matured = load_table(labelled_uri, "labelled batch")
        check_table(matured)
        matured_rows = _valid_rows(matured)
        batch_labelled, batch_overlap = without_training_patients(
            _with_target(matured, score(model, matured.frame.loc[matured_rows])), matured, training
        )
    else:
        batch_labelled, batch_overlap = without_training_patients(
            _with_target(batch, batch_scores), batch, training
        )
    positives = int(batch_labelled[TARGET].sum())
    performance = None
    if labels_usable(positives, len(batch_labelled) - positives):
        performance = performance_report(batch_labelled, baseline_labelled)
    reasons = all_reasons(
        {
            "performance": (
                {"batch": performance.batch, "baseline": performance.baseline}
                if performance
                else None
            ),
            "prediction_drift": drift.prediction_drift,
            "important_drift_share": important_drift_share,
            "estimated_performance": estimated,
        },
        thresholds,
    )

    drift_share = len(drifted) / len(drift_columns)
    summary = {
        "decision": decision(reasons),
        "reasons": reasons,
        "decision_basis": "matured labels + drift" if performance else "drift",
        "dataset_drift": drift_share >= EVIDENTLY_DATASET_DRIFT_SHARE,
        "drift_share": round(drift_share, 4),
        "drifted_columns": drifted,
        "compared_columns": len(drift_columns),
        "not_compared_columns": [c for c in features.CLEAN_COLUMNS if c not in drift_columns],
        "important_drift_share": important_drift_share,
        "column_drift": drift.column_drift,
        "column_reliance": dict(sorted(reliance.items(), key=lambda kv: -kv[1])),
        "prediction_drift": drift.prediction_drift,
        "performance": (
            {"batch": performance.batch, "baseline": performance.baseline} if performance else None
        ),
        "estimated_performance": estimated,
        "patient_overlap": {"batch": batch_overlap, "baseline": baseline_overlap},
        "data_quality": {
            **drift.data_quality,
            "rows_breaking_contract": len(batch.frame) - len(batch_rows),
            "labelled_rows": len(batch_labelled),
        },
        "thresholds": thresholds.as_dict(),
        "batch_uri": batch_uri,
        "labelled_uri": labelled_uri,
        "batch_sha256": batch.sha256,
        "reference_uri": reference_uri,
        "baseline_uri": baseline_uri,
        "model_uri": model_uri,
        "model_id": model_id(model),
        "report_uri": report_uri
        or storage.join(data_root, config.DRIFT_REPORTS_DIR, batch_id(batch)),
    }
    return summary, drift, performance


def _publish(
    summary: dict,
    drift: DataDriftResult,
    performance: PerformanceResult | None,
    experiment: str,
    started: float,
) -> None:
    """Log the MLflow run (never deleting earlier runs of the batch: they are the audit record;
    the loop reuses a batch's run by its run key); fill the report folder."""
    config.ensure_experiment(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drift.snapshot.save_html(str(folder / DRIFT_REPORT_NAME))
        if performance is not None:
            performance.snapshot.save_html(str(folder / PERFORMANCE_REPORT_NAME))
        with mlflow.start_run(
            run_name=f"monitor-{summary['report_uri'].rstrip('/').rsplit('/', 1)[-1]}"
        ) as run:
            summary["mlflow_run_id"] = run.info.run_id
            summary["seconds"] = round(time.perf_counter() - started, 3)
            (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str))
            mlflow.set_tags({BATCH_TAG: summary["batch_sha256"], DECISION_TAG: summary["decision"]})
            config.log_resolved_params(_params(summary))
            mlflow.log_metrics(_metrics(summary))
            mlflow.log_artifacts(tmp, artifact_path="drift_report")
        _replace_folder(summary["report_uri"], folder)


def _params(summary: dict) -> dict[str, object]:
    return {
        "batch_uri": summary["batch_uri"],
        "reference_uri": summary["reference_uri"],
        "baseline_uri": summary["baseline_uri"],
        "model_uri": summary["model_uri"],
        "model_id": summary["model_id"],
        "report_uri": summary["report_uri"],
        "labelled_uri": summary["labelled_uri"] or "",
        **summary["thresholds"],
    }


def _metrics(summary: dict) -> dict[str, float]:
    quality = summary["data_quality"]
    metrics = {
        "drift_share": summary["drift_share"],
        "drifted_columns": len(summary["drifted_columns"]),
        "compared_columns": summary["compared_columns"],
        "important_drift_share": summary["important_drift_share"],
        "prediction_psi": summary["prediction_drift"]["score"],
        "drift_detected": float(summary["decision"] == "DRIFT_DETECTED"),
        "rows": quality["rows"],
        "labelled_rows": quality["labelled_rows"],
        "rows_breaking_contract": quality["rows_breaking_contract"],
        "unseen_category_values": sum(quality["unseen_categories"].values()),
        "out_of_range_values": sum(quality["out_of_range"].values()),
        "max_missing_share": max(quality["missing_share"].values(), default=0.0),
        "seconds": summary["seconds"],
    }
    metrics.update({f"drift_score.{c}": r["score"] for c, r in summary["column_drift"].items()})
    for side in ("batch", "baseline"):
        estimated = summary["estimated_performance"][side]
        metrics[f"{side}_estimated_roc_auc"] = estimated["roc_auc"]
        metrics[f"{side}_estimated_observed_rate"] = estimated["observed_rate"]
        overlap = summary["patient_overlap"][side]
        if "rows_excluded" in overlap:
            metrics[f"{side}_rows_excluded_patient_overlap"] = overlap["rows_excluded"]
    if summary["performance"]:
        for side in ("batch", "baseline"):
            metrics.update({f"{side}_{k}": v for k, v in summary["performance"][side].items()})
    return {k: float(v) for k, v in metrics.items()}


def _replace_folder(report_uri: str, folder: Path) -> None:
    """Make ``report_uri`` hold exactly the files of ``folder``; the summary is written last."""
    fresh = {path.name for path in folder.iterdir()}
    for uri in storage.list_keys(report_uri):
        if PurePosixPath(uri).name not in fresh:
            storage.delete(uri)
    for name in [*sorted(fresh - {SUMMARY_NAME}), SUMMARY_NAME]:
        storage.write_bytes(storage.join(report_uri, name), (folder / name).read_bytes())
