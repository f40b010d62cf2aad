"""Monitor one batch: data quality, performance, estimated performance and drift, and its alerts.

``assess(batch_uri, ...)`` returns the summary (``decision.ALERT_KINDS`` raised, each section's
figures); ``monitor`` also writes ``drift_report.html`` (batch vs the recent window),
``performance_report.html`` (matured labels vs the held-out baseline, default ``initial_test``)
and ``drift_summary.json`` to ``report_uri`` (default
``<data store>/drift_reports/<batch file stem>-<content hash>/``) and logs them with params and
metrics to an MLflow run of ``HealthPredict_Monitoring``.

Per batch: the run is tagged with the batch's sha256; re-running on the same content replaces the
report folder and adds a run (earlier runs are kept as the audit record).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd

from custom_pyfunc import columns, features, validation
from custom_pyfunc.predictor import ReadmissionPredictor
from steps.core import config, storage, tracking
from steps.core.tracking import ALERTS_TAG, BATCH_TAG, DATA_TAG_PREFIX
from steps.evaluation import patients
from steps.monitoring import decision
from steps.monitoring.decision import Thresholds, alerts, judge, labels_usable, status_line
from steps.monitoring.inputs import (
    EncounterTable,
    MonitorInputError,
    check_table,
    comparable_columns,
    contract_violations,
    has_labels,
    load_table,
)
from steps.monitoring.quality import assess_quality
from steps.monitoring.reports import (
    PREDICTION,
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
    recent_uri: str | None = None,
    model_uri: str = config.CHAMPION_MODEL_URI,
    report_uri: str | None = None,
    experiment: str = config.MONITORING_EXPERIMENT,
    baseline_uri: str | None = None,
    thresholds: Thresholds | None = None,
    labelled_uri: str | None = None,
) -> dict:
    """Assess ``batch_uri``, publish the reports and the MLflow run; returns the summary.

    Raises :class:`MonitorInputError` for unusable input (nothing is written then).
    """
    started = time.perf_counter()
    summary, drift, performance = _assess(
        batch_uri, recent_uri, model_uri, report_uri, baseline_uri, thresholds, labelled_uri
    )
    _publish(summary, drift, performance, experiment, started)
    return summary


def assess(
    batch_uri: str,
    recent_uri: str | None = None,
    model_uri: str = config.CHAMPION_MODEL_URI,
    report_uri: str | None = None,
    baseline_uri: str | None = None,
    thresholds: Thresholds | None = None,
    labelled_uri: str | None = None,
    model: InProcessModel | None = None,
) -> dict:
    """The summary of one batch, without publishing anything: ``alerts`` (sorted kinds among
    ``decision.ALERT_KINDS``, empty when fine) and the sections ``data_quality``, ``performance``,
    ``estimated_performance`` and ``drift`` (None when not computable), every figure kept.

    ``recent_uri``: the newest matured batches, comma-separated (the data-quality bounds and the
    drift reference; default: the rows the model was fitted on). Realised performance is judged
    on ``labelled_uri`` (the newest matured batch) when given, else on the batch's own labels.
    ``model``: a model held in this process instead of the one at ``model_uri`` (the replay's
    refits), with the lineage tags and alert budget it would have been logged with.
    """
    return _assess(
        batch_uri, recent_uri, model_uri, report_uri, baseline_uri, thresholds, labelled_uri, model
    )[0]


@dataclass
class InProcessModel:
    """A predictor held in this process, answering like the logged pyfunc (same input
    validation), with what the monitor reads from a logged model's run: its ``lineage`` data tags
    and ``alert_budget``. ``key`` names it (its scores are cached under it)."""

    predictor: ReadmissionPredictor
    key: str
    lineage: dict[str, str]
    alert_budget: float

    @property
    def metadata(self) -> SimpleNamespace:
        return SimpleNamespace(model_uuid=self.key, run_id=None)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.predictor.predict(validation.validate_model_input(frame))


def alert_budget(model) -> float:
    """The share of discharges the model was set to flag (its run's ``alert_budget``; the
    ``train`` default when the run records none)."""
    run_id = model.metadata.run_id
    try:
        params = mlflow.get_run(run_id).data.params if run_id else {}
    except mlflow.exceptions.MlflowException:
        params = {}
    return float(params.get("alert_budget", config.project_defaults("train")["alert_budget"]))


def _arrays(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: frame[name].to_numpy() for name in (TARGET, SCORE, PREDICTION)}


def _assess(
    batch_uri: str,
    recent_uri: str | None,
    model_uri: str,
    report_uri: str | None,
    baseline_uri: str | None,
    thresholds: Thresholds | None,
    labelled_uri: str | None,
    in_process: InProcessModel | None = None,
) -> tuple[dict, DataDriftResult, PerformanceResult | None]:
    """The summary and the Evidently results behind it. Long because it is one linear sequence:
    read, score, judge the alerting sections, compute the drift diagnostic, assemble."""
    thresholds = thresholds or Thresholds.defaults()
    data_root = config.data_uri()
    baseline_uri = baseline_uri or storage.join(data_root, config.INITIAL_TEST_KEY)

    batch = load_table(batch_uri, "batch")
    check_table(batch)
    batch_rows = _valid_rows(batch)
    model = in_process or load_model(model_uri)
    lineage = in_process.lineage if in_process else model_lineage_tags(model)
    window = "recent batches" if recent_uri else "fitted on (no recent batch given)"
    recent_uri = (
        recent_uri or fitted_on_uri(lineage) or storage.join(data_root, config.INITIAL_TRAIN_KEY)
    )
    recent_parts = [load_table(uri, "recent batch") for uri in recent_uri.split(",") if uri]
    for part in recent_parts:
        check_table(part)
    common = {
        "thresholds": thresholds.as_dict(),
        "batch_uri": batch_uri,
        "labelled_uri": labelled_uri,
        "batch_sha256": batch.sha256,
        "recent_uri": recent_uri,
        "baseline_uri": baseline_uri,
        "model_uri": model_uri,
        "model_id": model_id(model),
        "report_uri": report_uri
        or storage.join(data_root, config.DRIFT_REPORTS_DIR, batch_id(batch)),
    }
    if batch_rows.empty:
        # A feed so broken that no row can be scored: a data-quality alert, nothing else judged.
        quality = assess_quality(
            batch.frame,
            [part.frame for part in recent_parts],
            thresholds.quality_margin,
            thresholds.unit_factor,
            thresholds.z,
        )
        quality["reasons"].append("no row satisfies the model's input contract")
        sections = {
            "data_quality": {**quality, "alert": True, "rows_breaking_contract": len(batch.frame)},
            "performance": None,
            "estimated_performance": None,
            "drift": None,
        }
        return {"alerts": alerts(sections), **sections, "labelled_rows": 0, **common}, None, None
    reference = load_table(recent_uri, "recent window")
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
    )
    drifted = [c for c, result in drift.column_drift.items() if result["drifted"]]

    baseline = load_table(baseline_uri, "baseline")
    check_table(baseline)
    baseline_scores = cached_scores(model, baseline, _valid_rows(baseline), data_root)
    training = model_training_patients(lineage, model_uri)
    baseline_labelled, baseline_overlap = without_training_patients(
        _with_target(baseline, baseline_scores), baseline, training
    )
    if baseline_labelled.empty:
        raise MonitorInputError(f"baseline {baseline_uri} has no labelled rows")
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
    # Death/hospice rows never get a label and are never flagged for follow-up.
    eligible = batch_scores[columns.is_label_eligible(batch.frame.loc[batch_rows]).to_numpy()]
    positives = int(batch_labelled[TARGET].sum())
    usable = labels_usable(positives, len(batch_labelled) - positives)
    judged = judge(
        batch.frame,
        eligible[PREDICTION].to_numpy(),
        eligible[SCORE].to_numpy(),
        [part.frame for part in recent_parts],
        _arrays(batch_labelled) if usable else None,
        _arrays(baseline_labelled),
        in_process.alert_budget if in_process else alert_budget(model),
        thresholds,
    )
    performance_result = performance_report(batch_labelled, baseline_labelled) if usable else None
    judged["performance"].update(rows=len(batch_labelled), positives=positives)

    weighted = round(sum(reliance.get(c, 0.0) for c in drifted), 4)
    judged["data_quality"].update(
        rows_breaking_contract=len(batch.frame) - len(batch_rows), evidently=drift.data_quality
    )
    sections = {
        **judged,
        "drift": {
            "reference": window,
            "drift_share": round(len(drifted) / len(drift_columns), 4),
            "drifted_columns": drifted,
            "reliance_weighted_drift": weighted,
            "compared_columns": len(drift_columns),
            "not_compared_columns": [c for c in features.CLEAN_COLUMNS if c not in drift_columns],
            "column_drift": drift.column_drift,
            "column_reliance": dict(sorted(reliance.items(), key=lambda kv: -kv[1])),
            "prediction_drift": drift.prediction_drift,
        },
    }
    summary = {
        "alerts": alerts(sections),
        **sections,
        "patient_overlap": {"batch": batch_overlap, "baseline": baseline_overlap},
        "labelled_rows": len(batch_labelled),
        "alert_budget": judged["performance"]["flagged_share"]["budget"],
        **common,
    }
    return summary, drift, performance_result


def _publish(
    summary: dict,
    drift: DataDriftResult | None,
    performance: PerformanceResult | None,
    experiment: str,
    started: float,
) -> None:
    """Log the MLflow run (never deleting earlier runs of the batch: they are the audit record;
    the loop reuses a batch's run by its run key); fill the report folder."""
    config.ensure_experiment(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if drift is not None:
            drift.snapshot.save_html(str(folder / DRIFT_REPORT_NAME))
        if performance is not None:
            performance.snapshot.save_html(str(folder / PERFORMANCE_REPORT_NAME))
        with mlflow.start_run(
            run_name=f"monitor-{summary['report_uri'].rstrip('/').rsplit('/', 1)[-1]}"
        ) as run:
            summary["mlflow_run_id"] = run.info.run_id
            summary["seconds"] = round(time.perf_counter() - started, 3)
            (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=2, default=str))
            mlflow.set_tags(
                {BATCH_TAG: summary["batch_sha256"], ALERTS_TAG: status_line(summary["alerts"])}
            )
            config.log_resolved_params(_params(summary))
            mlflow.log_metrics(_metrics(summary))
            mlflow.log_artifacts(tmp, artifact_path="drift_report")
        _replace_folder(summary["report_uri"], folder)


def _params(summary: dict) -> dict[str, object]:
    return {
        "batch_uri": summary["batch_uri"],
        "recent_uri": summary["recent_uri"],
        "baseline_uri": summary["baseline_uri"],
        "model_uri": summary["model_uri"],
        "model_id": summary["model_id"],
        "report_uri": summary["report_uri"],
        "labelled_uri": summary["labelled_uri"] or "",
        **summary["thresholds"],
    }


def _metrics(summary: dict) -> dict[str, float]:
    quality, drift, performance = (summary[k] for k in ("data_quality", "drift", "performance"))
    metrics = {f"alert.{kind}": float(kind in summary["alerts"]) for kind in decision.ALERT_KINDS}
    metrics.update({
        "rows": quality["rows"],
        "labelled_rows": summary["labelled_rows"],
        "rows_breaking_contract": quality["rows_breaking_contract"],
        "quality_reasons": len(quality["reasons"]),
        "seconds": summary["seconds"],
    })  # fmt: skip
    if drift:
        metrics["drift_share"] = drift["drift_share"]
        metrics["reliance_weighted_drift"] = drift["reliance_weighted_drift"]
        metrics["prediction_psi"] = drift["prediction_drift"]["score"]
        metrics.update({f"drift_score.{c}": r["score"] for c, r in drift["column_drift"].items()})
    if performance and performance["flagged_share"]["share"] is not None:
        metrics["flagged_share"] = performance["flagged_share"]["share"]
    if performance and "roc_auc" in performance:
        metrics["roc_auc"] = performance["roc_auc"]["batch"]
        metrics["baseline_roc_auc"] = performance["roc_auc"]["baseline"]
        metrics["observed_over_expected"] = performance["calibration"]["observed_over_expected"]
    if summary["estimated_performance"]:
        metrics["estimated_roc_auc"] = summary["estimated_performance"]["roc_auc"]
    for side, overlap in summary["patient_overlap"].items():
        if "rows_excluded" in overlap:
            metrics[f"{side}_rows_excluded_patient_overlap"] = overlap["rows_excluded"]
    return {k: float(v) for k, v in metrics.items()}


def _replace_folder(report_uri: str, folder: Path) -> None:
    """Make ``report_uri`` hold exactly the files of ``folder``; the summary is written last."""
    fresh = {path.name for path in folder.iterdir()}
    for uri in storage.list_keys(report_uri):
        if PurePosixPath(uri).name not in fresh:
            storage.delete(uri)
    for name in [*sorted(fresh - {SUMMARY_NAME}), SUMMARY_NAME]:
        storage.write_bytes(storage.join(report_uri, name), (folder / name).read_bytes())
