"""Replay ``future_data`` batch by batch through the monitoring loop, without Airflow.

Every batch goes through the functions the monitoring DAG's tasks call
(``steps.monitoring.loop``): store the batch, run ``monitor`` on the champion, retrain and gate
when drift is detected, advance the loop state. Before the champion can change, the served model
(the champion when the batch arrived) and the frozen initial model are scored on the batch's
labels. The timeline (CSV) and its plot (PNG) are logged to the MLflow experiment
``HealthPredict_Simulation``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
from steps.core import config, storage
from steps.monitoring import loop

TIMELINE_NAME = "timeline.csv"
PLOT_NAME = "timeline.png"


@dataclass
class SimulationResult:
    """The replay's timeline, summary and MLflow run id."""

    run_id: str
    timeline: pd.DataFrame
    summary: dict[str, object]


class ModelScorer:
    """Scores registry versions on labelled batches, loading each version once."""

    def __init__(self) -> None:
        self._models: dict[str, mlflow.pyfunc.PyFuncModel] = {}

    def score(self, version: str, frame: pd.DataFrame) -> dict[str, float]:
        """ROC-AUC and calibration (mean predicted / observed rate) on the label-eligible rows."""
        eligible = frame[frame[columns.LABEL_COLUMN].notna() & columns.is_label_eligible(frame)]
        label = columns.make_label(eligible).to_numpy()
        if eligible.empty or label.min() == label.max():
            return {"roc_auc": math.nan, "calibration": math.nan}
        if version not in self._models:
            self._models[version] = mlflow.pyfunc.load_model(loop.model_uri(version))
        inputs = eligible.drop(columns=[columns.LABEL_COLUMN])
        scores = self._models[version].predict(inputs)["probability_score"].to_numpy()
        return {
            "roc_auc": float(roc_auc_score(label, scores)),
            "calibration": float(scores.mean() / label.mean()),
        }


def summarize(timeline: pd.DataFrame) -> dict[str, object]:
    """Mean ROC-AUC of served vs frozen model on the second half of the batches, retrainings."""
    if timeline.empty:
        return {"batches": 0, "retrainings": 0}
    second_half = timeline[timeline["batch_index"] >= timeline["batch_index"].median()]
    served = float(second_half["served_roc_auc"].mean())
    frozen = float(second_half["frozen_roc_auc"].mean())
    return {
        "batches": len(timeline),
        "second_half_batches": len(second_half),
        "served_roc_auc_second_half": round(served, 4),
        "frozen_roc_auc_second_half": round(frozen, 4),
        "roc_auc_gain_second_half": round(served - frozen, 4),
        "retrainings": int(timeline["retrained"].sum()),
        "promotions": int((timeline["champion_after"] != timeline["champion_version"]).sum()),
        "drift_decisions": int((timeline["decision"] == "DRIFT_DETECTED").sum()),
    }


