"""Fixtures for the data area (see tests/conftest.py).

- ``ingested_and_split`` / ``processed_data_uri``: the real dataset ingested and split once per
  session into the session data store.
- ``s3_data_uri``: a fresh bucket on moto's standalone S3 server, the S3 emulator available here
  (no AWS account in tests), with the endpoint variables pointing at it.
- ``synthetic_encounters``: made-up rows with the raw schema, for fast unit tests (never real rows).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from custom_pyfunc import columns
from steps.data import ingestion, splitting


@dataclass(frozen=True)
class IngestedAndSplit:
    """The session's ingest and split results on the real dataset."""

    data_uri: str
    ingest: ingestion.IngestResult
    split: splitting.SplitResult


@pytest.fixture(scope="session")
def ingested_and_split(session_stores: dict[str, str]) -> IngestedAndSplit:
    """Real ingest + split of the shared dataset into the session data store."""
    data_uri = session_stores["HEALTH_PREDICT_DATA_URI"]
    ingest_result = ingestion.ingest(session_stores["HEALTH_PREDICT_RAW_DATA"], data_uri)
    split_result = splitting.split(data_uri=data_uri)
    return IngestedAndSplit(data_uri=data_uri, ingest=ingest_result, split=split_result)


@pytest.fixture(scope="session")
def processed_data_uri(ingested_and_split: IngestedAndSplit) -> str:
    """Root of the session data store, holding ``raw_data/`` and ``processed_data/``."""
    return ingested_and_split.data_uri


def synthetic_encounters(n_rows: int, seed: int = 0, n_patients: int | None = None) -> pd.DataFrame:
    """``n_rows`` made-up encounters with every raw column and the contract dtypes.

    Values are drawn from the allowed sets and ranges of ``custom_pyfunc.columns``; about 15% are
    readmitted within 30 days; patients repeat when ``n_patients < n_rows``.
    """
    rng = np.random.default_rng(seed)
    n_patients = n_patients or max(1, int(n_rows * 0.75))

    def pick(values, p=None) -> np.ndarray:
        return rng.choice(np.array(values, dtype=object), size=n_rows, p=p)

    def with_missing(values: np.ndarray, share: float) -> np.ndarray:
        values = values.copy()
        values[rng.random(n_rows) < share] = None
        return values

    frame: dict[str, object] = {
        "encounter_id": 10_000 + rng.permutation(n_rows * 10)[:n_rows],
        "patient_nbr": 500_000 + rng.integers(0, n_patients, n_rows),
        "race": with_missing(pick(columns.CATEGORY_VALUES["race"]), 0.03),
        "gender": pick(("Female", "Male")),
        "age": pick(columns.AGE_BRACKETS),
        "weight": with_missing(pick(columns.CATEGORY_VALUES["weight"]), 0.9),
        "payer_code": with_missing(pick(("MC", "HM", "BC", "SP")), 0.4),
        "medical_specialty": with_missing(
            pick(("Cardiology", "Surgery-General", "Emergency/Trauma")), 0.5
        ),
        "max_glu_serum": pick(columns.CATEGORY_VALUES["max_glu_serum"], p=(0.9, 0.04, 0.03, 0.03)),
        "A1Cresult": pick(columns.CATEGORY_VALUES["A1Cresult"], p=(0.8, 0.06, 0.06, 0.08)),
        "change": pick(columns.CATEGORY_VALUES["change"]),
        "diabetesMed": pick(columns.CATEGORY_VALUES["diabetesMed"]),
        "readmitted": pick(columns.LABEL_VALUES, p=(0.15, 0.35, 0.5)),
    }
    for name, allowed in columns.CODED_ID_VALUES.items():
        frame[name] = pick(sorted(allowed))
    for name, (low, high) in columns.COUNT_RANGES.items():
        frame[name] = rng.integers(low, min(high, low + 30) + 1, n_rows)
    for name in columns.DIAGNOSIS_COLUMNS:
        frame[name] = with_missing(pick(("250.83", "428", "414", "V57", "E909", "8")), 0.02)
    for name in columns.MEDICATION_COLUMNS:
        frame[name] = pick(columns.MEDICATION_VALUES, p=(0.7, 0.2, 0.05, 0.05))
    return columns.read_encounters_csv(
        columns.to_raw_csv_bytes(pd.DataFrame(frame)[list(columns.RAW_COLUMNS)])
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of moto's standalone S3 server on a free loopback port (moto: the S3 emulator here)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_data_uri(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<fresh bucket>/store``, with boto3 pointed at the moto server by env variables."""
    import boto3

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"health-predict-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store"
