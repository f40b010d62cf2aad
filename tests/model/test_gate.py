"""The champion/challenger gate on constructed scores, where the right decision is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from steps.evaluation import gate

N_ROWS = 4000


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    """Labels (~15% positive), balanced gender/age subgroups, and noise to build scores from."""
    rng = np.random.default_rng(7)
    labels = (rng.random(N_ROWS) < 0.15).astype(np.int8)
    return {
        "labels": labels,
        "noise": rng.normal(size=N_ROWS),
        "other_noise": rng.normal(size=N_ROWS),
        "gender": rng.choice(["Female", "Male"], size=N_ROWS).astype(object),
        "age_group": rng.choice(["40-59", "60-79", "80+"], size=N_ROWS).astype(object),
        "race": rng.choice(["Caucasian", "AfricanAmerican", "Asian"], p=[0.7, 0.28, 0.02],
                           size=N_ROWS).astype(object),
    }  # fmt: skip


def _scores(cohort: dict[str, np.ndarray], signal: float, noise: str = "noise") -> np.ndarray:
    """Probabilities whose ROC-AUC grows with ``signal``."""
    return 1 / (1 + np.exp(-(signal * cohort["labels"] + cohort[noise] - 2)))


def _judge(cohort, challenger, champion=None, prediction=None, **policy) -> gate.GateDecision:
    groups = {name: cohort[name] for name in ("race", "gender", "age_group")}
    if prediction is None:
        prediction = (challenger >= np.quantile(challenger, 0.8)).astype(np.int8)
    return gate.judge(
        cohort["labels"], challenger, prediction, groups, champion, gate.GatePolicy(**policy)
    )


def test_resampled_auc_and_average_precision_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.3).astype(int)
    scores = np.round(labels * 0.4 + rng.normal(size=500), 1)  # many ties
    rows = rng.integers(0, 500, size=(3, 500))  # three resamples, as scipy draws them
    ranks, distinct = gate.score_ranks(scores)
    resampled = gate.ranked_roc_auc(labels[rows], ranks[rows], distinct)
    resampled_ap = gate.ranked_average_precision(labels[rows], ranks[rows], distinct)
    for column in range(3):
        picked = rows[column]
        assert resampled[column] == pytest.approx(roc_auc_score(labels[picked], scores[picked]))
        assert resampled_ap[column] == pytest.approx(
            average_precision_score(labels[picked], scores[picked])
        )
    assert gate.roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_bootstrap_is_reproducible_and_seeded(cohort):
    challenger, champion = _scores(cohort, 1.2), _scores(cohort, 1.0, "other_noise")
    first = gate.compare_auc(cohort["labels"], challenger, champion, 1000, seed=3)
    again = gate.compare_auc(cohort["labels"], challenger, champion, 1000, seed=3)
    other = gate.compare_auc(cohort["labels"], challenger, champion, 1000, seed=4)
    assert first == again
    assert first.difference.low != other.difference.low
    assert first.n_resamples == 1000
    assert first.difference.low < first.difference.estimate < first.difference.high


def test_clearly_better_challenger_is_promoted(cohort):
    decision = _judge(cohort, _scores(cohort, 2.0), champion=_scores(cohort, 0.8, "other_noise"))
    assert decision.promote, decision.reason
    assert decision.comparison.difference.low > 0
    assert decision.reason.startswith("non-inferior")


def test_clearly_worse_challenger_is_rejected(cohort):
    decision = _judge(cohort, _scores(cohort, 0.8), champion=_scores(cohort, 2.0, "other_noise"))
    assert not decision.promote
    assert decision.comparison.difference.high < 0
    assert "not non-inferior" in decision.reason


def test_tie_within_the_margin_is_promoted_but_not_without_a_margin(cohort):
    champion = _scores(cohort, 1.5)
    rng = np.random.default_rng(11)
    challenger = np.clip(champion + rng.normal(scale=0.002, size=N_ROWS), 0, 1)
    tie = _judge(cohort, challenger, champion=champion, margin=0.01)
    assert abs(tie.comparison.difference.estimate) < 0.005
    assert tie.promote, tie.reason
    assert _judge(cohort, challenger, champion=champion, margin=0.01, deployment_cost=0.0).promote
    strict = _judge(cohort, challenger, champion=champion, margin=0.0)
    assert not strict.promote
    assert "not non-inferior" in strict.reason
    # A deployment cost asks for a gain, which a tie does not show.
    costly = _judge(cohort, challenger, champion=champion, margin=0.01, deployment_cost=0.005)
    assert not costly.promote and "deployment cost" in costly.reason


def test_a_challenger_identical_to_the_champion_is_not_promoted(cohort):
    champion = _scores(cohort, 1.5)
    decision = _judge(cohort, champion.copy(), champion=champion, margin=0.01)
    assert not decision.promote
    assert "identical predictions" in decision.reason


def test_without_a_champion_the_floors_alone_decide(cohort):
    good = _judge(cohort, _scores(cohort, 1.5), auc_floor=0.6)
    assert good.promote and good.reason.startswith("no champion")
    assert good.comparison.difference is None and good.comparison.champion is None
    weak = _judge(cohort, _scores(cohort, 0.2), auc_floor=0.6)
    assert not weak.promote
    assert "below the floor" in weak.reason


def test_subgroup_recall_collapse_blocks_a_better_model(cohort):
    challenger = _scores(cohort, 2.0)
    prediction = (challenger >= np.quantile(challenger, 0.8)).astype(np.int8)
    prediction[cohort["gender"] == "Male"] = 0  # the model never flags men
    decision = _judge(cohort, challenger, _scores(cohort, 0.8, "other_noise"), prediction)
    assert not decision.promote
    assert decision.worst_subgroup == "gender=Male"
    table = decision.subgroups.set_index(["attribute", "group"])
    assert table.loc[("gender", "Male"), "recall"] == 0.0
    assert decision.subgroup_recall_gap == pytest.approx(decision.overall_recall)
    assert "subgroup recall collapse" in decision.reason
    # The rare race group is reported but has too few positives to be judged.
    asian = table.loc[("race", "Asian")]
    assert not asian["judged"] and asian["positives"] < 30


def test_policy_and_data_errors_are_explicit(cohort):
    with pytest.raises(gate.GateError, match="n_bootstrap"):
        gate.GatePolicy(n_bootstrap=100)
    with pytest.raises(gate.GateError, match="both positive and negative"):
        gate.compare_auc(np.zeros(50), np.linspace(0, 1, 50))


def test_bootstrap_metrics_match_direct_computation(cohort):
    labels = cohort["labels"]
    probability = _scores(cohort, 1.5)
    prediction = (probability >= 0.3).astype(np.int8)
    metrics = gate.bootstrap_metrics(labels, probability, prediction, 1000, seed=5)
    true_positive = int((prediction & labels).sum())
    assert metrics["recall"].estimate == pytest.approx(true_positive / labels.sum())
    assert metrics["precision"].estimate == pytest.approx(true_positive / prediction.sum())
    assert metrics["brier"].estimate == pytest.approx(np.mean((probability - labels) ** 2))
    assert metrics["pr_auc"].estimate == pytest.approx(average_precision_score(labels, probability))
    for interval in metrics.values():
        assert interval.low < interval.estimate < interval.high
