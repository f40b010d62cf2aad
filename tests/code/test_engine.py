"""The per-batch engine: policies, holds, and one sequence for the DAG's steps and the replay.

On synthetic rows whose 30-day label follows ``number_inpatient`` (a learnable signal), a
logistic regression champion and in-process refits (``steps.orchestration.refits``): seconds.
The monitor is the one stand-in: a function returning the alert kinds the test chooses.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from custom_pyfunc import columns, features
from custom_pyfunc.predictor import ReadmissionPredictor
from custom_pyfunc.preprocessing import FeatureEncoder
from steps.core import config, storage
from steps.core.tracking import DATA_TAG_PREFIX
from steps.evaluation import evaluate, gate
from steps.monitoring.decision import Thresholds
from steps.orchestration import engine, loop, refits
from steps.training import families
from tests.fixtures_data import synthetic_encounters

BATCH = 200


def _encounters(n_rows: int, seed: int, signal: bool = True):
    """Synthetic encounters; with ``signal`` the label follows ``number_inpatient``."""
    frame = synthetic_encounters(n_rows, seed=seed).copy()
    rng = np.random.default_rng(seed)
    risk = np.where(frame["number_inpatient"] >= 15, 0.6, 0.05) if signal else 0.2
    frame["readmitted"] = np.where(rng.random(n_rows) < risk, "<30", "NO")
    return frame


@pytest.fixture(scope="module")
def frozen() -> tuple[ReadmissionPredictor, object]:
    """A logistic regression fitted on 900 synthetic rows without signal, and those rows (so a
    refit that sees the future batches' signal beats it)."""
    initial = _encounters(900, seed=1, signal=False)
    rows, labels = evaluate.labelled_rows(initial)
    pipeline = Pipeline(
        [
            ("features", FeatureEncoder(encoding=families.ENCODING["logreg"], random_state=0)),
            ("model", families.build_estimator("logreg", {"C": 0.1}, seed=0, n_jobs=1)),
        ]
    )
    pipeline.fit(features.engineer_features(features.clean_data(rows)), labels)
    return ReadmissionPredictor(pipeline, threshold=0.5, family="logreg"), initial


def _store(tmp_path, name: str, future) -> str:
    root = str(tmp_path / name)
    storage.write_bytes(
        storage.join(root, config.FUTURE_DATA_KEY), columns.to_raw_csv_bytes(future)
    )
    return root


def _services(frozen, root: str, alerts: dict[int, list[str]]) -> refits.RefitServices:
    predictor, initial = frozen
    return refits.RefitServices(
        predictor, initial, root, alert_budget=0.1, cache=refits.RefitCache(),
        # A wide non-inferiority margin: these tiny batches test the sequence, not the gate.
        gate_policy=gate.GatePolicy(margin=1.0, max_subgroup_recall_gap=1.0),
        assess=lambda state, batch, champion, model: {"alerts": alerts.get(batch.index, [])},
    )  # fmt: skip


def test_policies_parse_and_refuse_nonsense():
    assert str(engine.parse_policy("every:4")) == "every:4"
    assert engine.parse_policy("cost:0.005").deployment_cost([]) == 0.005
    assert engine.parse_policy("cost:0.005").deployment_cost(["performance"]) == 0.0
    assert not engine.parse_policy("frozen").retrains_at(3)
    assert [engine.parse_policy("every:2").retrains_at(i) for i in range(4)] == [
        False, True, False, True,
    ]  # fmt: skip
    for bad in ("every:0", "cost:-1", "sometimes", "frozen:1", "every:x"):
        with pytest.raises(engine.PolicyError, match="policy must be"):
            engine.parse_policy(bad)


def test_dag_steps_and_replay_make_the_same_decisions_and_serve_the_same_models(tmp_path, frozen):
    """The DAG's task order (begin, prepare, monitor, decide, retrain, record, with the decision
    passed on as its dict as XCom does) and ``handle_batch`` (the replay and ``simulate``) on
    the same 3 batches, label lag 0, batch 0 raising a data_quality alert."""
    future = _encounters(3 * BATCH, seed=2)
    alerts = {0: ["data_quality"], 2: ["performance"]}
    policy = engine.parse_policy("cost:0.5")  # only a performance alert lets a refit through

    replay_root = _store(tmp_path, "replay", future)
    replay = _services(frozen, replay_root, alerts)
    state = engine.begin(BATCH, replay_root, label_lag_batches=0)
    replayed = []
    while True:
        state, record = engine.handle_batch(replay, policy, state, replay_root)
        if record is None:
            break
        replayed.append((asdict(record.decision), record.champion, record.champion_after))

    dag_root = _store(tmp_path, "dag", future)
    dag = _services(frozen, dag_root, alerts)
    state = engine.begin(BATCH, dag_root, label_lag_batches=0)
    stepped = []
    while (batch := loop.prepare_batch(state.next_batch_index, BATCH, dag_root)) is not None:
        champion = dag.champion()
        kinds = engine.alert_kinds(dag.monitor(state, batch, champion))
        decision = asdict(engine.decide(policy, loop.load_state(dag_root), batch.index, kinds))
        outcome = dag.retrain(state, batch, decision["deployment_cost"]) if (
            decision["retrain"]
        ) else None  # fmt: skip
        state = engine.record(
            state, batch.index, engine.Decision(**decision), state.champion_version,
            dag.champion(), outcome.train_run_id if outcome else None, None, dag_root,
        )  # fmt: skip
        stepped.append((decision, champion, dag.champion()))

    assert stepped == replayed
    decisions = [d for d, _, _ in stepped]
    assert [d["hold"] for d in decisions] == [True, False, False]
    # Batch 0 is held: at batch 1 only batch 1 is usable, too few to retrain on; at batch 2 the
    # challenger learns from batch 1, is gated on batch 2 and deployed on the performance alert.
    assert [d["retrain"] for d in decisions] == [False, False, True]
    assert [d["deployment_cost"] for d in decisions] == [0.0, 0.0, 0.0]
    served_after = stepped[-1][2]
    assert served_after == "refit_1-1_n1_gate_2"
    probe = future.iloc[:50]
    assert np.array_equal(
        dag.predictor(served_after).probability(probe),
        replay.predictor(served_after).probability(probe),
    )
    assert loop.load_state(dag_root).held == [0] == loop.load_state(replay_root).held
    # It was calibrated and its alert threshold set on the calibration half of the newest
    # matured batch (fitting.recalibrate, the rule train applies): it flags the budget there.
    # The gate judged it on the other half only (what register's exclusions leave).
    newest, _ = evaluate.labelled_rows(future.iloc[2 * BATCH :])
    half = newest[loop.calibration_rows(newest)]
    assert 0.3 < len(half) / len(newest) < 0.7
    flagged = dag.predictor(served_after).predict(half)["prediction"].mean()
    assert abs(flagged - 0.1) <= 0.02
    assert set(half["patient_nbr"].astype(str)) <= dag.cache.training_patients[served_after]

    released = engine.begin(BATCH, dag_root, release=[0], reason="feed repaired")
    assert released.held == [] and released.releases[0]["reason"] == "feed repaired"
    assert loop.retraining_plan(released, 2).train_indices == [0, 1]
    assert engine.begin(BATCH, dag_root, release=[0]).releases == released.releases  # a retry
    with pytest.raises(loop.LoopStateError, match="batch 1 is not held"):
        engine.begin(BATCH, dag_root, release=[1])


def test_replay_runs_the_monitor_on_the_dags_inputs_once_per_served_model(tmp_path, frozen):
    """``RefitServices`` with the monitor on: the ``monitor`` entry point's own assessment of the
    model held in-process, on ``loop.monitor_inputs``; a second arm serving the same model on the
    same batches reuses it instead of assessing again."""
    predictor, initial = frozen
    root = _store(tmp_path, "arm", _encounters(2 * BATCH, seed=3))
    initial_uri = storage.write_bytes(
        storage.join(root, config.INITIAL_TRAIN_KEY), columns.to_raw_csv_bytes(initial)
    )
    baseline_uri = storage.write_bytes(
        storage.join(root, config.INITIAL_TEST_KEY),
        columns.to_raw_csv_bytes(_encounters(400, seed=4, signal=False)),
    )
    cache = refits.RefitCache()

    def arm() -> refits.RefitServices:
        return refits.RefitServices(
            predictor, initial, root, alert_budget=0.1, cache=cache, monitored=True,
            thresholds=Thresholds.defaults(), baseline_uri=baseline_uri,
            frozen_lineage={f"{DATA_TAG_PREFIX}initial_train_uri": initial_uri},
            initial_train_uri=initial_uri,
        )  # fmt: skip

    state = engine.begin(BATCH, root, label_lag_batches=1)
    summaries = []
    for _ in range(2):
        state, record = engine.handle_batch(arm(), engine.parse_policy("frozen"), state, root)
        summaries.append(record.summary)
    assert all(set(summary["alerts"]) <= set(engine.ALERT_KINDS) for summary in summaries)
    assert summaries[0]["labelled_uri"] is None and "roc_auc" not in summaries[0]["performance"]
    # Batch 1: the frozen model judged on batch 0's matured labels, window = batch 0's inputs.
    assert summaries[1]["labelled_uri"] == loop.matured_labels_uri(0, root)
    assert summaries[1]["recent_uri"] == loop.batch_uri(0, root)
    assert summaries[1]["labelled_rows"] > 0 and summaries[1]["drift"] is not None
    assert len(cache.monitor_seconds) == 2
    again = arm().monitor(state, loop.Batch(1, loop.batch_uri(1, root), BATCH, BATCH), "frozen")
    assert again is summaries[1] and len(cache.monitor_seconds) == 2
