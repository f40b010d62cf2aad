"""The champion/challenger gate: paired bootstrap of the ROC-AUC difference, floors, decision.

Pure numpy/pandas/scipy (no MLflow, no I/O), so every decision can be checked on constructed scores.

* Paired bootstrap (``scipy.stats.bootstrap``, ``paired=True``): the same resampled rows score
  both models; each resample's ROC-AUC is computed exactly (ties count one half) from per-score
  class counts, vectorised over resamples. The interval is the percentile interval of the
  resampled statistic (default 95%, two-sided).
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats

from steps.evaluation.subgroups import MIN_POSITIVES, subgroup_table

# Cells (resamples x rows) per vectorised batch: bounds memory at about 100 MB.
_BATCH_CELLS = 4_000_000


class GateError(ValueError):
    """The evaluation data cannot support a decision (e.g. only one class present)."""


@dataclass(frozen=True)
class GatePolicy:
    """The configurable parts of the gate."""

    margin: float = 0.01
    # The paired ROC-AUC gain a promotion must show to be worth a deployment (0: none asked).
    deployment_cost: float = 0.0
    auc_floor: float = 0.6
    max_subgroup_recall_gap: float = 0.25
    min_subgroup_positives: int = MIN_POSITIVES
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
class GateDecision:
    """Whether to promote the challenger, why, and the evidence."""

    promote: bool
    reason: str
    comparison: AucComparison
    overall_recall: float
    subgroup_recall_gap: float
    worst_subgroup: str | None
    subgroups: pd.DataFrame = field(repr=False)  # see ``subgroups.subgroup_table``
    policy: GatePolicy


def score_ranks(scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Each score's position among the distinct scores (ascending; ties share one), and how many
    distinct scores there are: resampled ranks order the rows exactly as their scores do."""
    distinct, ranks = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    return ranks, len(distinct)