def plot_timeline(timeline: pd.DataFrame, path: Path) -> Path:
    """A two-panel PNG: ROC-AUC and calibration of served vs frozen model, drift share, retrains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (auc_ax, cal_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    x = timeline["batch_index"]
    auc_ax.plot(x, timeline["served_roc_auc"], marker="o", label="served (loop)")
    auc_ax.plot(x, timeline["frozen_roc_auc"], marker="s", linestyle="--", label="frozen initial")
    for index in x[timeline["retrained"]]:
        auc_ax.axvline(index + 0.5, color="grey", alpha=0.3)
    auc_ax.set_ylabel("ROC-AUC on the batch")
    auc_ax.set_title("Served vs frozen model (grey lines: retrained after the batch)")
    auc_ax.legend()
    cal_ax.plot(x, timeline["served_calibration"], marker="o", label="served: predicted/observed")
    cal_ax.plot(x, timeline["frozen_calibration"], marker="s", linestyle="--", label="frozen")
    cal_ax.axhline(1.0, color="black", linewidth=0.8)
    cal_ax.bar(x, timeline["drift_share"], alpha=0.25, color="tab:red", label="drift share")
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
    thresholds: dict[str, float] | None,
    training: dict[str, object],
    gate: dict[str, float] | None,
    data_uri: str | None,
) -> tuple[loop.LoopState, dict[str, object] | None]:
    """One pass of the loop over the next batch; None when future_data is exhausted."""
    started = time.perf_counter()
    batch = loop.prepare_batch(state.next_batch_index, state.batch_size, data_uri)
    if batch is None:
        return state, None
    champion = loop.champion_version()
    frame = columns.read_encounters_csv(storage.read_bytes(batch.uri))
    served = scorer.score(champion, frame)
    frozen = scorer.score(state.initial_champion_version, frame)
    summary = loop.run_monitor(batch, state, champion, thresholds, data_uri)
    outcome = None
    if loop.should_retrain(summary["decision"], state):
        outcome = loop.retrain_for_batch(state, batch, training, gate, data_uri)
    champion_after = loop.champion_version()
    retraining = None
    if outcome is not None:
        retraining = {
            "train_run_id": outcome.train_run_id,
            "champion_before": champion,
            "champion_after": champion_after,
        }
    state = loop.advance(state, batch.index, champion_after, retraining, data_uri)
    loop.tag_monitor_run(
        summary["monitor_run_id"],
        {
            "loop_id": state.loop_id,
            "batch_index": batch.index,
            "action": "retrained" if retraining else "none",
            "champion_after": champion_after,
        },
    )
    observed = columns.make_label(frame[columns.is_label_eligible(frame)]).mean()
    return state, {
        "batch_index": batch.index,
        "rows": batch.rows,
        "labelled_rows": batch.labelled_rows,
        "observed_rate": float(observed),
        "drift_share": summary.get("drift_share"),
        "decision": summary["decision"],
        "retrained": retraining is not None,
        "champion_version": champion,
        "champion_after": champion_after,
        "served_roc_auc": served["roc_auc"],
        "served_calibration": served["calibration"],
        "frozen_roc_auc": frozen["roc_auc"],
        "frozen_calibration": frozen["calibration"],
        "monitor_run_id": summary["monitor_run_id"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def simulate(
    data_uri: str | None = None,
    batch_size: int = 5000,
    max_batches: int = 0,
    trials_per_family: int = 4,
    families: str = "lightgbm",
    reset: bool = True,
    thresholds: dict[str, float] | None = None,
    gate: dict[str, float] | None = None,
) -> SimulationResult:
    """Replay up to ``max_batches`` batches (0 = all) and log the timeline to MLflow.

    Needs a champion (run ``train`` and ``register`` first): it is the frozen initial model the
    loop is compared with. ``reset=False`` resumes a loop where it stopped.
    """
    data_uri = data_uri or config.data_uri()
    training = {"families": families, "trials_per_family": int(trials_per_family)}
    if reset:
        loop.reset(data_uri)
    state = loop.start_or_resume(batch_size, data_uri)
    if state.initial_champion_version is None:
        raise RuntimeError("no champion model: run the train and register entry points first")
    future_rows = len(
        columns.read_encounters_csv(
            storage.read_bytes(storage.join(data_uri, config.FUTURE_DATA_KEY))
        )
    )
    remaining = max(math.ceil(future_rows / state.batch_size) - state.next_batch_index, 0)
    total = min(remaining, max_batches) if max_batches > 0 else remaining

    config.ensure_experiment(config.SIMULATION_EXPERIMENT)
    scorer = ModelScorer()
    rows: list[dict[str, object]] = []
    with mlflow.start_run() as run:
        mlflow.log_params(
            {
                "data_uri": data_uri,
                "batch_size": state.batch_size,
                "max_batches": max_batches,
                "families": families,
                "trials_per_family": trials_per_family,
                "loop_id": state.loop_id,
                "initial_champion_version": state.initial_champion_version,
            }
        )
        with tqdm(total=total, desc="replay", unit="batch") as progress:
            for _ in range(total):
                state, row = _handle_batch(state, scorer, thresholds, training, gate, data_uri)
                if row is None:
                    break
                rows.append(row)
                step = int(row["batch_index"])
                mlflow.log_metrics(
                    {
                        name: float(row[name])
                        for name in ("served_roc_auc", "frozen_roc_auc", "drift_share")
                        if row[name] is not None and not np.isnan(float(row[name]))
                    },
                    step=step,
                )
                progress.set_postfix(decision=row["decision"], champion=row["champion_after"])
                progress.update()
        timeline = pd.DataFrame(rows)
        summary = summarize(timeline)
        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        with tempfile.TemporaryDirectory() as tmp:
            timeline.to_csv(Path(tmp) / TIMELINE_NAME, index=False)
            mlflow.log_artifact(str(Path(tmp) / TIMELINE_NAME))
            if not timeline.empty:
                mlflow.log_artifact(str(plot_timeline(timeline, Path(tmp) / PLOT_NAME)))
    return SimulationResult(run_id=run.info.run_id, timeline=timeline, summary=summary)


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.simulate`` (the ``simulate`` entry point)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--batch-size", type=float, default=5000)
    parser.add_argument("--max-batches", type=float, default=0)
    parser.add_argument("--trials-per-family", type=float, default=4)
    parser.add_argument("--families", default="lightgbm")
    parser.add_argument("--reset", default="true", choices=["true", "false"])
    args = parser.parse_args(argv)
    result = simulate(
        data_uri=args.data_uri or None,
        batch_size=int(args.batch_size),
        max_batches=int(args.max_batches),
        trials_per_family=int(args.trials_per_family),
        families=args.families,
        reset=args.reset == "true",
    )
    print(json.dumps({"simulate_run_id": result.run_id, **result.summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
