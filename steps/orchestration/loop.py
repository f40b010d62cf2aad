"""The monitoring/retraining loop, shared by the Airflow DAGs and ``steps.simulate``.

One loop replays ``processed_data/future_data.csv`` batch by batch. Its durable state (next batch
index, batches seen, champion versions, retrainings) is a JSON object in the data store at
``config.LOOP_STATE_KEY``; it is advanced only after a batch is fully handled, and advancing is
idempotent, so a run killed mid-way redoes its batch once and a batch is never skipped or counted
twice.

Labels arrive late: a 30-day readmission is known 30 days after discharge. The loop models this
with a label lag in batches (``label_lag_batches``, fixed per loop): when batch ``i`` is handled,
only the labels of batches ``<= i - lag`` have matured. Stored batches hold inputs only; matured
labels are released to ``monitoring_state/matured_labels/`` when they are due. The dataset has no
dates; ``encounter_id`` order runs roughly over 1999-2008 (3,652 days), about 27.9 encounters per
day, so a 5,000-row batch spans about 179 days and the default lag for 30 days is one batch
(``default_label_lag``).

Monitoring batch ``i`` judges the inputs of batch ``i`` (drift, CBPE) and the champion's realised
performance on the newest matured batch. Retraining after batch ``i`` trains on the initial
training data plus every matured batch but the newest, and gates the challenger on the newest
matured batch, which neither model has seen: nothing is trained or gated on an unmatured label.

Stage work always goes through the MLflow Project entry points (``mlflow.projects.run``, local
env), so a DAG task, ``simulate`` and ``mlflow run`` execute exactly the same code; only MLflow run
ids and data-store URIs are handed around.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import mlflow
import pandas as pd

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.core.tracking import LOOP_TAG_PREFIX
from steps.registry import versions

RETRAINING_DATA_DIR = "monitoring_state/retraining_data"
MATURED_LABELS_DIR = "monitoring_state/matured_labels"
ARCHIVE_DIR = "monitoring_state/archive"
# 101,766 encounters over 1999-01-01 .. 2008-12-31 (3,652 days), in roughly chronological
# encounter_id order: the only clock the dataset has.
ENCOUNTERS_PER_DAY = 101_766 / 3_652
LABEL_HORIZON_DAYS = 30
DRIFT_SUMMARY_NAME = "drift_summary.json"
# The monitor's recent window: the newest usable matured batches its data-quality bounds are
# learnt from and its drift diagnostic compares with (the window the thresholds were chosen with,
# benchmarks/alerts.py --window).
RECENT_WINDOW_BATCHES = 2


class LoopStateError(RuntimeError):
    """The loop state and the requested action disagree (wrong batch, wrong batch size)."""


@dataclass
class LoopState:
    """Durable progress of one replay of ``future_data``."""

    loop_id: str
    batch_size: int
    label_lag_batches: int = 1
    next_batch_index: int = 0
    batches_seen: list[int] = field(default_factory=list)
    initial_champion_version: str | None = None
    champion_version: str | None = None
    retrainings: list[dict] = field(default_factory=list)
    # Batches held out of retraining and gating (a data_quality alert) and their releases.
    held: list[int] = field(default_factory=list)
    releases: list[dict] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""


@dataclass
class Batch:
    """One stored batch of ``future_data``: its index, data-store URI and row count."""

    index: int
    uri: str
    rows: int
    labelled_rows: int  # rows whose label will arrive once the batch has matured


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


def default_label_lag(batch_size: int) -> int:
    """Batches to wait until 30-day labels have matured: ceil(30 days / days per batch)."""
    days_per_batch = int(batch_size) / ENCOUNTERS_PER_DAY
    return math.ceil(LABEL_HORIZON_DAYS / days_per_batch)


def start_or_resume(
    batch_size: int, data_uri: str | None = None, label_lag_batches: int | None = None
) -> LoopState:
    """The current loop state; a new loop (remembering the current champion) when there is none.

    ``label_lag_batches`` None means :func:`default_label_lag` of the batch size.
    """
    state = load_state(data_uri)
    if state is None:
        champion = champion_version()
        lag = default_label_lag(batch_size) if label_lag_batches is None else label_lag_batches
        if int(lag) < 0:
            raise LoopStateError(f"label_lag_batches must be >= 0, got {lag}")
        state = LoopState(
            loop_id=f"loop-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            batch_size=int(batch_size),
            label_lag_batches=int(lag),
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
    if label_lag_batches is not None and state.label_lag_batches != int(label_lag_batches):
        raise LoopStateError(
            f"loop {state.loop_id} uses label_lag_batches={state.label_lag_batches}, not "
            f"{int(label_lag_batches)}; reset the loop to change the label lag"
        )
    return state


def archive_uri(loop_id: str, data_uri: str | None = None) -> str:
    """Where :func:`reset` keeps a forgotten loop (same keys below it as in the store)."""
    return storage.join(_data_root(data_uri), ARCHIVE_DIR, loop_id)


def reset(data_uri: str | None = None) -> str | None:
    """Forget the loop: move its state, stored batches and retraining data to
    :func:`archive_uri` (copied there before anything is deleted, so the previous loop stays
    recoverable at every point); returns the archive's URI, None when there was no loop."""
    root = _data_root(data_uri)
    state = load_state(root)
    keys = [
        uri
        for prefix in (config.CURRENT_BATCH_DIR, RETRAINING_DATA_DIR, MATURED_LABELS_DIR)
        for uri in storage.list_keys(storage.join(root, prefix))
    ]
    if state is None and not keys:
        return None
    archive = archive_uri(state.loop_id if state else f"unnamed-{uuid.uuid4().hex[:6]}", root)
    moved = [state_uri(root), *keys] if state else keys
    for uri in moved:
        relative = uri.removeprefix(root).lstrip("/")
        storage.write_bytes(storage.join(archive, relative), storage.read_bytes(uri))
    for uri in moved:
        storage.delete(uri)
    return archive


