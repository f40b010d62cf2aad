"""The whole pipeline, end to end: ingest → split → train → register → serve → short replay.

Each stage runs as its own MLflow Project entry point (``mlflow.projects.run``), as in MLflow's
multistep example: stages hand each other MLflow run ids, and every stage's run is in MLflow.
"""

from __future__ import annotations

import json
import sys

from steps.core import config
from steps.orchestration.pipeline import run_pipeline

HELP = {
    "raw_data": "URL, CSV or zip path of the dataset (empty: HEALTH_PREDICT_RAW_DATA or UCI)",
    "data_uri": "data-store root (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "families": "model families to train, comma-separated",
    "trials_per_family": "Ray Tune trials per family",
    "time_budget_s": "wall-clock budget of the search, in seconds",
    "replay_batches": "future batches replayed through the monitoring loop (0: none)",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.main`` (the ``main`` entry point)."""
    args = config.entry_point_parser("main", __doc__, HELP).parse_args(argv)
    config.configure_logging()
    summary = run_pipeline(**vars(args))
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
