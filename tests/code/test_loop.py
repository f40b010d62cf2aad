"""The monitoring loop's durable state and batch bookkeeping (``steps.monitoring.loop``).

On synthetic rows.
"""

from __future__ import annotations

import pytest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.monitoring import loop
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


def test_retraining_data_holds_the_labelled_rows_of_handled_batches(store):
    for index in (0, 1):
        loop.prepare_batch(index, 10, store)
    uri = loop.build_retraining_data([1, 0], store)
    combined = columns.read_encounters_csv(storage.read_bytes(uri))
    future = _future(store).head(20)
    assert list(combined["encounter_id"]) == list(future["encounter_id"])
    assert loop.build_retraining_data([], store) is None


def test_trigger_run_ids_are_deterministic_per_loop_and_batch(store):
    state = loop.start_or_resume(10, store)
    first = loop.trigger_run_id(state, 3, "retrain")
    assert first == loop.trigger_run_id(state, 3, "retrain")
    assert first != loop.trigger_run_id(state, 4, "retrain")
    assert first.startswith("retrain__") and state.loop_id in first


def test_should_retrain_only_on_drift_with_history(store):
    state = loop.start_or_resume(10, store)
    assert not loop.should_retrain("DRIFT_DETECTED", state)
    state = loop.advance(state, 0, None, data_uri=store)
    assert loop.should_retrain("DRIFT_DETECTED", state)
    assert not loop.should_retrain("NO_DRIFT", state)
