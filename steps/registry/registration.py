"""Register the best model of a training run and promote it only when the gate says so.

``register`` takes the family-best runs of a training run (by id, or the latest training run),
registers the one with the best validation ROC-AUC as a new version of ``health-predict`` with
alias ``challenger``, and judges it against the ``champion`` on labelled evaluation data with
``steps.evaluation.gate`` (paired bootstrap, non-inferiority margin, floors). The decision is
written as tags on the version, the model card becomes its description, and everything is logged
to a run in ``HealthPredict_Registry``.

Idempotent and crash-safe: the version carries its source run id (tag
``health_predict.source_run_id``, set in the same call that creates it), so a second call finds it
instead of registering again; the ``promoted`` tag is written last and marks a finished decision,
which is never re-judged. A call that finds a finished promotion whose aliases were not moved yet
(a crash in between) moves them, unless the champion changed since the decision or the version was
rolled back.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from steps.core import config, tracking
from steps.core.tracking import FAMILY_TAG, STEP_TAG
from steps.evaluation import calibration, gate, model_card, subgroups
from steps.registry.candidates import (
    RegistrationError,
    best_family_run,
    default_eval_data_uri,
    disjoint_from_training,
    evaluation_target,
    family_best_runs,
    latest_training_run_id,
    load_evaluation_data,
    predict,
    training_data_files,
)
from steps.registry.versions import (
    JUDGED_AGAINST_TAG,
    NO_VERSION,
    PROMOTED_TAG,
    decision_tags,
    promote,
    promotion_lock,
    register_version,
    start_registry_run,
)


@dataclass(frozen=True)
class RegistrationDecision:
    """What ``register`` did: the version, whether it is champion, why, and the aliases after."""

    version: str
    promoted: bool
    reason: str
    action: str  # "judged", "repaired" (finished an interrupted promotion) or "already-decided"
    champion_version: str | None
    previous_champion_version: str | None
    champion_changed: bool
    source_run_id: str
    train_run_id: str
    registry_run_id: str

    def verdict(self) -> str:
        """One line for humans and logs."""
        name = f"{config.MODEL_NAME} v{self.version}"
        if self.promoted:
            state = "PROMOTED to champion" if self.champion_changed else "champion (no change)"
        else:
            champion = f"v{self.champion_version}" if self.champion_version else "none"
            state = f"NOT promoted (champion stays {champion})"
        return f"{name}: {state} [{self.action}]: {self.reason}"


def _score_models(
    version: str, champion: str | None, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Challenger probability and prediction, and champion probability (None without one)."""
    probability, prediction = predict(config.model_version_uri(version), frame)
    champion_probability = None
    if champion is not None:
        champion_probability, _ = predict(config.model_version_uri(champion), frame)
    return probability, prediction, champion_probability


def _log_model_card(client: MlflowClient, facts: model_card.ModelCardFacts, version: str) -> None:
    """Log the card and its tables on the registry run, copy it to the source run, and make it
    the version's description."""
    with tempfile.TemporaryDirectory() as folder:
        card_path = Path(folder) / "model_card.md"
        card_path.write_text(model_card.render(facts), encoding="utf-8")
        mlflow.log_artifact(str(card_path))
        client.log_artifact(facts.source_run_id, str(card_path))
    mlflow.log_text(facts.decision.subgroups.to_csv(index=False), "evaluation/subgroups.csv")
    mlflow.log_text(facts.calibration.to_csv(index=False), "evaluation/calibration.csv")
    card_uri = mlflow.get_artifact_uri("model_card.md")
    description = model_card.registry_description(facts, card_uri)
    client.update_model_version(config.MODEL_NAME, version, description=description)


