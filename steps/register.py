"""Register the best model of a training run and promote it only when the gate says so.

``register`` takes the family-best runs of a training run (by id, or the latest training run),
registers the one with the best validation ROC-AUC as a new version of ``health-predict`` with
alias ``challenger``, and judges it against the ``champion`` on labelled evaluation data with
``steps.evaluation.gate`` (paired bootstrap, non-inferiority margin, floors). The decision is
written as tags on the version, the model card becomes its description, and everything is logged
to a run in
``HealthPredict_Registry``. ``rollback`` swaps ``champion`` and ``previous-champion``.

Idempotent and crash-safe: the version carries its source run id (tag
``health_predict.source_run_id``, set in the same call that creates it), so a second call finds it
instead of registering again; the ``promoted`` tag is written last and marks a finished decision,
which is never re-judged. A call that finds a finished promotion whose aliases were not moved yet
(a crash in between) moves them, unless the champion changed since the decision or the version was
rolled back.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.core.tracking import DATA_TAG_PREFIX, FAMILY_TAG, MODEL_URI_TAG, ROLE_TAG, STEP_TAG
from steps.data import labelled
from steps.evaluation import evaluate, gate, model_card, patients, subgroups

# Validation ROC-AUC of the uncalibrated scores (as steps.train chooses the family): isotonic
# calibration's ties would lower a calibrated model's ROC-AUC without changing its ranking.
SELECTION_METRIC = "val_raw_roc_auc"

SOURCE_RUN_TAG = "health_predict.source_run_id"
TRAINING_RUN_TAG = "health_predict.training_run_id"
ROLLED_BACK_TAG = "health_predict.rolled_back"
# Decision tags on the version; PROMOTED_TAG is written last and marks a finished decision.
PROMOTED_TAG = "promoted"
JUDGED_AGAINST_TAG = "champion_version"
NO_VERSION = "none"


class RegistrationError(RuntimeError):
    """Nothing to register, or the evaluation data or a model cannot support a decision."""


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


@dataclass(frozen=True)
class EvaluationData:
    """Labelled, label-eligible evaluation rows and where they came from."""

    frame: pd.DataFrame
    labels: np.ndarray
    summary: model_card.EvaluationSummary


def _client() -> MlflowClient:
    config.configure_mlflow()
    return MlflowClient()


def latest_training_run_id() -> str:
    """The newest finished training run, in whichever experiment it was logged."""
    run_id = tracking.latest_training_run_id()
    if run_id is None:
        raise RegistrationError("no finished training run found: run train first")
    return run_id


def default_eval_data_uri(client: MlflowClient, train_run_id: str) -> str:
    """``initial_test`` of the data store the training run read (its ``resolved.data_uri``),
    else of the configured data store."""
    params = client.get_run(train_run_id).data.params
    data_uri = params.get(f"{config.RESOLVED_PREFIX}data_uri") or config.data_uri()
    return storage.join(data_uri, config.INITIAL_TEST_KEY)


def family_best_runs(client: MlflowClient, train_run_id: str) -> list[Run]:
    """The family-best runs nested in the training run (or one level deeper, in family runs)."""
    experiment_id = client.get_run(train_run_id).info.experiment_id

    def children(parent_run_id: str, role: str) -> list[Run]:
        return client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{ROLE_TAG}` = '{role}'"
            ),
        )

    found = children(train_run_id, "family_best")
    if not found:
        for family_run in children(train_run_id, "family_parent"):
            found += children(family_run.info.run_id, "family_best")
    return found


def best_family_run(runs: list[Run]) -> Run:
    """The family-best run whose logged model has the highest ``SELECTION_METRIC``, found with
    ``mlflow.search_logged_models`` over the runs' models (ties: the later run id)."""
    by_id = {run.info.run_id: run for run in runs if MODEL_URI_TAG in run.data.tags}
    if by_id:
        quoted = ", ".join(f"'{run_id}'" for run_id in sorted(by_id))
        models = mlflow.search_logged_models(
            experiment_ids=sorted({run.info.experiment_id for run in by_id.values()}),
            filter_string=f"source_run_id IN ({quoted}) AND metrics.{SELECTION_METRIC} >= 0",
            order_by=[
                {"field_name": f"metrics.{SELECTION_METRIC}", "ascending": False},
                {"field_name": "source_run_id", "ascending": False},
            ],
            max_results=1,
            output_format="list",
        )
        if models:
            return by_id[models[0].source_run_id]
    raise RegistrationError(
        f"no family-best run whose logged model has metric {SELECTION_METRIC} "
        f"(and tag {MODEL_URI_TAG} on the run)"
    )