def batch_uri(batch_index: int, data_uri: str | None = None) -> str:
    """Data-store URI of the stored batch ``batch_index``."""
    name = f"batch_{batch_index:05d}.csv"
    return storage.join(_data_root(data_uri), config.CURRENT_BATCH_DIR, name)


def _labelled_rows(frame: pd.DataFrame) -> int:
    if columns.LABEL_COLUMN not in frame:
        return 0
    return int((frame[columns.LABEL_COLUMN].notna() & columns.is_label_eligible(frame)).sum())


def matured_labels_uri(batch_index: int, data_uri: str | None = None) -> str:
    """Data-store URI of batch ``batch_index`` with its labels (written once they have matured)."""
    name = f"batch_{batch_index:05d}.csv"
    return storage.join(_data_root(data_uri), MATURED_LABELS_DIR, name)


@functools.lru_cache(maxsize=2)
def _parsed_future(content_sha256: str, content: bytes) -> pd.DataFrame:
    return columns.read_encounters_csv(content)


def future_rows(batch_index: int, batch_size: int, data_uri: str | None = None) -> pd.DataFrame:
    """Rows ``[i*batch_size, (i+1)*batch_size)`` of ``future_data``, labels included."""
    content = storage.read_bytes(storage.join(_data_root(data_uri), config.FUTURE_DATA_KEY))
    future = _parsed_future(hashlib.sha256(content).hexdigest(), content)
    start = batch_index * int(batch_size)
    return future.iloc[start : start + int(batch_size)]


