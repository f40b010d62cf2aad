"""A promotion is never left undeployed (issue 15, item 8).

``register`` is killed right after it moved the ``champion`` alias; the retry (what Airflow does
for the training DAG's ``register`` task and the monitoring DAG's ``retrain_inline`` task, both
through ``loop.run_registration``) must still report the change, so that the DAG deploys it. The
register step runs for real, in-process instead of through ``mlflow run`` so that it uses this
test's registered-model name, on the rule models and both backends of ``test_register``.
"""

from __future__ import annotations

import pytest

from steps import register
from steps.core import tracking
from steps.monitoring import loop
from tests.integration.test_register import (  # noqa: F401 - fixtures used by name
    POLICY,
    _aliases,
    backend,
    client,
    eval_data_uri,
)

pytestmark = pytest.mark.slow


def _register_in_process(monkeypatch, eval_data_uri):
    """Make ``run_entry_point('register', ...)`` run the real step in this process."""

    def run_entry_point(entry_point, parameters, run_key=None, experiment=None):
        assert entry_point == "register"
        result = register.register(parameters["train_run_id"], eval_data_uri, POLICY)
        return result.registry_run_id

    monkeypatch.setattr(tracking, "run_entry_point", run_entry_point)


def test_retry_after_a_kill_past_the_alias_move_still_deploys_the_promotion(
    backend, client, eval_data_uri, monkeypatch
):
    _register_in_process(monkeypatch, eval_data_uri)
    first = loop.run_registration(backend.training_runs["weak"], eval_data_uri)
    assert first.champion_changed and first.champion_before is None

    real_promote = register.promote

    def promote_then_die(*args, **kwargs):
        real_promote(*args, **kwargs)
        raise KeyboardInterrupt("killed right after the champion alias moved")

    with monkeypatch.context() as patch:
        patch.setattr(register, "promote", promote_then_die)
        with pytest.raises(KeyboardInterrupt):
            loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    promoted = _aliases(client)["champion"]
    assert promoted != first.champion_after

    retried = loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    assert retried.champion_changed
    assert (retried.champion_before, retried.champion_after) == (first.champion_after, promoted)
    # Once another version is champion, the old registration no longer asks for a deployment.
    rolled_back = register.rollback()
    assert rolled_back.champion_version == first.champion_after
    stale = loop.registration_outcome(retried.train_run_id, retried.register_run_id)
    assert not stale.champion_changed


def test_a_rejected_challenger_asks_for_no_deployment(backend, client, eval_data_uri, monkeypatch):
    _register_in_process(monkeypatch, eval_data_uri)
    loop.run_registration(backend.training_runs["strong"], eval_data_uri)
    rejected = loop.run_registration(backend.training_runs["noise"], eval_data_uri)
    assert not rejected.champion_changed
    assert rejected.challenger_version != rejected.champion_after