def _class_counts(
    labels: np.ndarray, ranks: np.ndarray, distinct: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives per distinct score (ascending), one row per resample."""
    labels, ranks = np.atleast_2d(labels), np.atleast_2d(ranks)
    cells = (ranks + distinct * np.arange(len(ranks))[:, None]).ravel()
    size = len(ranks) * distinct
    positive = np.bincount(cells, weights=labels.ravel().astype(np.float64), minlength=size)
    total = np.bincount(cells, minlength=size)
    positive = positive.reshape(len(ranks), distinct)
    return positive, total.reshape(len(ranks), distinct) - positive


def ranked_roc_auc(labels: np.ndarray, ranks: np.ndarray, distinct: int) -> np.ndarray:
    """ROC-AUC per row of (resampled) ``labels`` and score ``ranks``: the exact Mann-Whitney
    statistic with ties counted one half (``sklearn``'s value); NaN where a row has one class."""
    positive, negative = _class_counts(labels, ranks, distinct)
    negatives_below = np.cumsum(negative, axis=1) - negative
    concordant = (positive * (negatives_below + 0.5 * negative)).sum(axis=1)
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / np.where(pairs > 0, pairs, 1.0), np.nan)


def ranked_average_precision(labels: np.ndarray, ranks: np.ndarray, distinct: int) -> np.ndarray:
    """PR-AUC (average precision, ``sklearn``'s definition) per row of ``labels`` and ``ranks``."""
    positive, negative = (c[:, ::-1] for c in _class_counts(labels, ranks, distinct))
    true_positive = np.cumsum(positive, axis=1)
    flagged = true_positive + np.cumsum(negative, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = true_positive / np.where(flagged > 0, flagged, 1.0)
        return (positive * precision).sum(axis=1) / positive.sum(axis=1)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC on the full data (NaN when only one class is present)."""
    return float(ranked_roc_auc(np.asarray(labels), *score_ranks(scores))[0])


def paired_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., np.ndarray],
    n_resamples: int,
    seed: int,
    confidence: float,
) -> np.ndarray:
    """The bootstrap distribution (outputs x resamples) of ``scipy.stats.bootstrap`` over rows
    (every array in ``data`` resampled with the same rows, percentile method);
    ``statistic(*arrays, axis)`` returns one value per output and resample. The same
    ``(rows, n_resamples, seed)`` give the same resamples, whatever the statistic."""
    result = scipy.stats.bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        batch=max(1, _BATCH_CELLS // max(len(data[0]), 1)),
        rng=np.random.default_rng(seed),
    )
    return result.bootstrap_distribution


def _interval(estimate: float, samples: np.ndarray, confidence: float) -> Interval:
    """The percentile interval of the finite ``samples`` (NaN when none is finite, e.g. the
    precision of a model that flags nobody)."""
    if not np.isfinite(samples).any():
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
    ranked = [score_ranks(scores) for scores in models]

    def statistic(labels: np.ndarray, *ranks: np.ndarray, axis: int = -1) -> np.ndarray:
        aucs = [
            ranked_roc_auc(labels, r, distinct)
            for r, (_, distinct) in zip(ranks, ranked, strict=True)
        ]
        return np.stack(aucs + ([aucs[0] - aucs[1]] if len(aucs) == 2 else []))

    data = (labels, *(ranks for ranks, _ in ranked))
    resampled = paired_bootstrap(data, statistic, n_resamples, seed, confidence)
    estimates = [roc_auc(labels, scores) for scores in models]
    valid = int(np.isfinite(resampled[0]).sum())
    challenger = _interval(estimates[0], resampled[0], confidence)
    if len(models) == 1:
        return AucComparison(challenger, None, None, confidence, valid)
    return AucComparison(
        challenger=challenger,
        champion=_interval(estimates[1], resampled[1], confidence),
        difference=_interval(estimates[0] - estimates[1], resampled[2], confidence),
        confidence=confidence,
        n_resamples=valid,
    )


METRICS = ("recall", "precision", "f1", "brier", "positive_rate", "pr_auc")


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
    probability = np.asarray(probability, dtype=np.float64)
    predicted = np.asarray(prediction, dtype=np.float64)
    ranks, distinct = score_ranks(probability)

    def statistic(labels, probability, predicted, ranks, axis: int = -1) -> np.ndarray:
        labels, probability, predicted = (
            np.atleast_2d(a) for a in (labels, probability, predicted)
        )
        true_positive = (labels * predicted).sum(axis=1)
        positive, flagged = labels.sum(axis=1), predicted.sum(axis=1)
        rows = labels.shape[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {
                "recall": true_positive / positive,
                "precision": true_positive / flagged,
                "f1": 2 * true_positive / (positive + flagged),
                "brier": ((probability - labels) ** 2).sum(axis=1) / rows,
                "positive_rate": flagged / rows,
                "pr_auc": ranked_average_precision(labels, ranks, distinct),
            }
        return np.stack([values[name] for name in METRICS])

    data = (labels, probability, predicted, ranks)
    full = statistic(*data)[:, 0]
    resampled = paired_bootstrap(data, statistic, n_resamples, seed, confidence)
    return {name: _interval(full[i], resampled[i], confidence) for i, name in enumerate(METRICS)}


@dataclass(frozen=True)
class _RecallGap:
    """Overall recall, the per-subgroup table and the largest judged gap below it."""

    overall_recall: float
    subgroups: pd.DataFrame
    gap: float
    worst_name: str | None
    worst_recall: float | None


def _recall_gap(labels, prediction, probability, groups, min_positives: int) -> _RecallGap:
    """Overall recall minus the lowest recall of a subgroup with enough positives."""
    hits = np.asarray(prediction).astype(bool) & labels.astype(bool)
    overall_recall = float(hits.sum() / labels.sum())
    subgroups = subgroup_table(labels, probability, prediction, groups, min_positives)
    judged = subgroups[subgroups["judged"]]
    if not len(judged):
        return _RecallGap(overall_recall, subgroups, 0.0, None, None)
    worst = judged.loc[judged["recall"].idxmin()]
    return _RecallGap(
        overall_recall,
        subgroups,
        overall_recall - worst["recall"],
        f"{worst['attribute']}={worst['group']}",
        worst["recall"],
    )


def _failures(
    comparison: AucComparison,
    recall: _RecallGap,
    identical: bool,
    policy: GatePolicy,
) -> list[str]:
    """Why the challenger may not be promoted (empty: it may)."""
    failures = []
    auc, difference = comparison.challenger.estimate, comparison.difference
    if auc < policy.auc_floor:
        failures.append(f"ROC-AUC {auc:.4f} below the floor {policy.auc_floor:.4f}")
    if recall.gap > policy.max_subgroup_recall_gap:
        failures.append(
            f"subgroup recall collapse: {recall.worst_name} recall {recall.worst_recall:.3f} is "
            f"{recall.gap:.3f} below overall {recall.overall_recall:.3f} "
            f"(max gap {policy.max_subgroup_recall_gap:.3f})"
        )
    if identical:
        # A retrain that reproduced the champion would only cause a redeploy of the same model.
        failures.append("identical predictions to the champion on the evaluation data")
    if difference is not None and difference.low <= -policy.margin:
        failures.append(
            f"not non-inferior: lower {policy.confidence:.0%} bound of the AUC difference "
            f"{difference.low:+.4f} does not clear -margin {-policy.margin:+.4f}"
        )
    if (
        difference is not None
        and policy.deployment_cost > 0
        and difference.estimate < policy.deployment_cost
    ):
        failures.append(
            f"gain {difference.estimate:+.4f} does not clear the deployment cost "
            f"{policy.deployment_cost:+.4f}"
        )
    return failures


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
    recall = _recall_gap(
        labels,
        challenger_prediction,
        challenger_probability,
        groups,
        policy.min_subgroup_positives,
    )
    identical = champion_probability is not None and np.array_equal(
        np.asarray(challenger_probability), np.asarray(champion_probability)
    )
    failures = _failures(comparison, recall, identical, policy)
    auc, difference, gap = comparison.challenger.estimate, comparison.difference, recall.gap
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
        overall_recall=recall.overall_recall,
        subgroup_recall_gap=float(gap),
        worst_subgroup=recall.worst_name,
        subgroups=recall.subgroups,
        policy=policy,
    )