def prepare_batch(batch_index: int, batch_size: int, data_uri: str | None = None) -> Batch | None:
    """Store the inputs of rows ``[i*batch_size, (i+1)*batch_size)`` of ``future_data`` (no
    labels: they have not matured); None when no rows are left.

    Rewriting the same index writes the same rows, so redoing a batch is harmless.
    """
    root = _data_root(data_uri)
    frame = future_rows(batch_index, batch_size, root)
    if frame.empty:
        return None
    inputs = frame.drop(columns=[columns.LABEL_COLUMN], errors="ignore")
    uri = storage.write_bytes(batch_uri(batch_index, root), columns.to_raw_csv_bytes(inputs))
    return Batch(index=batch_index, uri=uri, rows=len(frame), labelled_rows=_labelled_rows(frame))


def matured_indices(state: LoopState, batch_index: int) -> list[int]:
    """Batches whose labels have matured when batch ``batch_index`` is handled (lag applied)."""
    candidates = {*state.batches_seen, batch_index}
    return sorted(j for j in candidates if j <= batch_index - state.label_lag_batches)


def usable_matured(state: LoopState, batch_index: int) -> list[int]:
    """Matured batches that are not held (held by :func:`advance`): what the loop may learn,
    gate and judge performance on at batch ``batch_index``."""
    return [j for j in matured_indices(state, batch_index) if j not in state.held]


def release_held(
    state_before: LoopState, batch_index: int, reason: str, data_uri: str | None = None
) -> LoopState:
    """Release a held batch on purpose (it and its labels become usable again), recording when
    and why in the loop state."""
    state = load_state(data_uri)
    if state is None or state.loop_id != state_before.loop_id:
        raise LoopStateError(f"loop {state_before.loop_id} was reset")
    if batch_index not in state.held:
        raise LoopStateError(f"batch {batch_index} is not held, so it cannot be released")
    state.held.remove(batch_index)
    state.releases.append({"batch_index": batch_index, "reason": reason, "at": _now()})
    return save_state(state, data_uri)


def release_labels(
    state: LoopState, batch_index: int, due_at: int, data_uri: str | None = None
) -> str:
    """Store batch ``batch_index`` with its labels; refuses when they have not matured at batch
    ``due_at``. Returns the labelled batch's URI."""
    if batch_index not in matured_indices(state, due_at):
        raise LoopStateError(
            f"labels of batch {batch_index} have not matured at batch {due_at} "
            f"(label lag {state.label_lag_batches} batches)"
        )
    root = _data_root(data_uri)
    frame = future_rows(batch_index, state.batch_size, root)
    return storage.write_bytes(
        matured_labels_uri(batch_index, root), columns.to_raw_csv_bytes(frame)
    )


@dataclass
class RetrainingPlan:
    """Matured batches to train on and the newest matured batch to gate on."""

    train_indices: list[int]
    gate_index: int


def retraining_plan(state: LoopState, batch_index: int) -> RetrainingPlan | None:
    """Train on every usable matured batch but the newest, gate on the newest; None with fewer
    than two (held batches are not usable: :func:`usable_matured`)."""
    matured = usable_matured(state, batch_index)
    if len(matured) < 2:
        return None
    return RetrainingPlan(train_indices=matured[:-1], gate_index=matured[-1])


@dataclass(frozen=True)
class RetrainingInputs:
    """Data-store URIs of a retraining: rows to train on (added to ``initial_train``), the
    newest matured batch's calibration part (:func:`calibration_rows`) and the whole newest
    matured batch, which the gate judges on without the patients trained or calibrated on."""

    extra_train_uri: str
    calibration_uri: str
    eval_data_uri: str


def calibration_rows(frame: pd.DataFrame) -> pd.Series:
    """Whether each row's patient falls in the calibration half of a batch (a hash of the patient
    number, so the same patient is always on the same side): a retrained model is calibrated and
    thresholded on that half and gated on the other, patient-disjoint from both its training
    data and its calibration."""
    digest = frame["patient_nbr"].map(
        lambda patient: hashlib.sha256(str(int(patient)).encode()).digest()[0]
    )
    return digest < 128


