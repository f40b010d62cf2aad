"""Train: Ray Tune HPO over the chosen model families (of five); refit, calibrate, evaluate, log.

Run layout in MLflow (experiment ``HealthPredict_Training``): the training run (role
``training``) holds one ``family_parent`` run per family with one nested ``trial`` run per Ray Tune
trial, and one ``family_best`` run per family with the logged pyfunc, its metrics and its
``evaluation/`` artifacts. Encounters that ended in death or hospice are excluded from training
and evaluation labels (no readmission was possible).

All trials of all families run in ONE Ray Tune experiment (the family is a grid dimension), so
CPUs never idle between families; each trial takes 1 CPU and the feature matrices are computed
once and shared through Ray's object store.
"""

from __future__ import annotations

import sys

from steps.core import config
from steps.training.trainer import train

HELP = {
    "data_uri": "data-store root with processed_data/ (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "families": "model families to search, comma-separated",
    "trials_per_family": "Ray Tune trials per family",
    "seed": "random seed of the search, the folds and the models",
    "time_budget_s": "guard on the whole search's wall clock, in seconds (trials decide)",
    "ray_address": "address of an existing Ray cluster (empty: a local Ray runtime)",
    "target": "label: 30d (readmitted <30 days) or any (<30 or >30)",
    "extra_train_uri": "labelled raw-format rows added to initial_train (retraining)",
    "alert_budget": "share of discharges to flag (top by risk on validation): sets the threshold",
    "calibration_uri": "labelled raw-format rows to calibrate and set the threshold on instead "
    "of validation (retraining: the newest matured batch's calibration part)",
}


def main(argv: list[str] | None = None) -> int:
    """CLI of the ``train`` entry point; options and defaults as in MLproject."""
    parser = config.entry_point_parser("train", __doc__, HELP)
    args = parser.parse_args(argv)
    config.configure_logging()
    run_id = train(**vars(args))
    print(f"training run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
