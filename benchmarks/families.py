"""Which model families should retraining search? Chosen on the tuning period only.

The ``train`` entry point (every family of ``steps.training.families.FAMILIES``,
``--trials-per-family`` Ray Tune trials each) is run the way the monitoring loop retrains at the
end of the tuning period: ``initial_train`` plus the labelled ``future_data`` batches
``0 .. --tuning-batches - 3`` (``extra_train_uri``), calibrated and thresholded on the calibration
half of batch ``--tuning-batches - 2`` (``calibration_uri``, ``loop.calibration_rows``). Each
family's best model is then scored on batch ``--tuning-batches - 1`` (the last tuning batch), its
rows left out when their patient was trained or calibrated on (``register``'s exclusions).

A family list behaves like its member with the best selection metric (``train`` keeps the
family-best with the highest ``tracking.SELECTION_METRIC``, validation ROC-AUC); every single
family, the current default and all five are compared by that member's ROC-AUC on the scored
batch. The chosen list is the one with the highest ROC-AUC; lists within ``TIE`` of it count as
tied and the one with the fewest families wins (each family is another search per retraining).
No batch after the tuning period is read.

    python benchmarks/families.py --work-dir DIR [--tuning-batches 8] [--trials-per-family 2]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# The project root, so that this file runs as a script and as ``python -m benchmarks.families``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.replay import prepare_stores

TIE = 0.001


def run(work_dir: Path, args) -> dict[str, object]:
    """Train every family on the tuning period and compare the family lists."""
    prepare_stores(work_dir)
    import mlflow
    import pandas as pd

    from custom_pyfunc import columns
    from steps.core import config, storage, tracking
    from steps.evaluation import gate
    from steps.orchestration import loop
    from steps.registry import candidates
    from steps.training import families

    started = time.perf_counter()
    root = config.data_uri()
    future = columns.read_encounters_csv(
        storage.read_bytes(storage.join(root, config.FUTURE_DATA_KEY))
    )
    size, last = args.batch_size, args.tuning_batches - 1

    def batch(index: int) -> pd.DataFrame:
        return future.iloc[index * size : (index + 1) * size]

    def stored(frame: pd.DataFrame, name: str) -> str:
        return storage.write_bytes(
            storage.join(root, "family_choice", name), columns.to_raw_csv_bytes(frame)
        )

    extra = pd.concat([batch(i) for i in range(last - 1)], ignore_index=True)
    calibration_batch = batch(last - 1)
    train_run_id = tracking.run_entry_point(
        "train",
        {
            "families": ",".join(families.FAMILIES),
            "trials_per_family": args.trials_per_family,
            "extra_train_uri": stored(extra[extra[columns.LABEL_COLUMN].notna()], "extra.csv"),
            "calibration_uri": stored(
                calibration_batch[loop.calibration_rows(calibration_batch)], "calibration.csv"
            ),
        },
    )
    scored_uri = stored(batch(last), "scored.csv")
    client = mlflow.MlflowClient()
    per_family = {}
    for family_run in candidates.family_best_runs(client, train_run_id):
        tags = tracking.lineage_tags(family_run.info.run_id)
        evaluation, _ = candidates.disjoint_from_training(
            candidates.load_evaluation_data(scored_uri), tags
        )
        probability, _ = candidates.predict(
            family_run.data.tags[tracking.MODEL_URI_TAG], evaluation.frame
        )
        family = family_run.data.tags[tracking.FAMILY_TAG]
        per_family[family] = {
            "selection_metric": round(family_run.data.metrics[tracking.SELECTION_METRIC], 4),
            "roc_auc": round(gate.roc_auc(evaluation.labels, probability), 4),
            "refit_time_s": round(family_run.data.metrics.get("refit_time_s", float("nan")), 1),
            "rows": len(evaluation.labels),
        }
        print(json.dumps({family: per_family[family]}), flush=True)
    default = config.default_families()
    lists = sorted(
        {*((f,) for f in per_family), tuple(default.split(",")), tuple(families.FAMILIES)}
    )
    compared = []
    for members in lists:
        present = [f for f in members if f in per_family]
        if not present:
            continue
        kept = max(present, key=lambda f: per_family[f]["selection_metric"])
        compared.append(
            {"families": ",".join(members), "kept": kept, "roc_auc": per_family[kept]["roc_auc"]}
        )
    best = max(c["roc_auc"] for c in compared)
    tied = [c for c in compared if c["roc_auc"] >= best - TIE]
    chosen = min(tied, key=lambda c: (len(c["families"].split(",")), -c["roc_auc"]))
    return {
        "tuning_batches": [0, last],
        "trained_on_batches": [0, last - 2],
        "calibrated_on_batch": last - 1,
        "scored_batch": last,
        "trials_per_family": args.trials_per_family,
        "per_family": per_family,
        "family_lists": compared,
        "current_default": default,
        "chosen": chosen["families"],
        "seconds": round(time.perf_counter() - started, 1),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--tuning-batches", type=int, default=8)
    parser.add_argument("--trials-per-family", type=int, default=2)
    parser.add_argument("--work-dir", default="", help="keep the stores here (default: temp)")
    args = parser.parse_args(argv)
    if args.tuning_batches < 3:
        parser.error("--tuning-batches must be at least 3 (train, calibrate, score)")
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        measured = run(Path(args.work_dir).resolve(), args)
    else:
        with tempfile.TemporaryDirectory(prefix="families-") as tmp:
            measured = run(Path(tmp), args)
    print(json.dumps(measured, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