def _log_gate_metrics(facts: model_card.ModelCardFacts) -> None:
    """The gate's numbers as metrics of the registry run."""
    decision = facts.decision
    comparison = decision.comparison
    difference = (
        {
            "champion_roc_auc": comparison.champion.estimate,
            "auc_difference": comparison.difference.estimate,
            "auc_difference_ci_low": comparison.difference.low,
            "auc_difference_ci_high": comparison.difference.high,
        }
        if comparison.difference
        else {}
    )
    mlflow.log_metrics(
        {
            "challenger_roc_auc": comparison.challenger.estimate,
            "challenger_roc_auc_ci_low": comparison.challenger.low,
            "challenger_roc_auc_ci_high": comparison.challenger.high,
            **difference,
            "subgroup_recall_gap": decision.subgroup_recall_gap,
            "expected_calibration_error": facts.expected_calibration_error,
            **{f"eval_{name}": interval.estimate for name, interval in facts.metrics.items()},
            "eval_rows": facts.evaluation.rows,
        }
    )


def _judge_and_record(
    client: MlflowClient,
    version: str,
    source: Run,
    train_run_id: str,
    eval_data_uri: str,
    policy: gate.GatePolicy,
    registry_run_id: str,
) -> gate.GateDecision:
    """Evaluate challenger ``version`` vs champion, log the evidence and model card, tag it."""
    champion = tracking.alias_version(config.CHAMPION_ALIAS)
    comparison_champion = champion if champion != version else None
    evaluation = load_evaluation_data(
        eval_data_uri, evaluation_target(client, source, train_run_id)
    )
    run_tags = {**client.get_run(train_run_id).data.tags, **source.data.tags}
    evaluation, overlap_tags = disjoint_from_training(evaluation, run_tags)
    if evaluation.summary.rows == 0:
        raise RegistrationError(f"no label-eligible rows in {eval_data_uri}")
    labels = evaluation.labels
    probability, prediction, champion_probability = _score_models(
        version, comparison_champion, evaluation.frame
    )
    groups = subgroups.subgroups_of(evaluation.frame)
    decision = gate.judge(labels, probability, prediction, groups, champion_probability, policy)
    calibration_bins = calibration.calibration_table(labels, probability)
    facts = model_card.ModelCardFacts(
        model_name=config.MODEL_NAME,
        version=version,
        family=source.data.tags.get(FAMILY_TAG, "unknown"),
        source_run_id=source.info.run_id,
        train_run_id=train_run_id,
        source_params=dict(source.data.params),
        source_metrics=dict(source.data.metrics),
        training_data=training_data_files(client, source, train_run_id),
        evaluation=evaluation.summary,
        decision=decision,
        champion_version=comparison_champion,
        metrics=gate.bootstrap_metrics(
            labels, probability, prediction, policy.n_bootstrap, policy.seed, policy.confidence
        ),
        calibration=calibration_bins,
        expected_calibration_error=calibration.expected_calibration_error(labels, probability),
        registry_run_id=registry_run_id,
    )
    _log_model_card(client, facts, version)
    _log_gate_metrics(facts)
    tags = overlap_tags | decision_tags(
        decision, evaluation.summary, eval_data_uri, comparison_champion, registry_run_id
    )
    mlflow.set_tags({f"gate.{key}": value for key, value in tags.items()})
    for key, value in tags.items():  # PROMOTED_TAG comes last: the commit marker
        client.set_model_version_tag(config.MODEL_NAME, version, key, value)
    return decision


@dataclass(frozen=True)
class _Outcome:
    """A version's gate outcome: judged now, or read back from its decision tags."""

    promoted: bool
    reason: str
    action: str
    judged_against: str | None


def _log_registry_inputs(
    train_run_id: str, source: Run, policy: gate.GatePolicy, eval_data_uri: str
) -> None:
    """Tag the registry run with what it registers and log the gate policy."""
    mlflow.set_tags(
        {
            STEP_TAG: "register",
            tracking.TRAINING_RUN_TAG: train_run_id,
            tracking.SOURCE_RUN_TAG: source.info.run_id,
            "eval_data_uri": eval_data_uri,
        }
    )
    # Prefixed: `mlflow run` already logs the entry point's own parameters on this run.
    mlflow.log_params({f"gate.{name}": value for name, value in asdict(policy).items()})


