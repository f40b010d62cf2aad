"""The registry step end to end: on the local SQLite store and on a real mlflow server + Postgres.

Training runs follow the training contract (family-best runs with a logged pyfunc whose
LoggedModel carries the selection metric) but hold tiny rule models (``score_rule_model.py``) of
known quality, judged on a synthetic labelled frame with the raw schema, so every decision below
is known in advance. Each test uses its
own registered-model name, so tests and backends never see each other's aliases. The last test
registers the small real training run (``trained_model``) on the real ``initial_test`` split.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.metrics import roc_auc_score

from custom_pyfunc import columns, reasons
from steps import register
from steps.core import config, tracking
from steps.evaluation import gate
from steps.orchestration import loop
from steps.registry import registration, versions

MODEL_CODE = Path(__file__).with_name("score_rule_model.py")
# Rule models: STRONG is the model that generated the labels, WEAK sees one of its two signals,
# NOISE looks at a column the label does not depend on.
STRONG = {
    "weights": {"number_inpatient": 0.9, "number_emergency": 0.6},
    "bias": -2.6,
    "threshold": 0.12,
}
WEAK = {"weights": {"number_emergency": 0.6}, "bias": -2.2, "threshold": 0.12}
NOISE = {"weights": {"num_lab_procedures": 0.02}, "bias": -3.0, "threshold": 0.1}
POLICY = gate.GatePolicy(margin=0.01, auc_floor=0.55, max_subgroup_recall_gap=0.25)

pytestmark = pytest.mark.slow


def synthetic_encounters(n_rows: int, seed: int) -> pd.DataFrame:
    """Encounters with every raw column and valid values; 30-day readmission follows STRONG."""
    rng = np.random.default_rng(seed)
    frame = {
        "encounter_id": np.arange(1, n_rows + 1) * 10,
        "patient_nbr": rng.permutation(n_rows) + 5000,
    }
    for name in columns.RAW_COLUMNS:
        if name in frame or name == columns.LABEL_COLUMN:
            continue
        if name in columns.COUNT_RANGES:
            low, high = columns.COUNT_RANGES[name]
            frame[name] = np.clip(rng.poisson(0.6 if low == 0 else 5, n_rows), low, high)
        elif name in columns.CODED_ID_VALUES:
            frame[name] = rng.choice([1, 2, 3, 11], p=[0.5, 0.25, 0.2, 0.05], size=n_rows)
        elif columns.CATEGORY_VALUES.get(name):
            frame[name] = rng.choice(columns.CATEGORY_VALUES[name], size=n_rows)
        else:
            frame[name] = rng.choice(["428", "250.01", "V45", "InternalMedicine"], size=n_rows)
    frame = pd.DataFrame(frame)
    frame.loc[rng.random(n_rows) < 0.02, "race"] = None  # missing race, as in the real data
    logit = STRONG["bias"] + sum(w * frame[c] for c, w in STRONG["weights"].items())
    readmitted = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    frame[columns.LABEL_COLUMN] = np.where(readmitted, "<30", rng.choice([">30", "NO"], n_rows))
    return frame[list(columns.RAW_COLUMNS)]


@pytest.fixture(scope="module")
def eval_data_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A labelled raw-format CSV of 4,000 synthetic encounters."""
    path = tmp_path_factory.mktemp("registry-eval") / "labelled_batch.csv"
    path.write_bytes(columns.to_raw_csv_bytes(synthetic_encounters(4000, seed=1)))
    return str(path)


@dataclass
class Backend:
    """A tracking store with three contract-following training runs in their own experiment."""

    name: str
    training_runs: dict[str, str]  # "weak" / "noise" / "strong" -> training run id
    best_runs: dict[str, str]  # same keys -> the family-best run the registry should pick


def log_training_run(families: dict[str, tuple[dict, float]]) -> tuple[str, dict[str, str]]:
    """A training run per the contract; returns its id and each family's family-best run id."""
    config.ensure_experiment(config.TRAINING_EXPERIMENT)
    best_runs = {}
    with mlflow.start_run(run_name="training") as parent:
        mlflow.set_tag(tracking.ROLE_TAG, "training")
        for family, (model_config, val_roc_auc) in families.items():
            with mlflow.start_run(run_name=family, nested=True):
                mlflow.set_tags({tracking.ROLE_TAG: "family_parent", tracking.FAMILY_TAG: family})
                with mlflow.start_run(run_name=f"{family}-best", nested=True) as best:
                    info = mlflow.pyfunc.log_model(
                        name="model",
                        python_model=str(MODEL_CODE),
                        model_config=model_config,
                        pip_requirements=["mlflow"],
                    )
                    mlflow.set_tags(
                        {
                            tracking.ROLE_TAG: "family_best",
                            tracking.FAMILY_TAG: family,
                            tracking.MODEL_URI_TAG: info.model_uri,
                            "health_predict.data.initial_train_sha256": "ab" * 32,
                        }
                    )
                    mlflow.log_metrics(
                        {tracking.SELECTION_METRIC: val_roc_auc, "test_brier": 0.1},
                        model_id=info.model_id,
                    )
                    mlflow.log_params({"threshold": model_config["threshold"], "target": "30d"})
                    best_runs[family] = best.info.run_id
    return parent.info.run_id, best_runs


