"""The monitor's alert kinds, their thresholds, and when matured labels are enough to judge.

Three kinds of alert, each known from a different source (``docs/monitoring.md``):
``data_quality`` (the batch's inputs alone, ``steps.monitoring.quality``), ``performance``
(matured labels, ``steps.monitoring.performance.assess_performance``) and
``estimated_performance`` (CBPE on recalibrated scores,
``steps.monitoring.performance.assess_estimated``). Drift is a diagnostic, never an alert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from steps.monitoring.performance import assess_estimated, assess_performance, flagged_share
from steps.monitoring.quality import assess_quality

ALERT_KINDS = ("data_quality", "estimated_performance", "performance")
# Below this many labelled positives (or negatives) a batch's ROC-AUC and observed rate are too
# noisy to act on: the performance section is then not computed.
MIN_LABELLED_PER_CLASS = 100


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds; the ``monitor`` entry point in ``MLproject`` declares their defaults."""

    quality_margin: float
    unit_factor: float
    auc_tolerance: float
    calibration_tolerance: float
    flag_tolerance: float
    z: float

    def as_dict(self) -> dict[str, float]:
        """The thresholds by name."""
        return asdict(self)

    @classmethod
    def defaults(cls) -> Thresholds:
        """The ``monitor`` entry point's defaults from ``MLproject``."""
        # lazy: the alert rules stay importable without MLflow (config imports it, 6.8 s)
        from steps.core import config

        declared = config.project_defaults("monitor")
        return cls(**{name: float(declared[name]) for name in cls.__dataclass_fields__})


def labels_usable(positives: int, negatives: int) -> bool:
    """True when a batch has enough labelled rows of each class for the performance rules."""
    return min(positives, negatives) >= MIN_LABELLED_PER_CLASS


def alerts(sections: dict[str, dict | None]) -> list[str]:
    """The sorted alert kinds whose section (None when not computed) says ``alert``."""
    return sorted(k for k in ALERT_KINDS if (sections.get(k) or {}).get("alert"))


def status_line(kinds: list[str]) -> str:
    """The monitor's last stdout line: ``ALERT <kinds>`` or ``OK``."""
    return f"ALERT {','.join(kinds)}" if kinds else "OK"


def judge(
    batch: pd.DataFrame,
    flagged: np.ndarray,
    scores: np.ndarray,
    recent: list[pd.DataFrame],
    matured: dict[str, np.ndarray] | None,
    baseline: dict[str, np.ndarray],
    budget: float,
    thresholds: Thresholds,
) -> dict[str, dict | None]:
    """The three alerting sections of one batch, from frames and arrays.

    ``batch``: its raw rows; ``flagged`` / ``scores``: the model's 0/1 flags and probabilities on
    its label-eligible rows; ``recent``: the raw newest matured batches; ``matured`` / ``baseline``:
    ``target``, ``probability_score`` and ``prediction`` arrays of the newest matured batch (None
    when its labels are too few to judge) and of the held-out baseline.
    """
    quality = assess_quality(
        batch, recent, thresholds.quality_margin, thresholds.unit_factor, thresholds.z
    )
    estimated = None
    if matured is None:
        performance = {"alert": False, "reasons": [], "not_judged": (
            f"fewer than {MIN_LABELLED_PER_CLASS} matured labels per class")}  # fmt: skip
    else:
        performance = assess_performance(matured, baseline, thresholds)
        estimated = assess_estimated(matured, scores, thresholds) if len(scores) else None
    share = performance["flagged_share"] = flagged_share(flagged, budget, thresholds)
    if share["alert"]:
        performance["alert"] = True
        performance["reasons"].append(
            f"flagged share {share['share']:.3f} of the batch against the alert budget {budget} "
            f"(tolerance {thresholds.flag_tolerance}, {thresholds.z} se)"
        )
    return {
        "data_quality": quality,
        "performance": performance,
        "estimated_performance": estimated,
    }
