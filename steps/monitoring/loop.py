"""The monitoring/retraining loop, shared by the Airflow DAGs and ``steps.simulate``.

One loop replays ``processed_data/future_data.csv`` batch by batch. Its durable state (next batch
index, batches seen, champion versions, retrainings) is a JSON object in the data store at
``config.LOOP_STATE_KEY``; it is advanced only after a batch is fully handled, and advancing is
idempotent, so a run killed mid-way redoes its batch once and a batch is never skipped or counted
twice.

Retraining after batch ``i`` trains on the initial training data plus every batch already handled
(``0 .. i-1``, labels known) and gates the challenger on batch ``i`` itself, which neither model has
seen: train on the past, judge on the most recent labelled data. Stage work always goes through
the MLflow Project entry points (``mlflow.projects.run``, local env), so a DAG task, ``simulate``
and ``mlflow run`` execute exactly the same code; only MLflow run ids and data-store URIs are
handed around.
"""

from __future__ import annotations

import os
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT, MLFLOW_RUN_NAME

from custom_pyfunc import columns
from steps.core import config, storage

ENTRY_POINT_EXPERIMENTS = {
    "ingest": config.DATA_EXPERIMENT,
    "split": config.DATA_EXPERIMENT,
    "train": config.TRAINING_EXPERIMENT,
    "register": config.REGISTRY_EXPERIMENT,
    "monitor": config.MONITORING_EXPERIMENT,
    "deploy": config.DEPLOYMENT_EXPERIMENT,
}
RUN_KEY_TAG = "health_predict.run_key"
LOOP_TAG_PREFIX = "health_predict.loop."
RETRAINING_DATA_DIR = "monitoring_state/retraining_data"
DRIFT_SUMMARY_NAME = "drift_summary.json"


class LoopStateError(RuntimeError):
    """The loop state and the requested action disagree (wrong batch, wrong batch size)."""


@dataclass
class LoopState:
    """Durable progress of one replay of ``future_data``."""

    loop_id: str
    batch_size: int
    next_batch_index: int = 0
    batches_seen: list[int] = field(default_factory=list)
    initial_champion_version: str | None = None
    champion_version: str | None = None
    retrainings: list[dict] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


@dataclass
class Batch:
    """One stored batch of ``future_data``: its index, data-store URI and row count."""

    index: int
    uri: str
    rows: int
    labelled_rows: int


@dataclass
class TrainingOutcome:
    """What a train + register pass produced; versions are registry version strings."""

    train_run_id: str
    register_run_id: str
    challenger_version: str | None
    champion_before: str | None
    champion_after: str | None

    @property
    def champion_changed(self) -> bool:
        return self.champion_after is not None and self.champion_after != self.champion_before