@pytest.fixture(scope="module", params=["sqlite", "mlflow-server-postgres"])
def backend(request: pytest.FixtureRequest, session_stores: dict[str, str]):
    """Each test runs once on the session's SQLite store and once on the real server."""
    previous_uri = os.environ["MLFLOW_TRACKING_URI"]
    if request.param == "mlflow-server-postgres":
        os.environ["MLFLOW_TRACKING_URI"] = request.getfixturevalue("mlflow_server_uri")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "TRAINING_EXPERIMENT", f"HealthPredict_Training_{uuid.uuid4().hex}")
        config.configure_mlflow()
        runs, best = {}, {}
        plan = {
            "weak": {"logreg": (WEAK, 0.60), "random_forest": (NOISE, 0.58)},
            "noise": {"xgboost": (NOISE, 0.70)},  # the best validation score, but useless
            "strong": {"lightgbm": (STRONG, 0.72), "logreg": (WEAK, 0.61)},
        }
        for key, families in plan.items():
            runs[key], family_best = log_training_run(families)
            best[key] = family_best[max(families, key=lambda f: families[f][1])]
        yield Backend(request.param, runs, best)
    os.environ["MLFLOW_TRACKING_URI"] = previous_uri
    config.configure_mlflow()


@pytest.fixture
def client(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client on the backend, with a registered-model name of this test's own."""
    monkeypatch.setattr(config, "MODEL_NAME", f"health-predict-{uuid.uuid4().hex[:12]}")
    return MlflowClient()


def _aliases(client: MlflowClient) -> dict[str, str]:
    return {
        name: str(v) for name, v in client.get_registered_model(config.MODEL_NAME).aliases.items()
    }


def _versions(client: MlflowClient) -> list[str]:
    found = client.search_model_versions(f"name = '{config.MODEL_NAME}'")
    return sorted((str(v.version) for v in found), key=int)


def _expected_auc(model_config: dict, eval_data_uri: str) -> float:
    """ROC-AUC of a rule model on the eligible rows, computed without the registry code."""
    frame = columns.read_encounters_csv(Path(eval_data_uri).read_bytes())
    frame = frame[columns.is_label_eligible(frame)]
    # Same float operations as the model, so that near-equal scores tie (or not) identically.
    logit = np.full(len(frame), float(model_config["bias"]))
    for column, weight in model_config["weights"].items():
        logit += weight * frame[column].to_numpy(dtype=float)
    return roc_auc_score(columns.make_label(frame), 1 / (1 + np.exp(-logit)))


def test_gate_promotes_on_floors_rejects_worse_and_promotes_better(backend, client, eval_data_uri):
    first = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    assert first.promoted and first.champion_changed and first.action == "judged"
    assert first.source_run_id == backend.best_runs["weak"]
    assert _aliases(client) == {"champion": first.version, "challenger": first.version}
    tags = client.get_model_version(config.MODEL_NAME, first.version).tags
    assert tags["promoted"] == "true"
    assert tags["reason"].startswith("no champion")
    assert tags["champion_roc_auc"] == tags["champion_version"] == "none"
    assert float(tags["challenger_roc_auc"]) == pytest.approx(
        _expected_auc(WEAK, eval_data_uri), abs=1e-6
    )
    assert tags["eval_data_sha256"] == hashlib.sha256(Path(eval_data_uri).read_bytes()).hexdigest()
    assert tags["margin"] == "0.01"
    assert tags[tracking.SOURCE_RUN_TAG] == backend.best_runs["weak"]

    # Best on validation, useless on the evaluation data: registered, judged, not promoted.
    second = registration.register(backend.training_runs["noise"], eval_data_uri, POLICY)
    assert not second.promoted and not second.champion_changed
    assert second.version != first.version
    assert _aliases(client) == {"champion": first.version, "challenger": second.version}
    tags = client.get_model_version(config.MODEL_NAME, second.version).tags
    assert tags["promoted"] == "false"
    assert tags["champion_version"] == first.version
    assert float(tags["auc_difference_ci_high"]) < 0
    assert "not non-inferior" in tags["reason"] and "below the floor" in tags["reason"]

    third = registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    assert third.promoted and third.champion_changed
    assert _aliases(client) == {
        "champion": third.version,
        "challenger": third.version,
        "previous-champion": first.version,
    }
    tags = client.get_model_version(config.MODEL_NAME, third.version).tags
    assert float(tags["auc_difference_ci_low"]) > -POLICY.margin
    assert float(tags["auc_difference"]) == pytest.approx(
        _expected_auc(STRONG, eval_data_uri) - _expected_auc(WEAK, eval_data_uri), abs=1e-6
    )

    # The model card: the version's description, and in full on the registry run.
    description = client.get_model_version(config.MODEL_NAME, third.version).description
    assert "## Intended use" in description and "## Known limitations" in description
    assert len(description) <= 5000
    card = mlflow.artifacts.load_text(f"runs:/{third.registry_run_id}/model_card.md")
    for section in (
        "## Not intended for",
        "## Subgroups",
        "## Fair baselines",
        "## Operating point",
        "## Calibration",
    ):
        assert section in card
    assert re.search(r"\|\s*gender\s*\|\s*Female\s*\|", card)  # to_markdown pads cells
    assert tags["eval_data_sha256"] in card


def test_register_twice_creates_no_version_and_moves_no_alias(backend, client, eval_data_uri):
    first = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    aliases, versions = _aliases(client), _versions(client)
    again = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    assert again.version == first.version
    assert again.action == "already-decided" and again.promoted and not again.champion_changed
    assert _aliases(client) == aliases and _versions(client) == versions == [first.version]
    # Without a run id, the latest training run of the experiment is registered.
    latest = registration.register(None, eval_data_uri, POLICY)
    assert latest.train_run_id == backend.training_runs["strong"]


def test_crash_before_the_decision_or_before_the_aliases_is_repaired(
    backend, client, eval_data_uri, monkeypatch
):
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as patch:
        patch.setattr(registration, "_judge_and_record", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    [version] = _versions(client)
    assert "promoted" not in client.get_model_version(config.MODEL_NAME, version).tags
    resumed = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    assert resumed.version == version and resumed.action == "judged" and resumed.promoted

    # Decision recorded, crash before the aliases move: the next call moves them.
    with monkeypatch.context() as patch:
        patch.setattr(registration, "promote", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    strong = versions.find_version(client, backend.best_runs["strong"])
    strong_version = str(strong.version)
    assert strong.tags["promoted"] == "true"
    assert _aliases(client)["champion"] == version
    repaired = registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    assert repaired.action == "repaired" and repaired.champion_changed
    assert repaired.version == strong_version
    assert _aliases(client)["champion"] == strong_version
    assert _aliases(client)["previous-champion"] == version
    assert _versions(client) == [version, strong_version]


def test_rollback_restores_the_previous_champion_and_is_not_undone_by_register(
    backend, client, eval_data_uri, capsys
):
    assert register.main(["--rollback"]) == 2  # nothing to roll back to yet
    assert "previous-champion" in capsys.readouterr().err
    weak = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    strong = registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    assert strong.promoted

    result = versions.rollback()
    assert (result.rolled_back_from, result.champion_version) == (strong.version, weak.version)
    assert _aliases(client)["champion"] == weak.version
    assert _aliases(client)["previous-champion"] == strong.version
    demoted = client.get_model_version(config.MODEL_NAME, strong.version)
    assert demoted.tags[tracking.ROLLED_BACK_TAG] == "true"

    again = registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    assert again.action == "already-decided" and not again.champion_changed
    assert _aliases(client)["champion"] == weak.version

    versions.rollback()  # a second rollback undoes the first
    assert _aliases(client)["champion"] == strong.version
    restored = client.get_model_version(config.MODEL_NAME, strong.version)
    assert tracking.ROLLED_BACK_TAG not in restored.tags


def test_rollback_redeploys_the_restored_champion(backend, client, eval_data_uri, monkeypatch):
    """Fake: the deploy step records its call instead of building and rolling out (no cluster
    here; the deploy step itself is tested in tests/code/test_deploy.py)."""
    from types import SimpleNamespace

    from steps.deployment import rollout

    weak = registration.register(backend.training_runs["weak"], eval_data_uri, POLICY)
    strong = registration.register(backend.training_runs["strong"], eval_data_uri, POLICY)
    assert strong.promoted
    calls = []
    deployed = SimpleNamespace(image="registry.example/health-predict@sha256:0", url=None)
    monkeypatch.setattr(rollout, "deploy", lambda **options: calls.append(options) or deployed)
    assert register.main(["--rollback", "--deploy-target", "k8s"]) == 0
    assert calls == [{"target": "k8s", "model_uri": config.model_version_uri(weak.version)}]
    assert register.main(["--rollback", "--deploy-target", "none"]) == 0
    assert len(calls) == 1 and _aliases(client)["champion"] == strong.version


def test_registers_the_best_model_of_a_real_training_run(
    trained_model, session_stores, monkeypatch
):
    """The small real HPO run on the real data, judged on ``initial_test`` (the default)."""
    previous_uri = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", session_stores["MLFLOW_TRACKING_URI"])
    monkeypatch.setattr(config, "MODEL_NAME", f"health-predict-{uuid.uuid4().hex[:12]}")
    try:
        decision = registration.register(trained_model.train_run_id)
        client = MlflowClient()
        assert decision.source_run_id == trained_model.best_run_id
        tags = client.get_model_version(config.MODEL_NAME, decision.version).tags
        training = client.get_run(trained_model.train_run_id).data
        assert tags["eval_data_sha256"] == training.tags["health_predict.data.initial_test_sha256"]
        # The registry's serving-path ROC-AUC agrees with training's in-process test ROC-AUC.
        best = client.get_run(trained_model.best_run_id).data
        assert float(tags["challenger_roc_auc"]) == pytest.approx(
            best.metrics["test_roc_auc"], abs=1e-4
        )
        policy = gate.GatePolicy()
        passes_floors = (
            float(tags["challenger_roc_auc"]) >= policy.auc_floor
            and float(tags["subgroup_recall_gap"]) <= policy.max_subgroup_recall_gap
        )
        assert decision.promoted == passes_floors == (tags["promoted"] == "true")
        description = client.get_model_version(config.MODEL_NAME, decision.version).description
        train_sha = training.tags["health_predict.data.initial_train_sha256"]
        assert train_sha in description
        # The operating point is the alert budget; max-F1 is reported as the alternative only.
        budget = config.project_defaults("train")["alert_budget"]
        assert f"flags the top {budget:.0%} of validation discharges" in description
        assert "Alternative, reported only: the max-F1" in description
        # The card's global view: each input column's mean |contribution| on the test split.
        prefix = reasons.GLOBAL_METRIC_PREFIX
        means = {k.removeprefix(prefix): v for k, v in best.metrics.items() if k.startswith(prefix)}
        assert set(means) == set(reasons.REASON_NAMES) and max(means.values()) > 0
        card = mlflow.artifacts.load_text(f"runs:/{decision.registry_run_id}/model_card.md")
        drivers = card.split("## What drives the score")[1].split("## ")[0]
        top, value = max(means, key=means.get), max(means.values())
        assert re.search(rf"\|\s*{re.escape(top)}\s*\|\s*{value:.3f}\s*\|", drivers), drivers
    finally:
        mlflow.set_tracking_uri(previous_uri)
        mlflow.set_registry_uri(previous_uri)


# A promotion is never left undeployed (issue 15, item 8): ``register`` is killed right after it
# moved the ``champion`` alias; the retry (Airflow retrying the training DAG's ``register`` task or
# the monitoring DAG's ``retrain_inline`` task, both through ``loop.run_registration``) must still
# report the change, so that the DAG deploys it. The step runs in-process instead of through
# ``mlflow run`` so that it uses this test's registered-model name.


def _register_in_process(monkeypatch, eval_data_uri):
    """Make ``run_entry_point('register', ...)`` run the real step in this process."""

    def run_entry_point(entry_point, parameters, run_key=None, experiment=None):
        assert entry_point == "register"
        result = registration.register(parameters["train_run_id"], eval_data_uri, POLICY)
        return result.registry_run_id

    monkeypatch.setattr(tracking, "run_entry_point", run_entry_point)


def test_retry_after_a_kill_past_the_alias_move_still_deploys_the_promotion(
    backend, client, eval_data_uri, monkeypatch
):
    _register_in_process(monkeypatch, eval_data_uri)
    first = loop.run_registration(backend.training_runs["weak"], eval_data_uri)
    assert first.champion_changed and first.champion_before is None

    real_promote = versions.promote

    def promote_then_die(*args, **kwargs):
        real_promote(*args, **kwargs)
        raise KeyboardInterrupt("killed right after the champion alias moved")

    with monkeypatch.context() as patch:
        patch.setattr(registration, "promote", promote_then_die)
        with pytest.raises(KeyboardInterrupt):
            loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    promoted = _aliases(client)["champion"]
    assert promoted != first.champion_after

    retried = loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    assert retried.champion_changed
    assert (retried.champion_before, retried.champion_after) == (first.champion_after, promoted)
    # Once another version is champion, the old registration no longer asks for a deployment.
    rolled_back = versions.rollback()
    assert rolled_back.champion_version == first.champion_after
    stale = loop.registration_outcome(retried.train_run_id, retried.register_run_id)
    assert not stale.champion_changed


def test_a_rejected_challenger_asks_for_no_deployment(backend, client, eval_data_uri, monkeypatch):
    _register_in_process(monkeypatch, eval_data_uri)
    loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    rejected = loop.run_registration(backend.training_runs["noise"], eval_data_uri)
    assert not rejected.champion_changed
    assert rejected.challenger_version != rejected.champion_after
