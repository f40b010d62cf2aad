"""The gate's paired bootstrap: ``scipy.stats.bootstrap`` (what the gate uses) vs hand-written.

Times ``steps.evaluation.gate.compare_auc`` (``scipy.stats.bootstrap``, ``paired=True``,
percentile intervals, a vectorised exact ROC-AUC statistic) against the hand-written resampler
the gate used before (``_handwritten_compare``, below: resample counts drawn by numpy, the same
ROC-AUC from count-weighted class totals), side by side on the real evaluation sizes: about
3,000 labelled rows (``initial_test``) and 15,000 (a drift batch plus the test split), two models,
1,000 resamples, scores with ties as isotonic calibration makes them. Both draw the same resamples
from the same seed, so the intervals must agree; the benchmark checks that too.

    python -m benchmarks.bootstrap --repeats 3

Last stdout line: one JSON object; ``ratio`` is scipy time / hand-written time (best of repeats).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from steps.evaluation import gate

POSITIVE_RATE = 0.11  # 30-day readmissions among label-eligible encounters


def _handwritten_compare(
    labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, n_resamples: int, seed: int
) -> tuple[float, float]:
    """The previous gate's resampler: the 95% percentile interval of AUC(challenger - champion)."""
    rng = np.random.default_rng(seed)
    n_rows = len(labels)
    chunk = max(1, 4_000_000 // n_rows)
    ranked = [gate.score_ranks(scores) for scores in (challenger, champion)]
    differences = []
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn = rng.integers(0, n_rows, size=(size, n_rows))
        aucs = []
        for ranks, distinct in ranked:
            cells = (ranks[drawn] + distinct * np.arange(size)[:, None]).ravel()
            positive = np.bincount(cells, weights=labels[drawn].ravel(), minlength=size * distinct)
            total = np.bincount(cells, minlength=size * distinct)
            positive = positive.reshape(size, distinct)
            negative = total.reshape(size, distinct) - positive
            below = np.cumsum(negative, axis=1) - negative
            concordant = (positive * (below + 0.5 * negative)).sum(axis=1)
            aucs.append(concordant / (positive.sum(axis=1) * negative.sum(axis=1)))
        differences.append(aucs[0] - aucs[1])
    low, high = np.percentile(np.concatenate(differences), [2.5, 97.5])
    return float(low), float(high)


def _cohort(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two models' scores (rounded to 3 decimals: tied scores, as in practice)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < POSITIVE_RATE).astype(np.float64)

    def scores(signal: float) -> np.ndarray:
        return np.round(1 / (1 + np.exp(-(signal * labels + rng.normal(size=rows) - 2))), 3)

    return labels, scores(1.0), scores(0.9)


def _best_time(repeats: int, function, *args) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls of ``function(*args)``, and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    """Print one line per size and a final JSON line with the timings and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3000,15000", help="comma-separated row counts")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    results = {}
    for rows in (int(s) for s in args.sizes.split(",")):
        labels, challenger, champion = _cohort(rows, args.seed)
        inputs = (labels, challenger, champion, args.resamples, args.seed)
        own_s, own = _best_time(args.repeats, _handwritten_compare, *inputs)
        scipy_s, comparison = _best_time(args.repeats, gate.compare_auc, *inputs)
        difference = comparison.difference
        same = bool(np.allclose(own, (difference.low, difference.high), rtol=0, atol=1e-12))
        results[rows] = {
            "handwritten_s": round(own_s, 3),
            "scipy_s": round(scipy_s, 3),
            "ratio": round(scipy_s / own_s, 3),
            "same_interval": same,
        }
        print(f"{rows} rows: scipy {scipy_s:.2f} s, hand-written {own_s:.2f} s, "
              f"ratio {scipy_s / own_s:.2f}, same interval: {same}")  # fmt: skip
    print(json.dumps({"resamples": args.resamples, "repeats": args.repeats, "sizes": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
