"""The loop's bookkeeping survives crashes and retries (issue 15, items 9 and 10).

Real data store (a temporary folder) and the session's real MLflow store; ``mlflow run`` itself is
not started: a test that must not run an entry point makes running one fail.
"""

from __future__ import annotations

import uuid

import mlflow
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_ENTRY_POINT

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.orchestration import loop, simulation
from tests.fixtures_data import synthetic_encounters


@pytest.fixture
def store(tmp_path) -> str:
    """A data store whose future_data holds 25 synthetic encounters."""
    data_uri = str(tmp_path / "data")
    frame = columns.to_raw_csv_bytes(synthetic_encounters(25, seed=3))
    storage.write_bytes(storage.join(data_uri, config.FUTURE_DATA_KEY), frame)
    return data_uri


def _monitoring_run(tags: dict[str, str] | None = None) -> str:
    config.configure_mlflow()
    client = mlflow.MlflowClient()
    experiment_id = config.experiment_id_of(config.MONITORING_EXPERIMENT)
    run = client.create_run(experiment_id, tags=tags or {})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def test_monitoring_run_is_tagged_before_the_state_advances(store, monkeypatch):
    state = loop.start_or_resume(10, store)
    loop.prepare_batch(0, 10, store)
    run_id = _monitoring_run()

    def crash(*args, **kwargs):
        raise RuntimeError("killed between tagging and advancing")

    with monkeypatch.context() as patch:
        patch.setattr(loop, "advance", crash)
        with pytest.raises(RuntimeError, match="killed"):
            loop.record_batch(state, 0, "3", None, run_id, store)
    tags = mlflow.get_run(run_id).data.tags
    assert tags[loop.LOOP_TAG_PREFIX + "batch_index"] == "0"
    assert tags[loop.LOOP_TAG_PREFIX + "loop_id"] == state.loop_id
    assert loop.load_state(store).next_batch_index == 0  # the batch is redone

    for _ in range(2):  # the redo, then a repeated call: same tags, advanced once
        advanced = loop.record_batch(state, 0, "3", None, run_id, store)
    assert (advanced.next_batch_index, advanced.batches_seen) == (1, [0])
    assert mlflow.get_run(run_id).data.tags == tags


def test_redoing_a_batch_reuses_its_monitoring_run(store, monkeypatch):
    state = loop.start_or_resume(10, store)
    batch = loop.prepare_batch(0, 10, store)
    run_key = loop.trigger_run_id(state, 0, "monitor")
    earlier = _monitoring_run(
        {tracking.RUN_KEY_TAG: run_key, MLFLOW_PROJECT_ENTRY_POINT: "monitor"}
    )
    report_uri = storage.join(store, config.DRIFT_REPORTS_DIR, state.loop_id, "batch_00000")
    storage.write_json({"alerts": []}, storage.join(report_uri, loop.DRIFT_SUMMARY_NAME))

    def no_second_run(*args, **kwargs):
        raise AssertionError("the monitor entry point ran again for a batch already monitored")

    monkeypatch.setattr(mlflow.projects, "run", no_second_run)
    summary = loop.run_monitor(batch, state, "1", data_uri=store)
    assert summary["monitor_run_id"] == earlier
    assert summary["alerts"] == []


def test_reset_keeps_the_previous_loop_recoverable(store):
    state = loop.start_or_resume(10, store)
    batch = loop.prepare_batch(0, 10, store)
    loop.advance(state, 0, None, None, store)
    archive = loop.reset(store)
    assert loop.load_state(store) is None
    assert not storage.exists(batch.uri)
    kept = storage.read_json(storage.join(archive, config.LOOP_STATE_KEY))
    assert (kept["loop_id"], kept["batches_seen"]) == (state.loop_id, [0])
    kept_batch = storage.join(archive, config.CURRENT_BATCH_DIR, "batch_00000.csv")
    assert storage.exists(kept_batch)
    loop.prepare_batch(0, 10, store)
    assert loop.reset(store) is not None  # the batch just stored again is archived too
    assert loop.reset(store) is None  # nothing left to forget


def test_simulate_with_reset_keeps_the_loop_when_it_cannot_start(store, monkeypatch):
    monkeypatch.setattr(config, "MODEL_NAME", f"health-predict-{uuid.uuid4().hex[:12]}")
    state = loop.start_or_resume(10, store)
    loop.prepare_batch(0, 10, store)
    advanced = loop.advance(state, 0, None, None, store)
    with pytest.raises(RuntimeError, match="no champion"):
        simulation.simulate(data_uri=store, batch_size=10, max_batches=1, reset=True)
    assert loop.load_state(store) == advanced
    assert storage.exists(loop.batch_uri(0, store))
