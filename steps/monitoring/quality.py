"""Data quality of a batch, known without labels: is the feed broken?

Per input column of the raw batch (``custom_pyfunc.columns.INPUT_COLUMNS``) three shares are
compared with the newest matured batches (the recent window), and one scale:

* ``missing``: share of rows without a value;
* ``invalid``: share of present values that break the input contract (a count outside
  ``columns.COUNT_RANGES`` or not whole, a coded id outside ``columns.CODED_ID_VALUES``, a category
  outside ``columns.CATEGORY_VALUES``; the rules of the served model's validation);
* ``unseen``: for open categories (ICD-9 codes, specialty, payer) the window held values of, the
  share of present values it never held;
* ``scale``: for count columns, the mean present value over the window's (a unit change moves it
  by a factor).

A share alerts when its Wilson lower bound (``z``, so a small batch needs a larger jump) exceeds
the largest share of any recent batch plus ``quality_margin``; a scale when it moves by more than
``unit_factor`` either way; a column alerts when it is entirely empty in the batch but held
values in the window. The figures are shares and counts, never a value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from custom_pyfunc import columns
from steps.monitoring.inputs import contract_violations

OPEN_CATEGORIES = tuple(name for name, values in columns.CATEGORY_VALUES.items() if not values)
SHARES = ("missing", "invalid", "unseen")
# Below this window mean a count column's scale is too small to compare (mostly zeros).
MIN_SCALE = 0.5


def _counts(frame: pd.DataFrame, known: dict[str, set] | None) -> dict[str, dict]:
    """Per column: rows, missing, invalid and unseen counts, and the mean of present counts."""
    violations = contract_violations(frame)
    stats = {}
    for name in columns.INPUT_COLUMNS:
        values = frame[name]
        present = values.notna()
        entry = {
            "rows": len(frame),
            "missing": int((~present).sum()),
            "invalid": int((violations[name] & present).sum()),
            "present": int(present.sum()),
        }
        if known and known.get(name):
            entry["unseen"] = int((present & ~values.astype(str).isin(known[name])).sum())
        if name in columns.COUNT_RANGES:
            numbers = pd.to_numeric(values, errors="coerce")
            entry["total"] = float(numbers.sum())
            entry["scale"] = float(numbers.mean()) if numbers.notna().any() else float("nan")
        stats[name] = entry
    return stats


def _share(entry: dict, kind: str) -> float:
    """``kind`` count over its denominator (rows for missing, present values otherwise)."""
    denominator = entry["rows"] if kind == "missing" else entry["present"]
    return entry.get(kind, 0) / denominator if denominator else 0.0


def wilson_lower(count: int, total: int, z: float) -> float:
    """Lower end of the two-sided Wilson interval for ``count`` of ``total`` at ``z``."""
    if total == 0:
        return 0.0
    alpha = 2 * float(norm.sf(z))
    return float(proportion_confint(count, total, alpha=alpha, method="wilson")[0])


def assess_quality(
    batch: pd.DataFrame, recent: list[pd.DataFrame], margin: float, unit_factor: float, z: float
) -> dict:
    """The data-quality section of one batch against the ``recent`` batches (raw frames).

    Returns ``alert`` (bool), ``reasons`` (one line each, column and figure, no value), and per
    column the batch's shares and scale next to the window's bounds.
    """
    if not recent:
        raise ValueError("data quality needs at least one recent batch to learn its bounds from")
    known = {
        name: set(pd.concat([f[name] for f in recent]).dropna().astype(str))
        for name in OPEN_CATEGORIES
    }
    window = [_counts(frame, None) for frame in recent]
    now = _counts(batch, known)
    reasons, figures = [], {}
    for name in columns.INPUT_COLUMNS:
        entry, column = now[name], {}
        if entry["missing"] == entry["rows"] and any(w[name]["present"] for w in window):
            reasons.append(f"{name}: entirely empty (the recent batches held values)")
        for kind in SHARES:
            if kind not in entry:
                continue
            recent_max = 0.0 if kind == "unseen" else max(_share(w[name], kind) for w in window)
            bound = recent_max + margin
            denominator = entry["rows"] if kind == "missing" else entry["present"]
            lower = wilson_lower(entry[kind], denominator, z)
            column[kind] = {"share": round(_share(entry, kind), 4), "bound": round(bound, 4)}
            if lower > bound:
                reasons.append(
                    f"{name}: {kind} share {_share(entry, kind):.3f} (lower bound {lower:.3f}) "
                    f"above {bound:.3f} (recent max {recent_max:.3f} + margin {margin})"
                )
        if "scale" in entry:
            present = sum(w[name]["present"] for w in window)
            base = sum(w[name]["total"] for w in window) / present if present else float("nan")
            ratio = entry["scale"] / base if base >= MIN_SCALE else float("nan")
            column["scale_ratio"] = round(ratio, 4) if np.isfinite(ratio) else None
            factor = max(ratio, 1 / ratio) if ratio > 0 else float("inf")
            if np.isfinite(ratio) and factor > unit_factor:
                reasons.append(
                    f"{name}: mean moved by a factor {factor:.2f} "
                    f"(unit change? bound {unit_factor})"
                )
        figures[name] = column
    return {
        "alert": bool(reasons),
        "reasons": reasons,
        "rows": len(batch),
        "recent_batches": len(recent),
        "recent_rows": sum(len(f) for f in recent),
        "columns": figures,
    }