def load_evaluation_data(eval_data_uri: str, target: str = "30d") -> EvaluationData:
    """Read labelled raw-format CSV(s) (comma-separated files or folders) and keep eligible rows."""
    try:
        files = labelled.read_labelled(eval_data_uri)
    except labelled.LabelledDataError as exc:
        raise RegistrationError(f"evaluation data: {exc}") from exc
    frame, labels = evaluate.labelled_rows(files.frame, target)
    return EvaluationData(
        frame=frame.reset_index(drop=True),
        labels=labels,
        summary=model_card.EvaluationSummary(
            uris=files.uris,
            sha256=files.sha256,
            rows=len(frame),
            excluded_rows=len(files.frame) - len(frame),
            positives=int(labels.sum()),
            target=target,
        ),
    )


def disjoint_from_training(
    evaluation: EvaluationData, tags: dict[str, str]
) -> tuple[EvaluationData, dict[str, str]]:
    """The evaluation rows whose patients the model never saw in training, asserted, and the
    counts as tags."""
    try:
        training = patients.training_patients(tags)
        if training is None:
            return evaluation, {"patient_overlap_check": "not possible: no training data URIs"}
        disjoint = patients.disjoint_rows(evaluation.frame, training)
    except patients.PatientOverlapError as exc:
        raise RegistrationError(f"evaluation data: {exc}") from exc
    frame = evaluation.frame[disjoint.keep].reset_index(drop=True)
    labels = evaluation.labels[disjoint.keep]
    summary = replace(
        evaluation.summary,
        rows=len(frame),
        positives=int(labels.sum()),
        patient_overlap_rows=disjoint.rows_excluded,
        patient_overlap_patients=disjoint.patients_excluded,
    )
    tags = {"patient_overlap_check": "passed", **disjoint.tags()}
    return EvaluationData(frame=frame, labels=labels, summary=summary), tags


