"""Model Registry operations: versions by source run, decision tags, aliases and rollback."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion

from steps.core import config, tracking
from steps.core.tracking import MODEL_URI_TAG, STEP_TAG
from steps.evaluation import gate, model_card
from steps.registry.candidates import RegistrationError

# Decision tags on the version; PROMOTED_TAG is written last and marks a finished decision.
PROMOTED_TAG = "promoted"


JUDGED_AGAINST_TAG = "champion_version"


NO_VERSION = "none"

# The registry-level mutex of judging and promoting: a registered model of this name exists while
# one caller holds it (creating a registered model is atomic in every MLflow store).
LOCK_SUFFIX = ".promotion-lock"
LOCK_ACQUIRED_TAG = "acquired_at"


@contextlib.contextmanager
def promotion_lock(
    client: MlflowClient, timeout_s: float = 3600, stale_s: float = 7200, poll_s: float = 1.0
) -> Iterator[None]:
    """Hold the registry's promotion lock: one judge-and-promote (or rollback) at a time, across
    processes and hosts. Waits up to ``timeout_s``; a lock older than ``stale_s`` (a crashed
    holder) is broken."""
    name = config.MODEL_NAME + LOCK_SUFFIX
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                name, tags={LOCK_ACQUIRED_TAG: f"{time.time():.3f}"},
                description="Held while a register or rollback judges and promotes; "
                "delete it only if none runs.",
            )  # fmt: skip
            break
        except mlflow.exceptions.MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue  # the holder released it between our insert and the store's lookup
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            held = client.get_registered_model(name).tags.get(LOCK_ACQUIRED_TAG, "0")
            if time.time() - float(held) > stale_s:
                client.delete_registered_model(name)
                continue
        if time.monotonic() > deadline:
            raise RegistrationError(
                f"another register or rollback has held '{name}' for over {timeout_s:.0f} s"
            )
        time.sleep(poll_s)
    try:
        yield
    finally:
        with contextlib.suppress(mlflow.exceptions.MlflowException):
            client.delete_registered_model(name)


def find_version(client: MlflowClient, source_run_id: str) -> ModelVersion | None:
    """The version registered earlier from ``source_run_id`` (the lowest, if a race made two)."""
    versions = client.search_model_versions(
        f"name = '{config.MODEL_NAME}' and tags.`{tracking.SOURCE_RUN_TAG}` = '{source_run_id}'"
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
        tags={tracking.SOURCE_RUN_TAG: source_run_id, tracking.TRAINING_RUN_TAG: train_run_id},
    )
    winner = find_version(client, source_run_id)
    if winner is not None and str(winner.version) != str(created.version):
        # A concurrent call registered the same run first: keep one version per source run.
        client.delete_model_version(config.MODEL_NAME, created.version)
        return winner
    return created


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


def start_registry_run(name: str) -> mlflow.ActiveRun:
    """A run in ``HealthPredict_Registry``, or the one ``mlflow run`` created (MLFLOW_RUN_ID)."""
    config.ensure_experiment(config.REGISTRY_EXPERIMENT)
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.start_run()
    return mlflow.start_run(run_name=name)


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
    client = tracking.mlflow_client()
    with promotion_lock(client):
        return _rollback(client)


def _rollback(client: MlflowClient) -> RollbackResult:
    previous = tracking.alias_version(config.PREVIOUS_CHAMPION_ALIAS)
    current = tracking.alias_version(config.CHAMPION_ALIAS)
    if previous is None:
        raise RegistrationError(f"no '{config.PREVIOUS_CHAMPION_ALIAS}' alias to roll back to")
    with start_registry_run("rollback"):
        mlflow.set_tags({STEP_TAG: "rollback", "action": "rollback"})
        client.set_registered_model_alias(config.MODEL_NAME, config.CHAMPION_ALIAS, previous)
        client.delete_model_version_tag(config.MODEL_NAME, previous, tracking.ROLLED_BACK_TAG)
        if current is not None and current != previous:
            client.set_model_version_tag(
                config.MODEL_NAME, current, tracking.ROLLED_BACK_TAG, "true"
            )
            client.set_registered_model_alias(
                config.MODEL_NAME, config.PREVIOUS_CHAMPION_ALIAS, current
            )
        result = RollbackResult(rolled_back_from=current or NO_VERSION, champion_version=previous)
        mlflow.set_tags({"rolled_back_from": result.rolled_back_from, "champion_version": previous})
    return result
