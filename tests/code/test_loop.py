"""The monitoring loop's durable state and batch bookkeeping (``steps.monitoring.loop``).

On synthetic rows.
"""

from __future__ import annotations

import pytest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.orchestration import engine, loop
from tests.fixtures_data import synthetic_encounters


@pytest.fixture
def store(tmp_path) -> str:
    """A data store whose future_data holds 25 synthetic encounters."""
    data_uri = str(tmp_path / "data")
    frame = synthetic_encounters(25, seed=3)
    storage.write_bytes(
        storage.join(data_uri, config.FUTURE_DATA_KEY), columns.to_raw_csv_bytes(frame)
    )
    return data_uri


def _future(store: str):
    return columns.read_encounters_csv(
        storage.read_bytes(storage.join(store, config.FUTURE_DATA_KEY))
    )


def test_batches_cover_future_data_in_order_and_end(store):
    state = loop.start_or_resume(10, store)
    sizes, stored = [], []
    while (batch := loop.prepare_batch(state.next_batch_index, 10, store)) is not None:
        sizes.append(batch.rows)
        stored.append(columns.read_encounters_csv(storage.read_bytes(batch.uri)))
        state = loop.advance(state, batch.index, None, data_uri=store)
    assert sizes == [10, 10, 5]
    future = _future(store)
    replayed = [int(x) for frame in stored for x in frame["encounter_id"]]
    assert replayed == [int(x) for x in future["encounter_id"]]
    assert state.batches_seen == [0, 1, 2] and state.next_batch_index == 3


def test_preparing_the_same_batch_twice_stores_the_same_rows(store):
    first = loop.prepare_batch(1, 10, store)
    content = storage.read_bytes(first.uri)
    again = loop.prepare_batch(1, 10, store)
    assert again == first and storage.read_bytes(again.uri) == content


def test_advance_is_idempotent_and_refuses_to_skip(store):
    state = loop.start_or_resume(10, store)
    once = loop.advance(state, 0, "1", data_uri=store)
    twice = loop.advance(state, 0, "1", data_uri=store)
    assert once.batches_seen == twice.batches_seen == [0]
    assert loop.load_state(store).next_batch_index == 1
    with pytest.raises(loop.LoopStateError, match="expects batch 1, not 2"):
        loop.advance(state, 2, "1", data_uri=store)


def test_state_survives_reload_and_rejects_another_batch_size(store):
    state = loop.start_or_resume(10, store)
    loop.advance(state, 0, None, {"train_run_id": "abc"}, data_uri=store)
    resumed = loop.start_or_resume(10, store)
    assert resumed.loop_id == state.loop_id
    assert resumed.retrainings == [{"batch_index": 0, "train_run_id": "abc"}]
    with pytest.raises(loop.LoopStateError, match="batch_size=10"):
        loop.start_or_resume(20, store)


def test_reset_forgets_state_and_batches_and_starts_a_new_loop(store):
    state = loop.start_or_resume(10, store)
    batch = loop.prepare_batch(0, 10, store)
    loop.reset(store)
    assert loop.load_state(store) is None and not storage.exists(batch.uri)
    assert loop.start_or_resume(10, store).loop_id != state.loop_id


def test_retraining_data_holds_the_labelled_rows_of_matured_batches(store):
    state = loop.start_or_resume(10, store, label_lag_batches=0)
    for index in (0, 1):
        loop.prepare_batch(index, 10, store)
        loop.release_labels(state, index, index, store)
        state = loop.advance(state, index, None, data_uri=store)
    uri = loop.build_retraining_data([1, 0], store)
    combined = columns.read_encounters_csv(storage.read_bytes(uri))
    future = _future(store).head(20)
    assert list(combined["encounter_id"]) == list(future["encounter_id"])
    assert combined[columns.LABEL_COLUMN].notna().all()
    assert loop.build_retraining_data([], store) is None


@pytest.mark.parametrize(("batch_size", "lag"), [(5000, 1), (836, 1), (835, 2), (500, 2), (100, 9)])
def test_default_label_lag_covers_30_days(batch_size, lag):
    # 27.87 encounters a day: 5,000 rows span 179 days, 835 rows 29.96 days, 100 rows 3.6 days.
    assert loop.default_label_lag(batch_size) == lag


def test_stored_batches_carry_no_labels_and_labels_are_released_only_when_matured(store):
    state = loop.start_or_resume(10, store, label_lag_batches=1)
    batch = loop.prepare_batch(0, 10, store)
    stored = columns.read_encounters_csv(storage.read_bytes(batch.uri))
    assert columns.LABEL_COLUMN not in stored
    assert batch.labelled_rows == int(columns.is_label_eligible(_future(store).head(10)).sum())
    with pytest.raises(loop.LoopStateError, match="not matured at batch 0"):
        loop.release_labels(state, 0, 0, store)
    state = loop.advance(state, 0, None, data_uri=store)
    assert loop.matured_indices(state, 1) == [0]
    released = columns.read_encounters_csv(
        storage.read_bytes(loop.release_labels(state, 0, 1, store))
    )
    assert list(released[columns.LABEL_COLUMN]) == list(_future(store)[columns.LABEL_COLUMN][:10])


