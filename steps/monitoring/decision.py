"""The monitor's alert kinds, their thresholds, and when matured labels are enough to judge.

Three kinds of alert, each known from a different source (``docs/monitoring.md``):
``data_quality`` (the batch's inputs alone, ``steps.monitoring.quality``), ``performance``
(matured labels, ``steps.monitoring.performance.assess_performance``) and
``estimated_performance`` (CBPE on recalibrated scores,
``steps.monitoring.performance.assess_estimated``). Drift is a diagnostic, never an alert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
