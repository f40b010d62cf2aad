"""One batch's sequence, the same for the monitoring DAG, ``simulate`` and ``benchmarks/replay.py``.

:func:`handle_batch` runs it; the DAG's tasks run the same steps one per task:

1. **begin**: the loop state (:mod:`steps.orchestration.loop`), after releasing on purpose any
   held batch the caller names (:func:`begin`);
2. **prepare**: store the batch's inputs; labels of batches ``<= i - lag`` have matured;
3. **assess**: monitor the batch with the champion; :func:`alert_kinds` reads which alerts it
   raised (``data_quality``, ``performance``, ``estimated_performance``);
4. **decide**: the :class:`Policy` says whether to retrain (:func:`decide`); a batch with a
   ``data_quality`` alert is held out of retraining and gating, its labels too when they mature,
   until released on purpose;
5. **retrain / gate / deploy**: the challenger is trained on the usable matured batches but the
   newest and gated on the newest (patient-disjoint); it is promoted when the gate passes with
   the policy's deployment cost (:meth:`Policy.deployment_cost`);
6. **record**: tag the monitoring run and advance the loop state (:func:`record`).

Where the work runs is a :class:`Services` object: :class:`EntryPointServices` runs the
``monitor``, ``train`` and ``register`` MLflow entry points and the registry (the DAG and
``simulate``); the replay's in-process refits (``steps.orchestration.refits.RefitServices``)
keep one run on a shared machine. The sequence and the decisions are this module's in both.

Policies (:func:`parse_policy`): ``frozen`` never retrains; ``every:K`` retrains after every K-th
batch and promotes what the gate passes; ``cost:C`` retrains whenever labels have matured and
promotes only when the gate's paired ROC-AUC gain is at least ``C`` (the deployment cost), or
at the non-inferiority gate alone on a ``performance`` alert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

from steps.orchestration import loop

ALERT_KINDS = ("data_quality", "performance", "estimated_performance")
HOLD_ALERT = "data_quality"
DEPLOY_ANYWAY_ALERT = "performance"


def alert_kinds(summary: dict | None) -> list[str]:
    """The sorted alert kinds a ``monitor`` summary raised (none without a summary)."""
    if not summary:
        return []
    return sorted(summary["alerts"])


class PolicyError(ValueError):
    """A policy string that does not parse."""


@dataclass(frozen=True)
class Policy:
    """When to retrain and what a promotion must show; ``kind`` is frozen, every or cost."""

    kind: str
    every: int = 0
    cost: float = 0.0

    def __str__(self) -> str:
        return {"frozen": "frozen", "every": f"every:{self.every}", "cost": f"cost:{self.cost:g}"}[
            self.kind
        ]

    def retrains_at(self, batch_index: int) -> bool:
        """Whether this policy asks for a challenger after batch ``batch_index``."""
        if self.kind == "frozen":
            return False
        if self.kind == "every":
            return (batch_index + 1) % self.every == 0
        return True

    def deployment_cost(self, alerts: list[str]) -> float:
        """The paired ROC-AUC gain the gate asks of a challenger (0 on a performance alert)."""
        if self.kind != "cost" or DEPLOY_ANYWAY_ALERT in alerts:
            return 0.0
        return self.cost


def parse_policy(text: str) -> Policy:
    """``frozen``, ``every:K`` (K >= 1) or ``cost:C`` (C >= 0, a ROC-AUC gain) as a Policy."""
    kind, _, value = str(text).strip().partition(":")
    try:
        if kind == "frozen" and not value:
            return Policy("frozen")
        if kind == "every" and int(value) >= 1:
            return Policy("every", every=int(value))
        if kind == "cost" and float(value) >= 0:
            return Policy("cost", cost=float(value))
    except ValueError:
        pass
    raise PolicyError(f"policy must be frozen, every:K (K >= 1) or cost:C (C >= 0), not {text!r}")


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one batch, from its alerts."""

    batch_index: int
    policy: str
    alerts: list[str]
    hold: bool
    retrain: bool
    deployment_cost: float

    def tags(self) -> dict[str, object]:
        """The decision as monitoring-run tags."""
        return {
            "policy": self.policy,
            "alerts": ",".join(self.alerts) or "none",
            "deployment_cost": self.deployment_cost,
        }


def decide(policy: Policy, state: loop.LoopState, batch_index: int, alerts: list[str]) -> Decision:
    """Hold the batch on a data_quality alert; retrain when the policy asks and two usable
    batches have matured (one to learn from, one to gate on)."""
    retrain = policy.retrains_at(batch_index) and (
        loop.retraining_plan(state, batch_index) is not None
    )
    return Decision(
        batch_index=batch_index,
        policy=str(policy),
        alerts=list(alerts),
        hold=HOLD_ALERT in alerts,
        retrain=retrain,
        deployment_cost=policy.deployment_cost(alerts) if retrain else 0.0,
    )


@dataclass
class Outcome:
    """A retraining's result: the training run (or refit) and the champion before and after."""

    train_run_id: str
    champion_before: str | None
    champion_after: str | None

    @property
    def champion_changed(self) -> bool:
        return self.champion_after is not None and self.champion_after != self.champion_before


