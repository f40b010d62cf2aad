"""What the scoring server exposes and how it refuses hostile or odd requests (issue 15).

Against the session's real ``mlflow models serve`` process (or ``API_BASE_URL``); the ``nginx``
cases also against the image's nginx config run on this host in front of that server. Every bad
request carries sentinels standing in for patient values: no answer may contain one.
"""

from __future__ import annotations

import http.client
import io
import json
import time
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests

from custom_pyfunc import columns
from tests.api.test_scoring_api import (
    SENTINEL_NUMBER,
    SENTINEL_TEXT,
    changed,
    encounter_records,
    predictions_of,
    without,
)

pytestmark = pytest.mark.slow


def _sentinel_records(n_rows: int, seed: int = 31) -> list[dict]:
    """Records whose identifiers are all sentinels (as a leaked ``patient_nbr`` would show)."""
    return [
        changed(r, patient_nbr=SENTINEL_NUMBER + i, encounter_id=SENTINEL_NUMBER - i)
        for i, r in enumerate(encounter_records(n_rows, seed=seed))
    ]


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _split(records: list[dict]) -> dict:
    names = list(records[0])
    return {"dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in records]}}


def _hostile_requests() -> dict[str, tuple[bytes, str, int, str]]:
    """name -> (body, Content-Type, expected status, fragment of the message)."""
    records = _sentinel_records(200)
    one = changed(records[0], diag_1=SENTINEL_TEXT)
    one_missing_weight = [*records[:50], without(records[50], "weight"), *records[51:]]
    split_long_index = _split(records[:1])
    split_long_index["dataframe_split"]["index"] = list(range(10_000))
    duplicated = _split([one])
    duplicated["dataframe_split"]["columns"][0] = SENTINEL_TEXT
    duplicated["dataframe_split"]["columns"][1] = SENTINEL_TEXT
    race_number = pd.DataFrame([changed(one, race=SENTINEL_NUMBER)])
    cases = {
        "inputs with lists of differing length": (
            {"inputs": {"race": ["Caucasian", SENTINEL_TEXT], "diag_1": [SENTINEL_TEXT]}},
            400,
            "'inputs' format is not served",
        ),
        "instances with different keys": (
            {"instances": [one, {"diag_2": SENTINEL_TEXT}]},
            400,
            "'instances' format is not served",
        ),
        "instances batch with one record missing weight": (
            {"instances": one_missing_weight},
            400,
            "'instances' format is not served",
        ),
        "records batch with one record missing weight": (
            {"dataframe_records": one_missing_weight},
            400,
            "column 'weight' is missing from 1 of 200 records",
        ),
        "split with index longer than data": (split_long_index, 400, "'index' must list one entry"),
        "split with a short row": (
            {"dataframe_split": {"columns": list(one), "data": [list(one.values())[:-1]]}},
            400,
            "do not have one value per column",
        ),
        "split with duplicated column names": (duplicated, 400, "lists a name more than once"),
        "records that are not objects": ({"dataframe_records": [[SENTINEL_TEXT]]}, 400, "list of"),
        "JSON nested 10,000 deep": ("[" * 10_000 + "]" * 10_000, 400, "nested too deeply"),
        "integer with 5,000 digits in a count": (
            json.dumps({"dataframe_records": [one]}).replace(
                f'"num_medications": {one["num_medications"]}', '"num_medications": ' + "9" * 5000
            ),
            400,
            "number too long",
        ),
        "body that is not UTF-8": (
            b'{"dataframe_records": ["\xff' + SENTINEL_TEXT.encode(),
            400,
            "",
        ),
        "parquet with a number in race": (
            (_parquet(race_number), "application/vnd.apache.parquet"),
            415,
            "Content-Type must be application/json or text/csv",
        ),
        "CSV with text in a count": (
            (
                columns.to_raw_csv_bytes(
                    pd.DataFrame([changed(one, num_medications=SENTINEL_TEXT)])
                ),
                "text/csv",
            ),
            400,
            "'num_medications'",
        ),
        "CSV with a row of too many fields": (
            (
                columns.to_raw_csv_bytes(pd.DataFrame([one]))
                + f"{SENTINEL_TEXT},{SENTINEL_TEXT},".encode() * 30,
                "text/csv",
            ),
            400,
            "",
        ),
    }
    reasons_cases = {
        "negative reasons": ({"reasons": -1}, "params.reasons must be an integer from 0 to"),
        "huge reasons": ({"reasons": 10**15}, "params.reasons must be an integer from 0 to"),
        "text reasons": ({"reasons": SENTINEL_TEXT}, "params.reasons must be an integer"),
        "unknown param": ({SENTINEL_TEXT: 3}, "the only param is 'reasons'"),
        "params not an object": ([3], "params must be an object"),
    }
    for name, (params, fragment) in reasons_cases.items():
        cases[f"split with {name}"] = ({**_split([one]), "params": params}, 400, fragment)
    encoded = {}
    for name, (body, status, fragment) in cases.items():
        content_type = "application/json"
        if isinstance(body, tuple):
            body, content_type = body
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        encoded[name] = (body, content_type, status, fragment)
    return encoded


HOSTILE = _hostile_requests()


def _post(base_url: str, body: bytes, content_type: str | None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{base_url}/invocations", data=body, headers=headers, timeout=60)


def _assert_no_patient_value(text: str) -> None:
    assert SENTINEL_TEXT not in text
    for offset in (0, 1, 50, 199):
        assert str(SENTINEL_NUMBER + offset) not in text
        assert str(SENTINEL_NUMBER - offset) not in text


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_request_gets_4xx_naming_problems_only(scoring_service, name):
    body, content_type, status, fragment = HOSTILE[name]
    response = _post(scoring_service.base_url, body, content_type)
    assert response.status_code == status, (response.status_code, response.text[:300])
    _assert_no_patient_value(response.text)
    assert len(response.content) < 2_000
    assert fragment in response.json()["message"]
    assert requests.get(scoring_service.base_url + "/ping", timeout=10).status_code == 200


def test_hostile_requests_leave_no_patient_value_in_the_server_log(scoring_service):
    if scoring_service.log_path is None:
        pytest.skip("the deployed service's logs are not readable from here")
    for body, content_type, _, _ in HOSTILE.values():
        _post(scoring_service.base_url, body, content_type)
    log = scoring_service.log_path.read_text(errors="replace")
    assert "POST /invocations" in log
    _assert_no_patient_value(log)


def test_null_in_records_and_split_is_a_missing_value_not_text(scoring_service):
    record = changed(encounter_records(1, seed=41)[0], weight=None, payer_code=None, race=None)
    from_records = predictions_of(
        requests.post(
            f"{scoring_service.base_url}/invocations",
            json={"dataframe_records": [record]},
            timeout=60,
        )
    )
    from_split = predictions_of(
        requests.post(f"{scoring_service.base_url}/invocations", json=_split([record]), timeout=60)
    )
    pd.testing.assert_frame_equal(from_records, from_split)


def test_split_index_as_long_as_data_is_accepted(scoring_service):
    body = _split(encounter_records(3, seed=43))
    body["dataframe_split"]["index"] = [7, 8, 9]
    response = requests.post(f"{scoring_service.base_url}/invocations", json=body, timeout=60)
    assert len(predictions_of(response)) == 3


def test_csv_in_the_raw_file_format_is_served(scoring_service):
    frame = pd.DataFrame(encounter_records(3, seed=45))
    response = _post(scoring_service.base_url, columns.to_raw_csv_bytes(frame), "text/csv")
    json_answer = requests.post(
        f"{scoring_service.base_url}/invocations",
        json={"dataframe_records": encounter_records(3, seed=45)},
        timeout=60,
    )
    pd.testing.assert_frame_equal(predictions_of(response), predictions_of(json_answer))


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/docs", 404),
        ("GET", "/redoc", 404),
        ("GET", "/openapi.json", 404),
        ("GET", "/metrics", 404),
        ("GET", "/invocations", 405),
        ("POST", "/ping", 405),
        ("DELETE", "/version", 405),
    ],
)
def test_only_the_documented_endpoints_are_exposed(scoring_service, method, path, status):
    response = requests.request(method, scoring_service.base_url + path, timeout=10)
    assert response.status_code == status
    assert "swagger" not in response.text.lower() and "openapi" not in response.text.lower()