def predict(model_uri: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(probability_score, prediction)`` of the pyfunc at ``model_uri`` on the input columns."""
    model = mlflow.pyfunc.load_model(model_uri)
    inputs = frame[[c for c in columns.INPUT_COLUMNS if c in frame.columns]]
    output = pd.DataFrame(model.predict(inputs))
    missing = {"probability_score", "prediction"} - set(output.columns)
    if missing or len(output) != len(frame):
        raise RegistrationError(
            f"{model_uri} returned {len(output)} rows for {len(frame)}"
            + (f" and lacks column(s) {sorted(missing)}" if missing else "")
        )
    probability = output["probability_score"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(probability) & (probability >= 0) & (probability <= 1)):
        raise RegistrationError(f"{model_uri} returned probabilities outside [0, 1]")
    return probability, output["prediction"].to_numpy().astype(np.int8)


def find_version(client: MlflowClient, source_run_id: str) -> ModelVersion | None:
    """The version registered earlier from ``source_run_id`` (the lowest, if a race made two)."""
    versions = client.search_model_versions(
        f"name = '{config.MODEL_NAME}' and tags.`{SOURCE_RUN_TAG}` = '{source_run_id}'"
    )
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register_version(client: MlflowClient, source: Run, train_run_id: str) -> ModelVersion:
    """The version for ``source``: found by its source-run tag, or registered now."""
    source_run_id = source.info.run_id
    if existing := find_version(client, source_run_id):
        return existing
    created = mlflow.register_model(
        source.data.tags[MODEL_URI_TAG],
        config.MODEL_NAME,
        tags={SOURCE_RUN_TAG: source_run_id, TRAINING_RUN_TAG: train_run_id},
    )
    winner = find_version(client, source_run_id)
    if winner is not None and str(winner.version) != str(created.version):
        # A concurrent call registered the same run first: keep one version per source run.
        client.delete_model_version(config.MODEL_NAME, created.version)
        return winner
    return created


def _training_data(
    client: MlflowClient, source: Run, train_run_id: str
) -> list[model_card.DataFile]:
    """Data hashes recorded on the source (or training) run, with row counts from split's manifest
    (rows of the file) or else the training run's ``<name>_rows`` parameters (labelled rows)."""
    training_run = client.get_run(train_run_id)
    tags = {**training_run.data.tags, **source.data.tags}
    manifest_uri = storage.join(config.data_uri(), config.PROCESSED_MANIFEST_KEY)
    rows_by_hash = {}
    if storage.exists(manifest_uri):
        files = storage.read_json(manifest_uri).get("files", {})
        rows_by_hash = {entry["sha256"]: entry.get("rows") for entry in files.values()}
    files = []
    for key, sha256 in sorted(tags.items()):
        if key.startswith(DATA_TAG_PREFIX) and key.endswith("_sha256"):
            name = key[len(DATA_TAG_PREFIX) : -len("_sha256")]
            rows = rows_by_hash.get(sha256) or training_run.data.params.get(f"{name}_rows")
            files.append(model_card.DataFile(name, sha256, int(rows) if rows else None))
    return files


def _round(value: float | None) -> str:
    return NO_VERSION if value is None else f"{value:.6f}"


def decision_tags(
    decision: gate.GateDecision,
    evaluation: model_card.EvaluationSummary,
    eval_data_uri: str,
    champion: str | None,
    registry_run_id: str,
) -> dict[str, str]:
    """The tags that explain a decision, ``promoted`` last (it marks the decision finished)."""
    comparison, policy = decision.comparison, decision.policy
    difference = comparison.difference
    return {
        "challenger_roc_auc": _round(comparison.challenger.estimate),
        "challenger_roc_auc_ci_low": _round(comparison.challenger.low),
        "challenger_roc_auc_ci_high": _round(comparison.challenger.high),
        "champion_roc_auc": _round(comparison.champion.estimate if comparison.champion else None),
        JUDGED_AGAINST_TAG: champion or NO_VERSION,
        "auc_difference": _round(difference.estimate if difference else None),
        "auc_difference_ci_low": _round(difference.low if difference else None),
        "auc_difference_ci_high": _round(difference.high if difference else None),
        "confidence": str(comparison.confidence),
        "margin": str(policy.margin),
        "auc_floor": str(policy.auc_floor),
        "max_subgroup_recall_gap": str(policy.max_subgroup_recall_gap),
        "subgroup_recall_gap": _round(decision.subgroup_recall_gap),
        "worst_subgroup": decision.worst_subgroup or NO_VERSION,
        "n_bootstrap": str(policy.n_bootstrap),
        "bootstrap_seed": str(policy.seed),
        "eval_data_sha256": evaluation.sha256,
        "eval_data_uri": eval_data_uri,
        "eval_rows": str(evaluation.rows),
        "reason": decision.reason,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "registry_run_id": registry_run_id,
        PROMOTED_TAG: str(decision.promote).lower(),
    }


def promote(client: MlflowClient, version: str, champion: str | None) -> bool:
    """Point ``champion`` at ``version`` and ``previous-champion`` at the old one; True if moved."""
    if champion == version:
        return False
    if champion is not None:
        client.set_registered_model_alias(
            config.MODEL_NAME, config.PREVIOUS_CHAMPION_ALIAS, champion
        )
    client.set_registered_model_alias(config.MODEL_NAME, config.CHAMPION_ALIAS, version)
    return True


def _evaluation_target(client: MlflowClient, source: Run, train_run_id: str) -> str:
    """The label definition the source model was trained on (``30d`` when none was logged)."""
    training_params = client.get_run(train_run_id).data.params
    return source.data.params.get("target") or training_params.get("target", "30d")


def _score_models(
    version: str, champion: str | None, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Challenger probability and prediction, and champion probability (None without one)."""
    probability, prediction = predict(f"models:/{config.MODEL_NAME}/{version}", frame)
    champion_probability = None
    if champion is not None:
        champion_probability, _ = predict(f"models:/{config.MODEL_NAME}/{champion}", frame)
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
        eval_data_uri, _evaluation_target(client, source, train_run_id)
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
    calibration = evaluate.calibration_table(labels, probability)
    facts = model_card.ModelCardFacts(
        model_name=config.MODEL_NAME,
        version=version,
        family=source.data.tags.get(FAMILY_TAG, "unknown"),
        source_run_id=source.info.run_id,
        train_run_id=train_run_id,
        source_params=dict(source.data.params),
        source_metrics=dict(source.data.metrics),
        training_data=_training_data(client, source, train_run_id),
        evaluation=evaluation.summary,
        decision=decision,
        champion_version=comparison_champion,
        metrics=gate.bootstrap_metrics(
            labels, probability, prediction, policy.n_bootstrap, policy.seed, policy.confidence
        ),
        calibration=calibration,
        expected_calibration_error=evaluate.expected_calibration_error(labels, probability),
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


def _start_registry_run(name: str) -> mlflow.ActiveRun:
    """A run in ``HealthPredict_Registry``, or the one ``mlflow run`` created (MLFLOW_RUN_ID)."""
    config.ensure_experiment(config.REGISTRY_EXPERIMENT)
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run()
    return mlflow.start_run(run_name=name)


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
            TRAINING_RUN_TAG: train_run_id,
            SOURCE_RUN_TAG: source.info.run_id,
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
        and version_tags.get(ROLLED_BACK_TAG) != "true"
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
    client = _client()
    policy = policy or gate.GatePolicy()
    train_run_id = train_run_id or latest_training_run_id()
    eval_data_uri = eval_data_uri or default_eval_data_uri(client, train_run_id)
    source = best_family_run(family_best_runs(client, train_run_id))
    with _start_registry_run(f"register-{source.info.run_id[:8]}") as run:
        registry_run_id = run.info.run_id
        _log_registry_inputs(train_run_id, source, policy, eval_data_uri)
        registered = register_version(client, source, train_run_id)
        version, version_tags = str(registered.version), registered.tags
        mlflow.set_tag("model_version", version)
        champion_before = tracking.alias_version(config.CHAMPION_ALIAS)
        if PROMOTED_TAG in version_tags:
            outcome = _recorded_outcome(version_tags)
        else:
            client.set_registered_model_alias(config.MODEL_NAME, config.CHALLENGER_ALIAS, version)
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


@dataclass(frozen=True)
class RollbackResult:
    """The champion before and after a rollback."""

    rolled_back_from: str
    champion_version: str

    def verdict(self) -> str:
        """One line for humans and logs."""
        return (
            f"{config.MODEL_NAME}: champion rolled back from v{self.rolled_back_from} "
            f"to v{self.champion_version}"
        )


def rollback() -> RollbackResult:
    """Point ``champion`` at ``previous-champion`` and ``previous-champion`` at the demoted one.

    The demoted version is tagged ``health_predict.rolled_back=true`` so that ``register`` never
    re-promotes it while repairing; a second rollback undoes the first.
    """
    client = _client()
    previous = tracking.alias_version(config.PREVIOUS_CHAMPION_ALIAS)
    current = tracking.alias_version(config.CHAMPION_ALIAS)
    if previous is None:
        raise RegistrationError(f"no '{config.PREVIOUS_CHAMPION_ALIAS}' alias to roll back to")
    with _start_registry_run("rollback"):
        mlflow.set_tags({STEP_TAG: "rollback", "action": "rollback"})
        client.set_registered_model_alias(config.MODEL_NAME, config.CHAMPION_ALIAS, previous)
        client.delete_model_version_tag(config.MODEL_NAME, previous, ROLLED_BACK_TAG)
        if current is not None and current != previous:
            client.set_model_version_tag(config.MODEL_NAME, current, ROLLED_BACK_TAG, "true")
            client.set_registered_model_alias(
                config.MODEL_NAME, config.PREVIOUS_CHAMPION_ALIAS, current
            )
        result = RollbackResult(rolled_back_from=current or NO_VERSION, champion_version=previous)
        mlflow.set_tags({"rolled_back_from": result.rolled_back_from, "champion_version": previous})
    return result


HELP = {
    "train_run_id": "training run whose family-best models compete (empty: the newest one)",
    "eval_data_uri": (
        "labelled raw-format CSV(s) the gate judges on "
        "(empty: initial_test of the data store the training run read)"
    ),
    "margin": "non-inferiority margin on the ROC-AUC difference",
    "auc_floor": "lowest ROC-AUC a champion may have",
    "max_subgroup_recall_gap": "largest recall gap between age/sex/race subgroups",
    "n_bootstrap": "paired bootstrap resamples (at least 1,000)",
    "seed": "random seed of the bootstrap",
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.register [--train-run-id ID] [--eval-data-uri URI] ...`` or
    ``python -m steps.register --rollback``."""
    parser = config.entry_point_parser("register", __doc__, HELP)
    parser.add_argument(
        "--rollback", action="store_true", help="point champion back at previous-champion"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.rollback:
            print(rollback().verdict())
            return 0
        policy = gate.GatePolicy(
            margin=args.margin,
            auc_floor=args.auc_floor,
            max_subgroup_recall_gap=args.max_subgroup_recall_gap,
            n_bootstrap=args.n_bootstrap,
            seed=args.seed,
        )
        decision = register(args.train_run_id or None, args.eval_data_uri or None, policy)
    except (RegistrationError, gate.GateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(decision.verdict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
