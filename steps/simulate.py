"""Replay ``future_data`` batch by batch through the monitoring loop, without Airflow.

Every batch goes through the functions the monitoring DAG's tasks call
(``steps.orchestration.engine.handle_batch`` with the entry-point services): store the batch's
inputs, run ``monitor`` on the champion, let the retraining policy (``frozen``, ``every:K``,
``cost:C``) decide, retrain and gate on matured labels when it says so, advance the loop state.
A batch with a ``data_quality`` alert is held out of retraining and gating until it is released
on purpose (``--release-batches``). Before the champion can change, the served model (the
champion when the batch arrived) and the frozen initial model are scored on the batch's eventual
labels, for the record only: no decision sees them. The timeline (CSV; estimated (CBPE) vs
realised ROC-AUC per batch) and its plot (PNG) are logged to the MLflow experiment
``HealthPredict_Simulation``.
"""

from __future__ import annotations

import json
import sys

from steps.core import config
from steps.orchestration import engine
from steps.orchestration.simulation import simulate

HELP = {
    "data_uri": "data-store root with processed_data/ (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "batch_size": "future_data rows per batch (fixed for a loop)",
    "max_batches": "batches to replay in this call (0: all that remain)",
    "trials_per_family": "Ray Tune trials per family when retraining",
    "families": "model families searched when retraining, comma-separated",
    "reset": "true: forget any earlier loop first; false: resume it",
    "label_lag_batches": "batches until a batch's labels mature (empty: 30 days at batch size)",
    "policy": "retraining policy: frozen, every:K or cost:C (steps.orchestration.engine)",
    "release_batches": "held batches to release on purpose, comma-separated batch indices",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.simulate`` (the ``simulate`` entry point)."""
    parser = config.entry_point_parser(
        "simulate",
        __doc__,
        HELP,
        types={
            "label_lag_batches": config.optional_whole_number,
            "release_batches": config.whole_numbers,
        },
    )
    args = parser.parse_args(argv)
    config.configure_logging()
    try:
        engine.parse_policy(args.policy)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    result = simulate(
        data_uri=args.data_uri,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        trials_per_family=args.trials_per_family,
        families=args.families,
        reset=args.reset,
        label_lag_batches=args.label_lag_batches,
        policy=args.policy,
        release=args.release_batches,
    )
    print(json.dumps({"simulate_run_id": result.run_id, **result.summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
