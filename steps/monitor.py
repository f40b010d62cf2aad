"""Monitor one batch: data quality, realised and estimated performance, and drift (a diagnostic).

Reads the batch, the newest matured batches (the recent window) and the newest matured labels;
writes the reports and the summary JSON, logs an MLflow run (``docs/monitoring.md``).

CLI: ``python -m steps.monitor --batch-uri ...``; the last stdout line is ``ALERT <kinds>``
(comma-separated, among ``data_quality``, ``estimated_performance``, ``performance``) or ``OK``.
Bad input (empty batch, missing columns, no overlap with the recent window, a model that cannot
be loaded) prints one ``error: ...`` line on stderr and exits with status 2.
"""

from __future__ import annotations

import sys

from steps.core import config
from steps.monitoring.assess import monitor
from steps.monitoring.decision import Thresholds, status_line
from steps.monitoring.inputs import MonitorInputError

HELP = {
    "batch_uri": "raw-format CSV of the batch to monitor",
    "recent_uri": (
        "the newest matured batches, comma-separated CSVs: data-quality bounds and drift "
        "reference (empty: the rows the model was fitted on, as its training run recorded them)"
    ),
    "model_uri": "model whose scores and performance are monitored",
    "report_uri": "folder for the reports (empty: drift_reports/<batch>-<hash>/)",
    "experiment": "MLflow experiment of the monitoring run",
    "baseline_uri": "labelled held-out data for the baseline performance (empty: initial_test)",
    "labelled_uri": "newest batch whose labels have matured (empty: the batch's own labels)",
    "quality_margin": "data_quality alert: a share above the recent batches' largest by this",
    "unit_factor": "data_quality alert: a count column's mean moving by this factor",
    "auc_tolerance": "performance alert: ROC-AUC below the baseline's by this, beyond z se",
    "calibration_tolerance": "performance alert: observed/expected moving by this factor",
    "flag_tolerance": "performance alert: flagged share off the alert budget by this",
    "z": "standard errors a figure must clear beyond its tolerance to alert",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: monitor one batch; the last stdout line is the alerts, bad input exits with 2."""
    args = config.entry_point_parser("monitor", __doc__, HELP).parse_args(argv)
    config.configure_logging()
    fields = Thresholds.__dataclass_fields__
    thresholds = Thresholds(**{name: getattr(args, name) for name in fields})
    try:
        summary = monitor(
            batch_uri=args.batch_uri,
            recent_uri=args.recent_uri,
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
    drift = summary["drift"]
    if drift:
        print(
            f"drift (diagnostic) share {drift['drift_share']:.2f} "
            f"({len(drift['drifted_columns'])} of {drift['compared_columns']} columns)"
        )
    print(f"reports in {summary['report_uri']}")
    for kind in ("data_quality", "performance", "estimated_performance"):
        for reason in (summary[kind] or {}).get("reasons", []):
            print(f"{kind}: {reason}")
    print(status_line(summary["alerts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