def retraining_inputs(
    state: LoopState, batch_index: int, data_uri: str | None = None
) -> RetrainingInputs | None:
    """The :class:`RetrainingInputs` for retraining at ``batch_index``; None if too early."""
    plan = retraining_plan(state, batch_index)
    if plan is None:
        return None
    for index in plan.train_indices:
        release_labels(state, index, batch_index, data_uri)
    extra_train_uri = build_retraining_data(plan.train_indices, data_uri)
    if extra_train_uri is None:
        return None
    eval_data_uri = release_labels(state, plan.gate_index, batch_index, data_uri)
    newest = columns.read_encounters_csv(storage.read_bytes(eval_data_uri))
    key = f"calibration_batch_{plan.gate_index:05d}.csv"
    calibration_uri = storage.write_bytes(
        storage.join(_data_root(data_uri), RETRAINING_DATA_DIR, key),
        columns.to_raw_csv_bytes(newest[calibration_rows(newest)]),
    )
    return RetrainingInputs(extra_train_uri, calibration_uri, eval_data_uri)


def build_retraining_data(batch_indices: list[int], data_uri: str | None = None) -> str | None:
    """Store the labelled rows of the given matured batches as one CSV; None when there are none."""
    root = _data_root(data_uri)
    indices = sorted(set(batch_indices))
    if not indices:
        return None
    frames = [
        columns.read_encounters_csv(storage.read_bytes(matured_labels_uri(index, root)))
        for index in indices
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
    held: bool = False,
) -> LoopState:
    """Mark ``batch_index`` handled and move to the next one (``held``: and hold the batch out of
    retraining and gating until :func:`release_held`); a repeated call changes nothing."""
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
    if held and batch_index not in state.held:
        state.held.append(batch_index)
    if retraining is not None:
        state.retrainings.append({"batch_index": batch_index, **retraining})
    return save_state(state, data_uri)


def champion_version() -> str | None:
    """The registry version the ``champion`` alias points at, None when there is none."""
    return tracking.alias_version(config.CHAMPION_ALIAS)


def model_uri(version: str) -> str:
    """A registry URI pinned to one version (an alias may move while a batch is handled)."""
    return config.model_version_uri(version)


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
    return tracking.run_entry_point("train", parameters, run_key=run_key)


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
    register_run_id = tracking.run_entry_point("register", parameters, run_key=run_key)
    return registration_outcome(train_run_id, register_run_id)


def registration_outcome(train_run_id: str, register_run_id: str) -> TrainingOutcome:
    """The champion before and after a registration, read from its durable record.

    The version the register run registered (its ``model_version`` tag) carries the decision:
    ``promoted`` and the champion it was judged against. While that promoted version is still the
    champion, the outcome is "champion changed from the judged-against version to it", whether the
    aliases moved in this attempt or in one that died afterwards; so a retry deploys what was
    promoted instead of comparing the alias with itself.
    """
    config.configure_mlflow()
    client = mlflow.MlflowClient()
    version = client.get_run(register_run_id).data.tags.get("model_version")
    champion_before = champion_after = champion_version()
    if version is not None and champion_after == version:
        tags = client.get_model_version(config.MODEL_NAME, version).tags
        if tags.get(versions.PROMOTED_TAG) == "true":
            judged_against = tags.get(versions.JUDGED_AGAINST_TAG, versions.NO_VERSION)
            champion_before = None if judged_against == versions.NO_VERSION else judged_against
    return TrainingOutcome(
        train_run_id=train_run_id,
        register_run_id=register_run_id,
        challenger_version=version,
        champion_before=champion_before,
        champion_after=champion_after,
    )


def monitor_inputs(state: LoopState, batch: Batch, data_uri: str | None = None) -> dict[str, str]:
    """The ``monitor`` inputs of a stored batch: ``batch_uri``; ``labelled_uri``, the newest
    usable matured batch with its labels (released here; empty before any has matured);
    ``recent_uri``, the inputs of the :data:`RECENT_WINDOW_BATCHES` newest usable matured batches
    (empty before any: the monitor then compares with what the model was fitted on); and
    ``baseline_uri``, ``initial_test``."""
    matured = usable_matured(state, batch.index)
    labelled_uri = release_labels(state, matured[-1], batch.index, data_uri) if matured else ""
    recent = [batch_uri(j, data_uri) for j in matured[-RECENT_WINDOW_BATCHES:]]
    return {
        "batch_uri": batch.uri,
        "labelled_uri": labelled_uri,
        "recent_uri": ",".join(recent),
        "baseline_uri": storage.join(_data_root(data_uri), config.INITIAL_TEST_KEY),
    }


