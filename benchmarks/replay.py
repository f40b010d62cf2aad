"""Full drift replay: does the monitoring loop beat a frozen initial model, and how fast?

On throwaway stores (a temporary folder unless ``--work-dir``): ingest + split the real data (kept
when ``--work-dir`` already holds a split), train and register the initial champion with the
loop's retraining budget (the ``simulate`` defaults of MLproject), then replay every
``future_data`` batch through ``steps.simulate`` (monitor, retrain on drift, gate, promote).
Reports the mean ROC-AUC of the served model and of the frozen initial model on the second half of
the batches, the number of retrainings and wall times. Goal: gain >= 0.02 with the replay under
15 minutes on 2 cores. The last line printed is one JSON object.

    python benchmarks/replay.py [--batch-size 5000] [--max-batches 0] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GOAL_GAIN = 0.02
GOAL_REPLAY_SECONDS = 15 * 60


def _use_stores(work_dir: Path) -> None:
    """Point the data store and MLflow at ``work_dir`` (before any step module reads them)."""
    os.environ["HEALTH_PREDICT_DATA_URI"] = str(work_dir / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir / 'mlflow.db'}"
    os.environ["HEALTH_PREDICT_ARTIFACT_URI"] = (work_dir / "mlartifacts").as_uri()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def run(work_dir: Path, batch_size: int, max_batches: int) -> dict[str, object]:
    """Set up the initial champion, replay, and return the measurements."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _use_stores(work_dir)
    from steps import simulate
    from steps.core import config, storage
    from steps.monitoring import loop

    budget = loop.project_defaults("simulate")
    started = time.perf_counter()
    if not storage.exists(storage.join(config.data_uri(), config.FUTURE_DATA_KEY)):
        loop.run_entry_point("ingest", {})
        loop.run_entry_point("split", {})
    train_run_id = loop.run_training(
        None, families=budget["families"], trials_per_family=budget["trials_per_family"]
    )
    initial = loop.run_registration(train_run_id, None)
    setup_seconds = time.perf_counter() - started

    started = time.perf_counter()
    result = simulate.simulate(
        batch_size=batch_size,
        max_batches=max_batches,
        trials_per_family=int(budget["trials_per_family"]),
        families=str(budget["families"]),
    )
    replay_seconds = time.perf_counter() - started
    summary = result.summary
    print(result.timeline.to_string(index=False), flush=True)
    return {
        **summary,
        "initial_champion_version": initial.champion_after,
        "families": budget["families"],
        "trials_per_family": budget["trials_per_family"],
        "batch_size": batch_size,
        "setup_seconds": round(setup_seconds, 1),
        "replay_seconds": round(replay_seconds, 1),
        "seconds_per_batch": round(replay_seconds / max(int(summary["batches"]), 1), 1),
        "cpus": os.cpu_count(),
        "goal_gain": GOAL_GAIN,
        "goal_replay_seconds": GOAL_REPLAY_SECONDS,
        "gain_goal_met": summary.get("roc_auc_gain_second_half", -1) >= GOAL_GAIN,
        "time_goal_met": replay_seconds < GOAL_REPLAY_SECONDS,
        "simulate_run_id": result.run_id,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--max-batches", type=int, default=0, help="0 = all batches")
    parser.add_argument("--work-dir", default="", help="keep the stores here (default: temp)")
    args = parser.parse_args(argv)
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        measured = run(Path(args.work_dir), args.batch_size, args.max_batches)
    else:
        with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
            measured = run(Path(tmp), args.batch_size, args.max_batches)
    print(json.dumps(measured, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
