"""The champion/challenger gate: paired bootstrap of the ROC-AUC difference, floors, decision.

Pure numpy/pandas (no MLflow, no I/O), so every decision can be checked on constructed scores.

* Paired bootstrap: the same resampled rows score both models; each resample's ROC-AUC is computed
  exactly (ties count one half) from resample counts, vectorised over resamples. The interval is
  the percentile interval of the resampled statistic (default 95%, two-sided).
* Non-inferiority: with a champion, the challenger is promoted only when the lower bound of the
  interval of ``AUC(challenger) - AUC(champion)`` exceeds ``-margin``, and never when its
  predictions equal the champion's (a retrain that reproduced the champion only causes a redeploy).
* Floors (always, and alone when there is no champion): the challenger's ROC-AUC on the
  evaluation data is at least ``auc_floor``, and its subgroup recall gap is at most
  ``max_subgroup_recall_gap``.
  The gap is the overall recall minus the lowest recall of any subgroup (race, gender, age group)
  that has at least ``min_subgroup_positives`` positive cases; smaller subgroups are reported but
  not judged, because their recall is too noisy to act on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Cells (resamples x rows) per vectorised chunk: bounds memory at about 100 MB of float64.
_CHUNK_CELLS = 4_000_000

# Coarse age groups from the raw 10-year brackets: fine brackets are too small to judge recall.
AGE_GROUPS = {
    "[0-10)": "0-39", "[10-20)": "0-39", "[20-30)": "0-39", "[30-40)": "0-39",
    "[40-50)": "40-59", "[50-60)": "40-59",
    "[60-70)": "60-79", "[70-80)": "60-79",
    "[80-90)": "80+", "[90-100)": "80+",
}  # fmt: skip


class GateError(ValueError):
    """The evaluation data cannot support a decision (e.g. only one class present)."""


@dataclass(frozen=True)
class GatePolicy:
    """The configurable parts of the gate."""

    margin: float = 0.01
    auc_floor: float = 0.6
    max_subgroup_recall_gap: float = 0.25
    min_subgroup_positives: int = 30
    n_bootstrap: int = 1000
    seed: int = 42
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.n_bootstrap < 1000:
            raise GateError(f"n_bootstrap must be >= 1000, got {self.n_bootstrap}")
        if not 0 < self.confidence < 1:
            raise GateError(f"confidence must be between 0 and 1, got {self.confidence}")
        if self.margin < 0:
            raise GateError(f"margin must be >= 0, got {self.margin}")


@dataclass(frozen=True)
class Interval:
    """A point estimate on the full data and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class AucComparison:
    """ROC-AUC of the challenger (and champion) and of their difference, with intervals."""

    challenger: Interval
    champion: Interval | None
    difference: Interval | None
    confidence: float
    n_resamples: int