def run_monitor(
    batch: Batch,
    state: LoopState,
    champion: str,
    thresholds: dict[str, float] | None = None,
    data_uri: str | None = None,
) -> dict:
    """Run the ``monitor`` entry point on a stored batch; returns its drift summary + run id.

    The champion's realised performance is judged on the newest matured batch, if any. The run
    carries the batch's run key (``monitor__<loop>__batch_<n>``): redoing the batch reuses the
    finished run and its stored summary instead of adding a second monitoring run.
    """
    report_uri = storage.join(
        _data_root(data_uri), config.DRIFT_REPORTS_DIR, state.loop_id, f"batch_{batch.index:05d}"
    )
    parameters = {
        **monitor_inputs(state, batch, data_uri),
        "model_uri": model_uri(champion),
        "report_uri": report_uri,
        **(thresholds or {}),
    }
    run_key = trigger_run_id(state, batch.index, "monitor")
    run_id = tracking.run_entry_point("monitor", parameters, run_key=run_key)
    summary = storage.read_json(storage.join(report_uri, DRIFT_SUMMARY_NAME))
    return {**summary, "monitor_run_id": run_id, "report_uri": report_uri}


def tag_monitor_run(run_id: str, values: dict[str, object]) -> None:
    """Tag a monitoring run with how the loop handled its batch (``health_predict.loop.*``)."""
    config.configure_mlflow()
    client = mlflow.MlflowClient()
    for name, value in values.items():
        client.set_tag(run_id, LOOP_TAG_PREFIX + name, "" if value is None else str(value))


def record_batch(
    state_before: LoopState,
    batch_index: int,
    champion: str | None,
    retraining: dict | None,
    monitor_run_id: str | None,
    data_uri: str | None = None,
    held: bool = False,
    decision: dict | None = None,
) -> LoopState:
    """Tag the batch's monitoring run with how the loop handled it (``decision``: the engine's
    alerts and action), then :func:`advance`.

    In that order, and both idempotent: a crash in between leaves the run tagged and the batch
    to redo (which reuses the run and re-tags it identically), never an advanced state with an
    untagged run.
    """
    if monitor_run_id:
        tag_monitor_run(
            monitor_run_id,
            {
                "loop_id": state_before.loop_id,
                "batch_index": batch_index,
                "action": "retrained" if retraining else "none",
                "champion_after": champion,
                "held": held,
                **(decision or {}),
            },
        )
    return advance(state_before, batch_index, champion, retraining, data_uri, held)


def retrain_for_batch(
    state: LoopState,
    batch: Batch,
    training: dict[str, object],
    gate: dict[str, float] | None = None,
    data_uri: str | None = None,
) -> TrainingOutcome | None:
    """Train on initial + matured batches, gate on the newest matured batch
    (:func:`retraining_plan`); None when fewer than two batches have matured.

    Both runs carry the batch's trigger run id as their run key, so redoing the batch reuses
    finished work instead of retraining twice.
    """
    inputs = retraining_inputs(state, batch.index, data_uri)
    if inputs is None:
        return None
    run_key = trigger_run_id(state, batch.index, "retrain")
    train_run_id = run_training(
        data_uri=data_uri, extra_train_uri=inputs.extra_train_uri, run_key=run_key,
        calibration_uri=inputs.calibration_uri, **training,
    )  # fmt: skip
    return run_registration(
        train_run_id, inputs.eval_data_uri, gate=gate, run_key=run_key, data_uri=data_uri
    )
