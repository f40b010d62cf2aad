"""Split: the first encounters (file order) become initial train/validation/test, the rest future.

The initial share (default 20%) is split 70/15/15 grouped by ``patient_nbr`` (no patient in two
of the three) and stratified on the 30-day label; the remaining rows are ``future_data`` in their
original order, replayed later as new batches. Same input and seed give byte-identical files.
"""

from __future__ import annotations

import sys

from steps.core import config
from steps.data.splitting import SplitError, split

HELP = {
    "data_uri": "data-store root holding raw_data/ (empty: HEALTH_PREDICT_DATA_URI or ./data)",
    "initial_fraction": "share of encounters (file order) for initial train/validation/test",
    "seed": "random seed of the grouped, stratified split",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.split [--data-uri URI] [--initial-fraction F] [--seed N]``."""
    args = config.entry_point_parser("split", __doc__, HELP).parse_args(argv)
    config.configure_logging()
    try:
        result = split(args.data_uri, args.initial_fraction, args.seed)
    except SplitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in result.files.values():
        print(f"{f.name}: {f.rows} rows, {f.patients} patients, sha256 {f.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
