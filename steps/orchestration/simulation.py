"""Replay ``future_data`` batch by batch through the monitoring loop, without Airflow.

Every batch goes through the functions the monitoring DAG's tasks call
(``steps.orchestration.engine.handle_batch`` with the entry-point services): store the batch's
inputs, run ``monitor`` on the champion, let the retraining policy (``frozen``, ``every:K``,
``cost:C``) decide, retrain and gate on matured labels when it says so, advance the loop state.
Before the champion can change, the served model (the champion when the batch
arrived) and the frozen initial model are scored on the batch's eventual labels, for the record
only: no decision sees them. The timeline (CSV; estimated (CBPE) vs realised ROC-AUC per batch)
and its plot (PNG) are logged to the MLflow experiment ``HealthPredict_Simulation``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.evaluation import gate as gate_stats
from steps.monitoring import cbpe
from steps.orchestration import engine, loop

TIMELINE_NAME = "timeline.csv"


PLOT_NAME = "timeline.png"


@dataclass
class SimulationResult:
    """The replay's timeline, per-row scores (in memory only: they carry patient ids), summary
    and MLflow run id."""

    run_id: str
    timeline: pd.DataFrame
    scored_rows: pd.DataFrame
    summary: dict[str, object]


class ModelScorer:
    """Scores registry versions on labelled rows, loading each version once."""

    def __init__(self) -> None:
        self._models: dict[str, mlflow.pyfunc.PyFuncModel] = {}

    def probabilities(self, version: str, frame: pd.DataFrame) -> np.ndarray:
        """``probability_score`` of ``version`` for every row of ``frame``."""
        if version not in self._models:
            self._models[version] = mlflow.pyfunc.load_model(loop.model_uri(version))
        inputs = frame.drop(columns=[columns.LABEL_COLUMN])
        return self._models[version].predict(inputs)["probability_score"].to_numpy()


def evaluated_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a batch that get a 30-day label (labelled, not death/hospice)."""
    return frame[frame[columns.LABEL_COLUMN].notna() & columns.is_label_eligible(frame)]


