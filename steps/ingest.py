"""Ingest: fetch the raw dataset, check it, and store the validated raw table in the data store.

The source (``HEALTH_PREDICT_RAW_DATA``) is the UCI download URL, a local or S3 path to
``diabetic_data.csv``, or a zip holding it. The CSV's sha256 is compared with the published one
(a mismatch warns, it does not stop). Rows that break the schema go to ``raw_data/quarantine.csv``
with their reason; that file holds patient rows, so it is never logged to MLflow or printed. A file
that is not the dataset at all stops with a one-line :class:`DatasetError`.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from steps.core import config
from steps.data.ingestion import DatasetError, ingest

HELP = {
    "raw_data": "URL, CSV or zip path of the dataset (empty: HEALTH_PREDICT_RAW_DATA or UCI)",
    "data_uri": "data-store root (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "replace_raw_table": "true: a source with a sha256 mismatch may replace a stored raw table",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.ingest [--raw-data SRC] [--data-uri URI]``; 2 on a bad dataset."""
    args = config.entry_point_parser("ingest", __doc__, HELP).parse_args(argv)
    config.configure_logging()
    try:
        result = ingest(
            raw_data=args.raw_data,
            data_uri=args.data_uri,
            replace_raw_table=args.replace_raw_table,
        )
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print({k: v for k, v in asdict(result).items() if k != "reason_counts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
