"""Two promotions at once on a real MLflow registry (the session's SQLite store): the registry's
promotion lock makes each read-champion-then-promote whole, so neither promotion is lost from
the champion / previous-champion chain."""

from __future__ import annotations

import threading
import time
import uuid

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from steps.core import config, tracking
from steps.registry import versions


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A model of its own with three versions, version 1 the champion."""
    monkeypatch.setattr(config, "MODEL_NAME", f"lock-test-{uuid.uuid4().hex[:8]}")
    config.configure_mlflow()
    client = MlflowClient()
    client.create_registered_model(config.MODEL_NAME)
    for _ in range(3):
        client.create_model_version(config.MODEL_NAME, source=tmp_path.as_uri())
    client.set_registered_model_alias(config.MODEL_NAME, config.CHAMPION_ALIAS, "1")
    return client


def promote_slowly(client: MlflowClient, version: str) -> None:
    """What register does under the lock: read the champion, judge (a pause), promote."""
    with versions.promotion_lock(client, poll_s=0.05):
        champion = tracking.alias_version(config.CHAMPION_ALIAS)
        time.sleep(0.5)
        versions.promote(client, version, champion)


def test_two_promotions_at_once_both_land_in_the_alias_chain(registry):
    threads = [threading.Thread(target=promote_slowly, args=(registry, v)) for v in ("2", "3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    champion = tracking.alias_version(config.CHAMPION_ALIAS)
    previous = tracking.alias_version(config.PREVIOUS_CHAMPION_ALIAS)
    # Serialised: 1 -> first winner -> second winner. Unguarded, both read champion 1 and the
    # first promotion falls out of previous-champion.
    assert {champion, previous} == {"2", "3"}
    names = [m.name for m in registry.search_registered_models()]
    assert config.MODEL_NAME + versions.LOCK_SUFFIX not in names, "the lock was not released"


def test_a_stale_lock_is_broken_and_a_live_one_times_out(registry):
    lock_name = config.MODEL_NAME + versions.LOCK_SUFFIX
    registry.create_registered_model(lock_name, tags={versions.LOCK_ACQUIRED_TAG: "0"})
    with versions.promotion_lock(registry, timeout_s=5, poll_s=0.05):  # held since 1970: stale
        live = versions.promotion_lock(registry, timeout_s=0.2, poll_s=0.05)
        with pytest.raises(versions.RegistrationError, match="held"), live:
            pass


def test_a_lock_released_during_the_attempt_is_taken_on_the_next_try(registry, monkeypatch):
    """SQLite's store answers a lost insert race by looking the name up; when the holder released
    it in between, that lookup says 'does not exist', which means: try again, not fail."""
    create = registry.create_registered_model
    attempts = []

    def released_in_between(name, **kwargs):
        attempts.append(name)
        if len(attempts) == 1:
            raise mlflow.exceptions.MlflowException(
                f"Registered Model with name={name} not found", error_code=RESOURCE_DOES_NOT_EXIST
            )
        return create(name, **kwargs)

    monkeypatch.setattr(registry, "create_registered_model", released_in_between)
    with versions.promotion_lock(registry, timeout_s=5, poll_s=0.05):
        pass
    assert len(attempts) == 2