def _quality(label: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, its standard error and calibration (mean predicted / observed rate)."""
    if label.size == 0 or label.min() == label.max():
        return {"roc_auc": math.nan, "roc_auc_se": math.nan, "calibration": math.nan}
    auc = float(roc_auc_score(label, scores))
    positives = int(label.sum())
    return {
        "roc_auc": auc,
        "roc_auc_se": cbpe.hanley_mcneil_se(auc, positives, label.size - positives),
        "calibration": float(scores.mean() / label.mean()),
    }


def first_reported_batch(label_lag_batches: int) -> int:
    """The first batch a retrained model can serve: two batches must mature, then one is handled."""
    return label_lag_batches + 2


def summarize(
    timeline: pd.DataFrame, scored_rows: pd.DataFrame, report_from: int
) -> dict[str, object]:
    """Served vs frozen ROC-AUC on the pooled rows of batches ``>= report_from`` (paired
    bootstrap 95% CI of the difference), retrainings, promotions, alerted and held batches."""
    if timeline.empty:
        return {"batches": 0, "retrainings": 0}
    summary: dict[str, object] = {
        "batches": len(timeline),
        "reported_from_batch": report_from,
        "retrainings": int(timeline["retrained"].sum()),
        "promotions": int(timeline["deployed"].sum()),
        "alerted_batches": int((timeline["alerts"] != "").sum()),
        "held_batches": int(timeline["hold"].sum()),
    }
    reported = scored_rows[scored_rows["batch_index"] >= report_from]
    if reported.empty or reported["label"].nunique() < 2:
        return summary
    comparison = gate_stats.compare_auc(
        reported["label"].to_numpy(), reported["served"].to_numpy(), reported["frozen"].to_numpy()
    )
    difference = comparison.difference
    return {
        **summary,
        "reported_rows": len(reported),
        "served_roc_auc": round(comparison.challenger.estimate, 4),
        "frozen_roc_auc": round(comparison.champion.estimate, 4),
        "roc_auc_gain": round(difference.estimate, 4),
        "roc_auc_gain_ci95": [round(difference.low, 4), round(difference.high, 4)],
    }


def trained_without_future_data(version: str) -> bool:
    """True when registry ``version`` came from a training run without extra (future) data."""

    client = mlflow.MlflowClient()
    model_version = client.get_model_version(config.MODEL_NAME, version)
    train_run_id = model_version.tags.get(tracking.TRAINING_RUN_TAG)
    if not train_run_id:
        return False
    extra = client.get_run(train_run_id).data.params.get("extra_train_uri", "")
    return extra in ("", "none")


def plot_timeline(timeline: pd.DataFrame, path: Path) -> Path:
    """A two-panel PNG: ROC-AUC and calibration of served vs frozen model, drift share, retrains,
    alerts (red dotted lines)."""
    # lazy: matplotlib (~2.4 s) must select the Agg backend before pyplot is imported
    import matplotlib

    matplotlib.use("Agg")
    # lazy: after the backend is chosen (above)
    import matplotlib.pyplot as plt

    fig, (auc_ax, cal_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    x = timeline["batch_index"]
    auc_ax.errorbar(
        x, timeline["served_roc_auc"], yerr=1.96 * timeline["served_roc_auc_se"], marker="o",
        capsize=2, label="served, realised (95% CI)",
    )  # fmt: skip
    auc_ax.plot(x, timeline["estimated_roc_auc"], marker="x", linestyle=":",
                label="served, estimated without labels (CBPE)")  # fmt: skip
    auc_ax.plot(x, timeline["frozen_roc_auc"], marker="s", linestyle="--", label="frozen initial")
    for index in x[timeline["retrained"]]:
        auc_ax.axvline(index + 0.5, color="grey", alpha=0.3)
    auc_ax.set_ylabel("ROC-AUC on the batch")
    auc_ax.set_title("Served vs frozen model (grey lines: retrained after the batch)")
    auc_ax.legend()
    cal_ax.plot(x, timeline["served_calibration"], marker="o", label="served: predicted/observed")
    cal_ax.plot(x, timeline["frozen_calibration"], marker="s", linestyle="--", label="frozen")
    cal_ax.axhline(1.0, color="black", linewidth=0.8)
    drift_share = pd.to_numeric(timeline["drift_share"], errors="coerce").fillna(0.0)
    cal_ax.bar(x, drift_share, alpha=0.25, color="tab:red", label="drift share")
    for index in x[timeline["alerts"] != ""]:
        cal_ax.axvline(index, color="tab:red", linestyle=":", alpha=0.6)
    cal_ax.set_xlabel("batch index")
    cal_ax.set_ylabel("calibration / drift share")
    cal_ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _handle_batch(
    state: loop.LoopState,
    scorer: ModelScorer,
    services: engine.EntryPointServices,
    policy: engine.Policy,
    data_uri: str | None,
) -> tuple[loop.LoopState, dict[str, object] | None, pd.DataFrame | None]:
    """One pass of the engine over the next batch; None when future_data is exhausted."""
    started = time.perf_counter()
    index = state.next_batch_index
    frame = loop.future_rows(index, state.batch_size, data_uri)
    if frame.empty:
        return state, None, None
    truth = evaluated_rows(frame)
    champion = loop.champion_version()
    # The eventual labels, for the record only (the loop sees them after the label lag).
    label = columns.make_label(truth).to_numpy()
    served_scores = scorer.probabilities(champion, truth)
    frozen_scores = scorer.probabilities(state.initial_champion_version, truth)
    served, frozen = _quality(label, served_scores), _quality(label, frozen_scores)
    matured = loop.usable_matured(state, index)
    state, record = engine.handle_batch(services, policy, state, data_uri)
    summary = record.summary or {}
    # A section the monitor could not compute is None (no usable matured labels, no scorable row).
    estimated = summary.get("estimated_performance") or {}
    drift = summary.get("drift") or {}
    row = {
        **record.row(),
        "labelled_rows": len(truth),
        "newest_matured_batch": matured[-1] if matured else None,
        "observed_rate": float(label.mean()) if label.size else math.nan,
        "drift_share": drift.get("drift_share"),
        "estimated_roc_auc": estimated.get("roc_auc", math.nan),
        "served_roc_auc": served["roc_auc"],
        "served_roc_auc_se": served["roc_auc_se"],
        "served_calibration": served["calibration"],
        "frozen_roc_auc": frozen["roc_auc"],
        "frozen_calibration": frozen["calibration"],
        "monitor_run_id": summary.get("monitor_run_id"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    scored = pd.DataFrame(
        {
            "batch_index": index,
            "patient_nbr": truth["patient_nbr"].to_numpy(),
            "label": label,
            "served": served_scores,
            "frozen": frozen_scores,
        }
    )
    return state, row, scored


def _check_initial_champion(version: str | None) -> None:
    """Refuse to replay without a champion trained on the initial data only."""
    if version is None:
        raise RuntimeError("no champion model: run the train and register entry points first")
    if not trained_without_future_data(version):
        raise RuntimeError(
            f"the champion (version {version}) was trained with future data, so it cannot be the "
            "frozen initial model: register a model trained on the initial data only (train + "
            "register without extra_train_uri) before replaying"
        )


def simulate(
    data_uri: str | None = None,
    batch_size: int = 5000,
    max_batches: int = 0,
    trials_per_family: int = 4,
    families: str = "",
    reset: bool = True,
    thresholds: dict[str, float] | None = None,
    gate: dict[str, float] | None = None,
    label_lag_batches: int | None = None,
    policy: str = "every:1",
    release: list[int] | None = None,
) -> SimulationResult:
    """Replay up to ``max_batches`` batches (0 = all) and log the timeline to MLflow.

    Needs a champion trained without future data (run ``train`` and ``register`` first): it is
    the frozen initial model the loop is compared with. ``reset=False`` resumes a loop where it
    stopped; ``reset=True`` first checks that the run can start, then archives the previous loop
    (``loop.reset``). ``label_lag_batches`` None: 30 days at the batch size
    (``loop.default_label_lag``).
    ``policy``: ``engine.parse_policy``; ``families``: ``train``'s default list. ``release``:
    held batches to release on purpose before the first batch.
    Long because it is the replay's setup, batch loop and MLflow logging in order.
    """
    data_uri = data_uri or config.data_uri()
    families = families or config.default_families()
    training = {"families": families, "trials_per_family": int(trials_per_family)}
    retraining_policy = engine.parse_policy(policy)
    # Everything that can stop the run is checked before a reset, which keeps the previous loop
    # in loop.archive_uri anyway.
    future_rows = len(
        columns.read_encounters_csv(
            storage.read_bytes(storage.join(data_uri, config.FUTURE_DATA_KEY))
        )
    )
    if label_lag_batches is not None and int(label_lag_batches) < 0:
        raise loop.LoopStateError(f"label_lag_batches must be >= 0, got {label_lag_batches}")
    if reset:
        _check_initial_champion(loop.champion_version())
    config.ensure_experiment(config.SIMULATION_EXPERIMENT)
    if reset:
        loop.reset(data_uri)
    state = engine.begin(batch_size, data_uri, label_lag_batches, release)
    services = engine.EntryPointServices(data_uri, thresholds, training, gate)
    _check_initial_champion(state.initial_champion_version)
    remaining = max(math.ceil(future_rows / state.batch_size) - state.next_batch_index, 0)
    total = min(remaining, max_batches) if max_batches > 0 else remaining

    scorer = ModelScorer()
    rows: list[dict[str, object]] = []
    scored: list[pd.DataFrame] = []
    with mlflow.start_run() as run:
        config.log_resolved_params(
            {
                "data_uri": data_uri,
                "batch_size": state.batch_size,
                "max_batches": max_batches,
                "families": families,
                "trials_per_family": trials_per_family,
                "loop_id": state.loop_id,
                "initial_champion_version": state.initial_champion_version,
                "label_lag_batches": state.label_lag_batches,
                "policy": str(retraining_policy),
            }
        )
        with tqdm(total=total, desc="replay", unit="batch") as progress:
            for _ in range(total):
                state, row, batch_scores = _handle_batch(
                    state, scorer, services, retraining_policy, data_uri
                )
                if row is None:
                    break
                rows.append(row)
                scored.append(batch_scores)
                step = int(row["batch_index"])
                mlflow.log_metrics(
                    {
                        name: float(row[name])
                        for name in (
                            "served_roc_auc",
                            "estimated_roc_auc",
                            "frozen_roc_auc",
                            "drift_share",
                        )
                        if row[name] is not None and not np.isnan(float(row[name]))
                    },
                    step=step,
                )
                progress.set_postfix(alerts=row["alerts"] or "none", champion=row["champion_after"])
                progress.update()
        timeline = pd.DataFrame(rows)
        scored_rows = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()
        summary = summarize(timeline, scored_rows, first_reported_batch(state.label_lag_batches))
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        with tempfile.TemporaryDirectory() as tmp:
            timeline.to_csv(Path(tmp) / TIMELINE_NAME, index=False)
            mlflow.log_artifact(str(Path(tmp) / TIMELINE_NAME))
            if not timeline.empty:
                mlflow.log_artifact(str(plot_timeline(timeline, Path(tmp) / PLOT_NAME)))
    return SimulationResult(
        run_id=run.info.run_id, timeline=timeline, scored_rows=scored_rows, summary=summary
    )