def _handle(state, store, policy="every:1"):
    batch = loop.prepare_batch(state.next_batch_index, state.batch_size, store)
    retrain = engine.decide(engine.parse_policy(policy), state, batch.index, []).retrain
    return batch, retrain


def test_nothing_is_retrained_or_gated_on_unmatured_labels(store, monkeypatch):
    """Retraining asked at every batch, lag 1: which rows reach training, the gate and the monitor.

    The entry points are replaced by recorders: this checks the data the loop hands them (real
    training and gating on these URIs run in tests/integration/test_dags.py).
    """
    handed: dict[str, list] = {"train": [], "register": [], "monitor": []}

    def record(entry_point, parameters, run_key=None, experiment=None):
        handed[entry_point].append(dict(parameters))
        if entry_point == "monitor":
            storage.write_json({"alerts": []}, storage.join(
                parameters["report_uri"], loop.DRIFT_SUMMARY_NAME))  # fmt: skip
        return f"{entry_point}-run"

    monkeypatch.setattr(loop.tracking, "run_entry_point", record)
    monkeypatch.setattr(loop, "champion_version", lambda: "1")
    monkeypatch.setattr(
        loop, "registration_outcome", lambda t, r: loop.TrainingOutcome(t, r, "2", "1", "2")
    )
    state = loop.start_or_resume(10, store, label_lag_batches=1)
    future = _future(store)
    ids = lambda frame: set(frame["encounter_id"].astype(int))  # noqa: E731
    read = lambda uri: columns.read_encounters_csv(storage.read_bytes(uri))  # noqa: E731
    retrained_at = []
    for index in range(3):
        batch, retrain = _handle(state, store)
        loop.run_monitor(batch, state, "1", data_uri=store)
        if retrain:
            assert loop.retrain_for_batch(state, batch, {"families": "logreg"}, data_uri=store)
            retrained_at.append(index)
        state = loop.advance(state, index, "1", data_uri=store)
    assert retrained_at == [2]  # batch 2 is the first with two matured batches (0 and 1)
    monitored = [params["labelled_uri"] for params in handed["monitor"]]
    assert monitored[0] == ""  # batch 0: no label has matured
    assert ids(read(monitored[1])) == ids(future.iloc[0:10])
    assert ids(read(monitored[2])) == ids(future.iloc[10:20])
    (trained,) = handed["train"]
    (gated,) = handed["register"]
    assert ids(read(trained["extra_train_uri"])) == ids(future.iloc[0:10])
    assert ids(read(gated["eval_data_uri"])) == ids(future.iloc[10:20])
    assert not ids(future.iloc[20:25]) & (
        ids(read(trained["extra_train_uri"])) | ids(read(gated["eval_data_uri"]))
    )
    # The challenger is calibrated and thresholded on the newest matured batch's calibration
    # half; the gate's batch is the whole of it, register leaving those patients out.
    newest = future.iloc[10:20]
    calibration = read(trained["calibration_uri"])
    assert ids(calibration) == ids(newest[loop.calibration_rows(newest)])
    patients = lambda frame: set(frame["patient_nbr"].astype(int))  # noqa: E731
    assert patients(calibration) == patients(newest) - patients(
        newest[~loop.calibration_rows(newest)]
    )
    # The monitor's recent window: the inputs of the newest matured batches (none at batch 0).
    windows = [params["recent_uri"] for params in handed["monitor"]]
    assert windows == ["", loop.batch_uri(0, store), f"{loop.batch_uri(0, store)},"
                       f"{loop.batch_uri(1, store)}"]  # fmt: skip


def test_scheduled_arm_retrains_every_k_batches_once_labels_matured(store):
    state = loop.start_or_resume(5, store, label_lag_batches=1)
    chosen = []
    for index in range(5):
        _, retrain = _handle(state, store, policy="every:2")
        chosen.append(retrain)
        state = loop.advance(state, index, None, data_uri=store)
    # k=2 asks after batches 1 and 3; at batch 1 only batch 0 has matured, too few to gate on.
    assert chosen == [False, False, False, True, False]


def test_trigger_run_ids_are_deterministic_per_loop_and_batch(store):
    state = loop.start_or_resume(10, store)
    first = loop.trigger_run_id(state, 3, "retrain")
    assert first == loop.trigger_run_id(state, 3, "retrain")
    assert first != loop.trigger_run_id(state, 4, "retrain")
    assert first.startswith("retrain__") and state.loop_id in first


def test_retraining_needs_two_usable_matured_batches_and_skips_held_ones(store):
    state = loop.start_or_resume(10, store, label_lag_batches=1)
    every = engine.parse_policy("every:1")
    assert not engine.decide(every, state, 0, []).retrain
    state = loop.advance(state, 0, None, data_uri=store, held=True)
    assert not engine.decide(every, state, 1, []).retrain
    state = loop.advance(state, 1, None, data_uri=store)
    assert not engine.decide(every, state, 2, []).retrain  # batch 0 is held: one usable
    assert not engine.decide(engine.parse_policy("frozen"), state, 2, []).retrain
    state = loop.release_held(state, 0, "feed repaired", store)
    assert engine.decide(every, state, 2, []).retrain
    assert loop.load_state(store).releases[0]["reason"] == "feed repaired"
    with pytest.raises(loop.LoopStateError, match="label_lag_batches=1"):
        loop.start_or_resume(10, store, label_lag_batches=2)