def _recorded_outcome(version_tags: dict[str, str]) -> _Outcome:
    """The finished decision stored in a version's tags."""
    judged = version_tags.get(JUDGED_AGAINST_TAG, NO_VERSION)
    return _Outcome(
        promoted=version_tags[PROMOTED_TAG] == "true",
        reason=version_tags.get("reason", ""),
        action="already-decided",
        judged_against=None if judged == NO_VERSION else judged,
    )


def _interrupted_promotion(
    outcome: _Outcome, champion_before: str | None, version_tags: dict[str, str]
) -> bool:
    """A recorded promotion whose aliases never moved, with the champion it was judged against
    still in place and the version never rolled back."""
    return (
        outcome.promoted
        and outcome.action == "already-decided"
        and champion_before == outcome.judged_against
        and version_tags.get(tracking.ROLLED_BACK_TAG) != "true"
    )


def _record_result(result: RegistrationDecision) -> None:
    """Tag the registry run with the outcome and log it as ``registration_decision.json``."""
    mlflow.set_tags(
        {
            "action": result.action,
            "promoted": str(result.promoted).lower(),
            "champion_changed": str(result.champion_changed).lower(),
            "champion_version": result.champion_version or NO_VERSION,
        }
    )
    mlflow.log_dict(asdict(result), "registration_decision.json")


def register(
    train_run_id: str | None = None,
    eval_data_uri: str | None = None,
    policy: gate.GatePolicy | None = None,
) -> RegistrationDecision:
    """Register the training run's best family model, judge it, and promote it if it passes."""
    client = tracking.mlflow_client()
    policy = policy or gate.GatePolicy()
    train_run_id = train_run_id or latest_training_run_id()
    eval_data_uri = eval_data_uri or default_eval_data_uri(client, train_run_id)
    source = best_family_run(family_best_runs(client, train_run_id))
    with start_registry_run(f"register-{source.info.run_id[:8]}") as run:
        registry_run_id = run.info.run_id
        _log_registry_inputs(train_run_id, source, policy, eval_data_uri)
        registered = register_version(client, source, train_run_id)
        version, version_tags = str(registered.version), registered.tags
        mlflow.set_tag("model_version", version)
        # One judge-and-promote at a time: the champion read here is still the champion when
        # the aliases move, and a concurrent register judges against this one's outcome.
        with promotion_lock(client):
            champion_before = tracking.alias_version(config.CHAMPION_ALIAS)
            if PROMOTED_TAG in version_tags:
                outcome = _recorded_outcome(version_tags)
            else:
                client.set_registered_model_alias(
                    config.MODEL_NAME, config.CHALLENGER_ALIAS, version
                )
                decision = _judge_and_record(
                    client, version, source, train_run_id, eval_data_uri, policy, registry_run_id
                )
                outcome = _Outcome(decision.promote, decision.reason, "judged", None)
            interrupted = _interrupted_promotion(outcome, champion_before, version_tags)
            champion_changed, action = False, outcome.action
            if (action == "judged" and outcome.promoted) or interrupted:
                champion_changed = promote(client, version, champion_before)
                if interrupted and champion_changed:
                    action = "repaired"
        result = RegistrationDecision(
            version=version,
            promoted=outcome.promoted,
            reason=outcome.reason,
            action=action,
            champion_version=tracking.alias_version(config.CHAMPION_ALIAS),
            previous_champion_version=tracking.alias_version(config.PREVIOUS_CHAMPION_ALIAS),
            champion_changed=champion_changed,
            source_run_id=source.info.run_id,
            train_run_id=train_run_id,
            registry_run_id=registry_run_id,
        )
        _record_result(result)
    return result