class Services(Protocol):
    """Where monitoring, retraining and the registry run."""

    def champion(self) -> str | None:
        """The served model's identity (a registry version, or a refit's key)."""

    def monitor(self, state: loop.LoopState, batch: loop.Batch, champion: str) -> dict | None:
        """The batch's monitoring summary (``monitor_run_id`` when a run recorded it)."""

    def retrain(
        self, state: loop.LoopState, batch: loop.Batch, deployment_cost: float
    ) -> Outcome | None:
        """Train, gate with ``deployment_cost`` and promote on a pass; None if too early."""


@dataclass
class EntryPointServices:
    """The ``monitor``, ``train`` and ``register`` entry points and the model registry.

    ``training`` holds ``train`` parameters (None or missing: the MLproject default, so the
    families are ``train``'s own); ``gate`` holds ``register`` parameters.
    """

    data_uri: str | None = None
    thresholds: dict[str, float] | None = None
    training: dict[str, object] = field(default_factory=dict)
    gate: dict[str, float] | None = None

    def champion(self) -> str | None:
        return loop.champion_version()

    def monitor(self, state: loop.LoopState, batch: loop.Batch, champion: str) -> dict:
        return loop.run_monitor(batch, state, champion, self.thresholds, self.data_uri)

    def retrain(
        self, state: loop.LoopState, batch: loop.Batch, deployment_cost: float
    ) -> Outcome | None:
        gate = {**(self.gate or {}), "deployment_cost": deployment_cost}
        outcome = loop.retrain_for_batch(state, batch, self.training, gate, self.data_uri)
        if outcome is None:
            return None
        return Outcome(outcome.train_run_id, outcome.champion_before, outcome.champion_after)


def begin(
    batch_size: int,
    data_uri: str | None = None,
    label_lag_batches: int | None = None,
    release: list[int] | None = None,
    reason: str = "released on request",
) -> loop.LoopState:
    """The loop state (started or resumed), after releasing the held batches in ``release``.

    A batch released earlier is skipped (a retried task repeats the request); one never held is
    refused (``loop.LoopStateError``).
    """
    state = loop.start_or_resume(batch_size, data_uri, label_lag_batches)
    released = {entry["batch_index"] for entry in state.releases}
    for index in release or []:
        if int(index) in state.held or int(index) not in released:
            state = loop.release_held(state, int(index), reason, data_uri)
    return state


def record(
    state: loop.LoopState,
    batch_index: int,
    decision: Decision,
    champion_before: str | None,
    champion_after: str | None,
    train_run_id: str | None,
    monitor_run_id: str | None,
    data_uri: str | None = None,
) -> loop.LoopState:
    """Tag the monitoring run with the decision and advance the loop (holding the batch on a
    data_quality alert)."""
    retraining = None
    if train_run_id:
        retraining = {
            "train_run_id": train_run_id,
            "champion_before": champion_before,
            "champion_after": champion_after,
            "deployment_cost": decision.deployment_cost,
        }
    return loop.record_batch(
        state,
        batch_index,
        champion_after,
        retraining,
        monitor_run_id,
        data_uri,
        held=decision.hold,
        decision=decision.tags(),
    )


@dataclass
class BatchRecord:
    """What happened to one batch: the decision, the served model before and after."""

    batch_index: int
    rows: int
    champion: str | None
    champion_after: str | None
    decision: Decision
    train_run_id: str | None
    summary: dict | None

    def row(self) -> dict[str, object]:
        """A flat timeline row (no patient value)."""
        return {
            "batch_index": self.batch_index,
            "rows": self.rows,
            "champion": self.champion,
            "champion_after": self.champion_after,
            **{k: v for k, v in asdict(self.decision).items() if k != "batch_index"},
            "alerts": ",".join(self.decision.alerts),
            "retrained": self.train_run_id is not None,
            "deployed": self.champion_after != self.champion,
        }


def handle_batch(
    services: Services, policy: Policy, state: loop.LoopState, data_uri: str | None = None
) -> tuple[loop.LoopState, BatchRecord | None]:
    """Run the whole sequence on the loop's next batch; None when future_data is exhausted."""
    batch = loop.prepare_batch(state.next_batch_index, state.batch_size, data_uri)
    if batch is None:
        return state, None
    champion = services.champion()
    summary = services.monitor(state, batch, champion)
    decision = decide(policy, state, batch.index, alert_kinds(summary))
    outcome = services.retrain(state, batch, decision.deployment_cost) if decision.retrain else None
    champion_after = services.champion()
    train_run_id = outcome.train_run_id if outcome else None
    monitor_run_id = (summary or {}).get("monitor_run_id")
    state = record(
        state, batch.index, decision, champion, champion_after, train_run_id, monitor_run_id,
        data_uri,
    )  # fmt: skip
    return state, BatchRecord(
        batch.index, batch.rows, champion, champion_after, decision, train_run_id, summary
    )