def project_defaults(entry_point: str) -> dict[str, object]:
    """The parameter defaults MLproject declares for ``entry_point``."""
    import yaml

    spec = yaml.safe_load((config.PROJECT_ROOT / "MLproject").read_text())
    parameters = spec["entry_points"][entry_point].get("parameters", {})
    return {name: p.get("default") for name, p in parameters.items() if isinstance(p, dict)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _data_root(data_uri: str | None) -> str:
    return data_uri or config.data_uri()


def state_uri(data_uri: str | None = None) -> str:
    """Where the loop state lives in the data store."""
    return storage.join(_data_root(data_uri), config.LOOP_STATE_KEY)


def load_state(data_uri: str | None = None) -> LoopState | None:
    """The stored loop state, or None when no loop has started."""
    uri = state_uri(data_uri)
    if not storage.exists(uri):
        return None
    return LoopState(**storage.read_json(uri))


def save_state(state: LoopState, data_uri: str | None = None) -> LoopState:
    """Store ``state`` atomically and return it."""
    state.updated_at = _now()
    storage.write_json(asdict(state), state_uri(data_uri))
    return state


def start_or_resume(batch_size: int, data_uri: str | None = None) -> LoopState:
    """The current loop state; a new loop (remembering the current champion) when there is none."""
    state = load_state(data_uri)
    if state is None:
        champion = champion_version()
        state = LoopState(
            loop_id=f"loop-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            batch_size=int(batch_size),
            initial_champion_version=champion,
            champion_version=champion,
            created_at=_now(),
        )
        return save_state(state, data_uri)
    if state.batch_size != int(batch_size):
        raise LoopStateError(
            f"loop {state.loop_id} uses batch_size={state.batch_size}, not {int(batch_size)}; "
            "reset the loop to change the batch size"
        )
    return state


def reset(data_uri: str | None = None) -> None:
    """Forget the loop: delete its state, stored batches and retraining data."""
    root = _data_root(data_uri)
    for prefix in (config.CURRENT_BATCH_DIR, RETRAINING_DATA_DIR):
        for uri in storage.list_keys(storage.join(root, prefix)):
            storage.delete(uri)
    storage.delete(state_uri(root))


def batch_uri(batch_index: int, data_uri: str | None = None) -> str:
    """Data-store URI of the stored batch ``batch_index``."""
    name = f"batch_{batch_index:05d}.csv"
    return storage.join(_data_root(data_uri), config.CURRENT_BATCH_DIR, name)


def _labelled_rows(frame: pd.DataFrame) -> int:
    if columns.LABEL_COLUMN not in frame:
        return 0
    return int((frame[columns.LABEL_COLUMN].notna() & columns.is_label_eligible(frame)).sum())


def prepare_batch(batch_index: int, batch_size: int, data_uri: str | None = None) -> Batch | None:
    """Store rows ``[i*batch_size, (i+1)*batch_size)`` of ``future_data``; None when none are left.

    Rewriting the same index writes the same rows, so redoing a batch is harmless.
    """
    root = _data_root(data_uri)
    future = columns.read_encounters_csv(
        storage.read_bytes(storage.join(root, config.FUTURE_DATA_KEY))
    )
    start = batch_index * int(batch_size)
    frame = future.iloc[start : start + int(batch_size)]
    if frame.empty:
        return None
    uri = storage.write_bytes(batch_uri(batch_index, root), columns.to_raw_csv_bytes(frame))
    return Batch(index=batch_index, uri=uri, rows=len(frame), labelled_rows=_labelled_rows(frame))


def build_retraining_data(batch_indices: list[int], data_uri: str | None = None) -> str | None:
    """Store the labelled rows of the given handled batches as one CSV; None when there are none."""
    root = _data_root(data_uri)
    indices = sorted(set(batch_indices))
    if not indices:
        return None
    frames = [
        columns.read_encounters_csv(storage.read_bytes(batch_uri(index, root))) for index in indices
    ]
    combined = pd.concat(frames, ignore_index=True)
    combined = combined[combined[columns.LABEL_COLUMN].notna()]
    if combined.empty:
        return None
    key = f"labelled_batches_{indices[0]:05d}_to_{indices[-1]:05d}_n{len(indices)}.csv"
    return storage.write_bytes(
        storage.join(root, RETRAINING_DATA_DIR, key), columns.to_raw_csv_bytes(combined)
    )


def trigger_run_id(state: LoopState, batch_index: int, purpose: str) -> str:
    """A run id that is the same every time this batch of this loop asks for ``purpose``."""
    return f"{purpose}__{state.loop_id}__batch_{batch_index:05d}"


def advance(
    state_before: LoopState,
    batch_index: int,
    champion: str | None,
    retraining: dict | None = None,
    data_uri: str | None = None,
) -> LoopState:
    """Mark ``batch_index`` handled and move to the next one; a repeated call changes nothing."""
    state = load_state(data_uri)
    if state is None or state.loop_id != state_before.loop_id:
        raise LoopStateError(f"loop {state_before.loop_id} was reset while batch was handled")
    if batch_index in state.batches_seen:
        return state
    if state.next_batch_index != batch_index:
        raise LoopStateError(
            f"loop {state.loop_id} expects batch {state.next_batch_index}, not {batch_index}"
        )
    state.batches_seen.append(batch_index)
    state.next_batch_index = batch_index + 1
    state.champion_version = champion
    if retraining is not None:
        state.retrainings.append({"batch_index": batch_index, **retraining})
    return save_state(state, data_uri)


def alias_version(alias: str) -> str | None:
    """The registry version (as a string) an alias points at, None when it is not set."""
    config.configure_mlflow()
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(config.MODEL_NAME, alias)
    except MlflowException:
        return None
    return str(version.version)


def champion_version() -> str | None:
    """The registry version the ``champion`` alias points at, None when there is none."""
    return alias_version(config.CHAMPION_ALIAS)


def model_uri(version: str) -> str:
    """A registry URI pinned to one version (an alias may move while a batch is handled)."""
    return f"models:/{config.MODEL_NAME}/{version}"


def _python_on_path() -> None:
    """Make ``python`` in entry-point commands the interpreter running this code."""
    interpreter_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != interpreter_dir:
        os.environ["PATH"] = os.pathsep.join([interpreter_dir, path])


def finished_run_with_key(entry_point: str, run_key: str) -> str | None:
    """Id of a FINISHED run of ``entry_point`` tagged with ``run_key``, None if there is none."""
    config.configure_mlflow()
    experiment = mlflow.MlflowClient().get_experiment_by_name(ENTRY_POINT_EXPERIMENTS[entry_point])
    if experiment is None:
        return None
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def run_entry_point(
    entry_point: str,
    parameters: dict[str, object],
    run_key: str | None = None,
    experiment: str | None = None,
) -> str:
    """Run an MLproject entry point to completion in this environment; return its MLflow run id.

    With ``run_key``, a FINISHED run carrying the same key is reused instead of running again, so a
    retried task never repeats finished work (e.g. a second retraining for the same batch).
    """
    if run_key and (existing := finished_run_with_key(entry_point, run_key)):
        return existing
    experiment_name = experiment or ENTRY_POINT_EXPERIMENTS[entry_point]
    experiment_id = config.ensure_experiment(experiment_name)
    tags = {MLFLOW_PROJECT_ENTRY_POINT: entry_point, MLFLOW_RUN_NAME: run_key or entry_point}
    if run_key:
        tags[RUN_KEY_TAG] = run_key
    # Created here rather than by mlflow.projects so that it never nests under an active run.
    run = mlflow.MlflowClient().create_run(experiment_id, tags=tags)
    _python_on_path()
    submitted = mlflow.projects.run(
        uri=str(config.PROJECT_ROOT),
        entry_point=entry_point,
        parameters={
            name: str(value) for name, value in parameters.items() if value not in ("", None)
        },
        experiment_id=experiment_id,
        run_id=run.info.run_id,
        env_manager="local",
        synchronous=True,
    )
    return submitted.run_id


def run_training(
    data_uri: str | None,
    extra_train_uri: str | None = None,
    run_key: str | None = None,
    **options: object,
) -> str:
    """Run the ``train`` entry point; returns the parent training run id.

    ``options`` are other ``train`` parameters (``families``, ``trials_per_family`` ...); a None
    value keeps the MLproject default.
    """
    parameters = {"data_uri": data_uri or "", "extra_train_uri": extra_train_uri or ""}
    parameters.update(options)
    return run_entry_point("train", parameters, run_key=run_key)


def run_registration(
    train_run_id: str,
    eval_data_uri: str | None,
    gate: dict[str, float] | None = None,
    run_key: str | None = None,
    data_uri: str | None = None,
) -> TrainingOutcome:
    """Run the ``register`` gate for a training run; returns what it decided
    (:func:`registration_outcome`).

    The gate judges on ``eval_data_uri``, by default ``initial_test`` of the data store.
    """
    eval_data_uri = eval_data_uri or storage.join(_data_root(data_uri), config.INITIAL_TEST_KEY)
    parameters = {"train_run_id": train_run_id, "eval_data_uri": eval_data_uri}
    parameters.update(gate or {})
    register_run_id = run_entry_point("register", parameters, run_key=run_key)
    return registration_outcome(train_run_id, register_run_id)


def registration_outcome(train_run_id: str, register_run_id: str) -> TrainingOutcome:
    """The champion before and after a registration, read from its durable record.

    The version the register run registered (its ``model_version`` tag) carries the decision:
    ``promoted`` and the champion it was judged against. While that promoted version is still the
    champion, the outcome is "champion changed from the judged-against version to it", whether the
    aliases moved in this attempt or in one that died afterwards; so a retry deploys what was
    promoted instead of comparing the alias with itself.
    """
    from steps import register

    config.configure_mlflow()
    client = mlflow.MlflowClient()
    version = client.get_run(register_run_id).data.tags.get("model_version")
    champion_before = champion_after = champion_version()
    if version is not None and champion_after == version:
        tags = client.get_model_version(config.MODEL_NAME, version).tags
        if tags.get(register.PROMOTED_TAG) == "true":
            judged_against = tags.get(register.JUDGED_AGAINST_TAG, register.NO_VERSION)
            champion_before = None if judged_against == register.NO_VERSION else judged_against
    return TrainingOutcome(
        train_run_id=train_run_id,
        register_run_id=register_run_id,
        challenger_version=version,
        champion_before=champion_before,
        champion_after=champion_after,
    )


def run_monitor(
    batch: Batch,
    state: LoopState,
    champion: str,
    thresholds: dict[str, float] | None = None,
    data_uri: str | None = None,
) -> dict:
    """Run the ``monitor`` entry point on a stored batch; returns its drift summary + run id."""
    report_uri = storage.join(
        _data_root(data_uri), config.DRIFT_REPORTS_DIR, state.loop_id, f"batch_{batch.index:05d}"
    )
    parameters = {
        "batch_uri": batch.uri,
        "reference_uri": storage.join(_data_root(data_uri), config.INITIAL_TRAIN_KEY),
        "baseline_uri": storage.join(_data_root(data_uri), config.INITIAL_TEST_KEY),
        "model_uri": model_uri(champion),
        "report_uri": report_uri,
        **(thresholds or {}),
    }
    run_id = run_entry_point("monitor", parameters)
    summary = storage.read_json(storage.join(report_uri, DRIFT_SUMMARY_NAME))
    return {**summary, "monitor_run_id": run_id, "report_uri": report_uri}


def tag_monitor_run(run_id: str, values: dict[str, object]) -> None:
    """Tag a monitoring run with how the loop handled its batch (``health_predict.loop.*``)."""
    config.configure_mlflow()
    client = mlflow.MlflowClient()
    for name, value in values.items():
        client.set_tag(run_id, LOOP_TAG_PREFIX + name, "" if value is None else str(value))


def should_retrain(decision: str, state: LoopState) -> bool:
    """Retrain on drift, once there is at least one handled (labelled) batch to learn from."""
    return decision == "DRIFT_DETECTED" and bool(state.batches_seen)


def retrain_for_batch(
    state: LoopState,
    batch: Batch,
    training: dict[str, object],
    gate: dict[str, float] | None = None,
    data_uri: str | None = None,
) -> TrainingOutcome | None:
    """Train on initial + handled batches, gate on ``batch``; None when no batch is handled yet.

    Both runs carry the batch's trigger run id as their run key, so redoing the batch reuses
    finished work instead of retraining twice.
    """
    extra_train_uri = build_retraining_data(state.batches_seen, data_uri)
    if extra_train_uri is None:
        return None
    run_key = trigger_run_id(state, batch.index, "retrain")
    train_run_id = run_training(
        data_uri=data_uri, extra_train_uri=extra_train_uri, run_key=run_key, **training
    )
    return run_registration(train_run_id, batch.uri, gate=gate, run_key=run_key, data_uri=data_uri)