def _send_headers_only(base_url: str, declared_length: int) -> tuple[int, float]:
    """Status and seconds for a POST that declares ``declared_length`` bytes and sends 1 KB."""
    where = urlsplit(base_url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    started = time.monotonic()
    try:
        connection.putrequest("POST", "/invocations")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(declared_length))
        connection.endheaders(b'{"dataframe_records": [' + b" " * 1024)
        response = connection.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def test_oversized_body_is_refused_before_it_is_read(scoring_service):
    status, seconds = _send_headers_only(scoring_service.base_url, 200 * 1024 * 1024)
    assert status == 413
    assert seconds < 5  # answered on the header: the 200 MB were never sent
    assert requests.get(scoring_service.base_url + "/ping", timeout=10).status_code == 200


def test_oversized_chunked_body_is_refused(scoring_service):
    chunk = b" " * (1024 * 1024)
    chunks = (chunk for _ in range(scoring_service.max_body_bytes // len(chunk) + 2))
    try:
        response = requests.post(
            f"{scoring_service.base_url}/invocations",
            data=chunks,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    except requests.ConnectionError:  # the server may close while the client still sends
        pass
    else:
        assert response.status_code == 413
        assert "larger than" in response.json()["message"]
    assert requests.get(scoring_service.base_url + "/ping", timeout=10).status_code == 200


def test_documented_maximum_batch_passes_the_body_limit(scoring_service):
    records = _sentinel_records(10_000, seed=47)
    body = json.dumps({"dataframe_records": records}, indent=1).encode()
    assert 10_000_000 < len(body) <= scoring_service.max_body_bytes
    response = _post(scoring_service.base_url, body, "application/json")
    if scoring_service.max_batch_rows >= 10_000:
        assert len(predictions_of(response)) == 10_000
    else:  # the local server's smaller batch limit answers, not the body limit
        assert response.status_code == 400
        assert f"more than {scoring_service.max_batch_rows}" in response.json()["message"]
    _assert_no_patient_value(response.text)


@pytest.mark.parametrize(
    ("method", "path", "content_type", "status"),
    [
        ("GET", "/docs", None, 404),
        ("GET", "/openapi.json", None, 404),
        ("GET", "/invocations", None, 405),
        ("POST", "/ping", "application/json", 405),
        ("POST", "/invocations", "application/vnd.apache.parquet", 415),
        ("POST", "/invocations", "text/plain", 415),
        ("POST", "/invocations", None, 415),
        ("GET", "/version", None, 200),
        ("GET", "/health", None, 200),
    ],
)
def test_image_nginx_passes_only_what_is_meant(nginx_front, method, path, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    data = b"{}" if method == "POST" else None
    response = requests.request(
        method, nginx_front.base_url + path, data=data, headers=headers, timeout=10
    )
    assert response.status_code == status, response.text[:300]
    assert "nginx" not in response.text.lower()


def test_image_nginx_admits_the_documented_maximum_and_refuses_more(nginx_front):
    frame = pd.DataFrame(encounter_records(2, seed=49))
    csv_answer = _post(nginx_front.base_url, columns.to_raw_csv_bytes(frame), "text/csv")
    assert len(predictions_of(csv_answer)) == 2
    body = json.dumps({"dataframe_records": _sentinel_records(10_000, seed=51)}, indent=1)
    response = _post(nginx_front.base_url, body.encode(), "application/json")
    # Refused by row count before parsing (custom_pyfunc.serving), not by nginx's body limit.
    assert response.status_code == 400 and "rows" in response.json()["message"]
    status, seconds = _send_headers_only(nginx_front.base_url, nginx_front.max_body_bytes + 1)
    assert (status, seconds < 5) == (413, True)
