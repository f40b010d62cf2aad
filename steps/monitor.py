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

import sys

from steps.core import config
from steps.monitoring.assess import monitor
from steps.monitoring.decision import Thresholds
from steps.monitoring.inputs import (
    MonitorInputError,
)

HELP = {
    "batch_uri": "raw-format CSV of the batch to monitor",
    "reference_uri": (
        "data the batch is compared with, comma-separated CSVs (empty: the rows the model was "
        "fitted on, as its training run recorded them; initial_train when it records none)"
    ),
    "model_uri": "model whose scores and performance are monitored",
    "report_uri": "folder for the reports (empty: drift_reports/<batch>-<hash>/)",
    "experiment": "MLflow experiment of the monitoring run",
    "auc_drop": "retrain when ROC-AUC falls this far below the baseline",
    "calibration_ratio": "retrain when mean predicted / observed moves by this factor",
    "prediction_drift_psi": "retrain (no labels) when the score PSI exceeds this",
    "important_drift_share": "retrain (no labels) when drifted columns carry this much reliance",
    "baseline_uri": "labelled held-out data for the baseline performance (empty: initial_test)",
    "labelled_uri": "newest batch whose labels have matured (empty: the batch's own labels)",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: monitor one batch; the last stdout line is the decision, bad input exits with 2."""
    args = config.entry_point_parser("monitor", __doc__, HELP).parse_args(argv)
    config.configure_logging()
    thresholds = Thresholds(**{name: getattr(args, name) for name in Thresholds().as_dict()})
    try:
        summary = monitor(
            batch_uri=args.batch_uri,
            reference_uri=args.reference_uri,
            model_uri=args.model_uri,
            report_uri=args.report_uri,
            experiment=args.experiment,
            baseline_uri=args.baseline_uri,
            thresholds=thresholds,
            labelled_uri=args.labelled_uri,
        )
    except MonitorInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"drift share {summary['drift_share']:.2f} ({len(summary['drifted_columns'])} of "
        f"{summary['compared_columns']} columns); reports in {summary['report_uri']}"
    )
    for reason in summary["reasons"]:
        print(f"reason: {reason}")
    print(summary["decision"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