@dataclass(frozen=True)
class SubgroupRecall:
    """Recall of the challenger's 0/1 predictions within one subgroup."""

    attribute: str
    group: str
    rows: int
    positives: int
    recall: float
    judged: bool


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote the challenger, why, and the evidence."""

    promote: bool
    reason: str
    comparison: AucComparison
    overall_recall: float
    subgroup_recall_gap: float
    worst_subgroup: str | None
    subgroups: list[SubgroupRecall] = field(repr=False)
    policy: GatePolicy


def bootstrap_counts(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of an ``(n_rows, resamples)`` matrix: how often each row is drawn in each resample.

    Deterministic for a given ``(n_rows, n_resamples, seed)``; callers that use the same three
    values get the same resamples, which is what makes a comparison paired.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_rows, 1))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn = rng.integers(0, n_rows, size=(size, n_rows))
        # Row-major (row, resample) cells, so that gathering rows later copies contiguous memory.
        cells = drawn * size + np.arange(size)[:, None]
        counts = np.bincount(cells.ravel(), minlength=n_rows * size)
        yield counts.reshape(n_rows, size).astype(np.float64)


class RankedScores:
    """One model's scores sorted once, so each resample's ROC-AUC is a few vector operations."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="mergesort")
        sorted_scores = scores[self.order]
        self.is_positive = labels[self.order].astype(bool)[:, None]
        self.tie_starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])

    def _class_weights(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive and negative weight per group of tied scores, in ascending score order."""
        sorted_weights = weights[self.order]
        positive = np.add.reduceat(
            np.where(self.is_positive, sorted_weights, 0.0), self.tie_starts, axis=0
        )
        negative = np.add.reduceat(
            np.where(self.is_positive, 0.0, sorted_weights), self.tie_starts, axis=0
        )
        return positive, negative

    def average_precision(self, weights: np.ndarray) -> np.ndarray:
        """PR-AUC (average precision, as ``sklearn``'s) for each column of ``weights``."""
        positive, negative = (w[::-1] for w in self._class_weights(weights))
        true_positive = np.cumsum(positive, axis=0)
        flagged = true_positive + np.cumsum(negative, axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = true_positive / np.where(flagged > 0, flagged, 1.0)
            return (positive * precision).sum(axis=0) / positive.sum(axis=0)

    def roc_auc(self, weights: np.ndarray) -> np.ndarray:
        """ROC-AUC per column of ``weights`` (``(n_rows, resamples)``: how often each row counts).

        Exact Mann-Whitney statistic with ties counted one half; NaN where a weighting has no
        positive or no negative case. With unit weights this equals ``sklearn``'s
        ``roc_auc_score``.
        """
        positive, negative = self._class_weights(weights)
        negatives_below = np.cumsum(negative, axis=0) - negative
        concordant = (positive * (negatives_below + 0.5 * negative)).sum(axis=0)
        pairs = positive.sum(axis=0) * negative.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(pairs > 0, concordant / np.where(pairs > 0, pairs, 1.0), np.nan)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC on the full data (NaN when only one class is present)."""
    ranked = RankedScores(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    return float(ranked.roc_auc(np.ones((len(labels), 1)))[0])


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    if not np.isfinite(samples).any():  # e.g. precision of a model that flags nobody
        return Interval(float(estimate), float("nan"), float("nan"))
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def compare_auc(
    labels: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 42,
    confidence: float = 0.95,
) -> AucComparison:
    """Paired bootstrap of both models' ROC-AUC and of their difference on the same resamples."""
    labels = np.asarray(labels).astype(np.int8)
    if labels.size == 0 or labels.min() == labels.max():
        raise GateError("the evaluation data needs both positive and negative cases")
    models = [np.asarray(challenger_scores, dtype=np.float64)]
    if champion_scores is not None:
        models.append(np.asarray(champion_scores, dtype=np.float64))
    for scores in models:
        if scores.shape != labels.shape or not np.isfinite(scores).all():
            raise GateError("scores must be finite and aligned with the labels")
    ranked = [RankedScores(labels, scores) for scores in models]
    samples = [[] for _ in models]
    for counts in bootstrap_counts(len(labels), n_resamples, seed):
        for model_samples, model in zip(samples, ranked, strict=True):
            model_samples.append(model.roc_auc(counts))
    resampled = [np.concatenate(chunks) for chunks in samples]
    estimates = [roc_auc(labels, scores) for scores in models]
    valid = int(np.isfinite(resampled[0]).sum())
    challenger = _interval(estimates[0], resampled[0], confidence)
    if len(models) == 1:
        return AucComparison(challenger, None, None, confidence, valid)
    return AucComparison(
        challenger=challenger,
        champion=_interval(estimates[1], resampled[1], confidence),
        difference=_interval(estimates[0] - estimates[1], resampled[0] - resampled[1], confidence),
        confidence=confidence,
        n_resamples=valid,
    )


def bootstrap_metrics(
    labels: np.ndarray,
    probability: np.ndarray,
    prediction: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 42,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """PR-AUC, recall, precision, F1, Brier score and positive rate, with bootstrap intervals."""
    labels = np.asarray(labels, dtype=np.float64)
    predicted = np.asarray(prediction, dtype=np.float64)
    squared_error = (np.asarray(probability, dtype=np.float64) - labels) ** 2
    columns = np.column_stack([labels * predicted, labels, predicted, squared_error])

    def statistics(totals: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
        true_positive, positive, flagged, error = totals.T
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = true_positive / positive
            precision = true_positive / flagged
            return {
                "recall": recall,
                "precision": precision,
                "f1": 2 * true_positive / (positive + flagged),
                "brier": error / n,
                "positive_rate": flagged / n,
            }

    ranked = RankedScores(labels, np.asarray(probability, dtype=np.float64))
    full = statistics(columns.sum(axis=0, keepdims=True), np.array([len(labels)]))
    full["pr_auc"] = ranked.average_precision(np.ones((len(labels), 1)))
    chunks = []
    for counts in bootstrap_counts(len(labels), n_resamples, seed):
        chunks.append(statistics(counts.T @ columns, counts.sum(axis=0)))
        chunks[-1]["pr_auc"] = ranked.average_precision(counts)
    return {
        name: _interval(full[name][0], np.concatenate([c[name] for c in chunks]), confidence)
        for name in full
    }


def subgroups_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Race, gender and coarse age group of each row (missing race becomes ``Unknown``)."""
    return {
        "race": frame["race"].astype("string").fillna("Unknown").to_numpy(dtype=object),
        "gender": frame["gender"].astype("string").fillna("Unknown").to_numpy(dtype=object),
        "age_group": frame["age"].map(AGE_GROUPS).fillna("Unknown").to_numpy(dtype=object),
    }


def subgroup_recalls(
    labels: np.ndarray,
    prediction: np.ndarray,
    groups: Mapping[str, np.ndarray],
    min_positives: int,
) -> list[SubgroupRecall]:
    """Recall in every subgroup of every attribute; ``judged`` when it has enough positives."""
    labels = np.asarray(labels).astype(bool)
    hit = np.asarray(prediction).astype(bool) & labels
    rows = []
    for attribute, values in groups.items():
        values = np.asarray(values, dtype=object)
        for group in sorted(set(values.tolist()), key=str):
            members = values == group
            positives = int(labels[members].sum())
            recall = float(hit[members].sum() / positives) if positives else float("nan")
            rows.append(
                SubgroupRecall(
                    attribute=attribute,
                    group=str(group),
                    rows=int(members.sum()),
                    positives=positives,
                    recall=recall,
                    judged=positives >= min_positives,
                )
            )
    return rows


def judge(
    labels: np.ndarray,
    challenger_probability: np.ndarray,
    challenger_prediction: np.ndarray,
    groups: Mapping[str, np.ndarray],
    champion_probability: np.ndarray | None = None,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Decide whether the challenger replaces the champion (see the module docstring)."""
    policy = policy or GatePolicy()
    labels = np.asarray(labels).astype(np.int8)
    comparison = compare_auc(
        labels,
        challenger_probability,
        champion_probability,
        n_resamples=policy.n_bootstrap,
        seed=policy.seed,
        confidence=policy.confidence,
    )
    hits = np.asarray(challenger_prediction).astype(bool) & labels.astype(bool)
    overall_recall = float(hits.sum() / labels.sum())
    subgroups = subgroup_recalls(
        labels, challenger_prediction, groups, policy.min_subgroup_positives
    )
    judged = [s for s in subgroups if s.judged]
    worst = min(judged, key=lambda s: s.recall) if judged else None
    gap = overall_recall - worst.recall if worst else 0.0
    worst_name = f"{worst.attribute}={worst.group}" if worst else None

    failures = []
    auc = comparison.challenger.estimate
    if auc < policy.auc_floor:
        failures.append(f"ROC-AUC {auc:.4f} below the floor {policy.auc_floor:.4f}")
    if gap > policy.max_subgroup_recall_gap:
        failures.append(
            f"subgroup recall collapse: {worst_name} recall {worst.recall:.3f} is {gap:.3f} "
            f"below overall {overall_recall:.3f} (max gap {policy.max_subgroup_recall_gap:.3f})"
        )
    difference = comparison.difference
    level = f"{policy.confidence:.0%}"
    if champion_probability is not None and np.array_equal(
        np.asarray(challenger_probability), np.asarray(champion_probability)
    ):
        # A retrain that reproduced the champion would only cause a redeploy of the same model.
        failures.append("identical predictions to the champion on the evaluation data")
    if difference is not None and difference.low <= -policy.margin:
        failures.append(
            f"not non-inferior: lower {level} bound of the AUC difference {difference.low:+.4f} "
            f"does not clear -margin {-policy.margin:+.4f}"
        )
    floors = (
        f"floors pass (ROC-AUC {auc:.4f} >= {policy.auc_floor:.4f}, subgroup recall gap "
        f"{gap:.3f} <= {policy.max_subgroup_recall_gap:.3f})"
    )
    if failures:
        reason = "; ".join(failures)
    elif difference is None:
        reason = f"no champion: {floors}"
    else:
        reason = (
            f"non-inferior: AUC difference {difference.estimate:+.4f} "
            f"[{difference.low:+.4f}, {difference.high:+.4f}] clears -margin "
            f"{-policy.margin:+.4f}; {floors}"
        )
    return GateDecision(
        promote=not failures,
        reason=reason,
        comparison=comparison,
        overall_recall=overall_recall,
        subgroup_recall_gap=float(gap),
        worst_subgroup=worst_name,
        subgroups=subgroups,
        policy=policy,
    )
