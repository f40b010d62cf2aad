"""The served model's HTTP API, against a real MLflow scoring server process.

The server is the session's ``scoring_service`` (tests/fixtures_serving.py): the freshly trained
model behind ``mlflow models serve`` on a free port, or a deployed service when ``API_BASE_URL`` is
set. Bad requests carry distinctive sentinel values standing in for patient data; no error body and
no server log line may contain them.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import requests

from custom_pyfunc import columns, reasons
from tests.fixtures_data import synthetic_encounters

pytestmark = pytest.mark.slow

SENTINEL_TEXT = "ZQX-SENTINEL-4471"
SENTINEL_NUMBER = 987_654_321
SENTINEL_SPECIALTY = "ZQX-Specialty-5581"  # a valid, unseen specialty: accepted, never logged


def encounter_records(n_rows: int, seed: int = 7) -> list[dict]:
    """Made-up encounters (identifiers included, label dropped) as JSON-ready records."""
    frame = synthetic_encounters(n_rows, seed=seed).drop(columns=[columns.LABEL_COLUMN])
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def post_json(service, body: dict, timeout: float = 60) -> requests.Response:
    return requests.post(f"{service.base_url}/invocations", json=body, timeout=timeout)


def post_raw(service, data: str, content_type: str | None) -> requests.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(
        f"{service.base_url}/invocations", data=data.encode(), headers=headers, timeout=60
    )


def predictions_of(response: requests.Response) -> pd.DataFrame:
    assert response.status_code == 200, response.text[:500]
    return pd.DataFrame(response.json()["predictions"])


def changed(record: dict, **values) -> dict:
    return {**record, **values}


def without(record: dict, name: str) -> dict:
    return {k: v for k, v in record.items() if k != name}


def test_ping_health_and_version_answer(scoring_service):
    for path in ("/ping", "/health"):
        assert requests.get(scoring_service.base_url + path, timeout=10).status_code == 200
    version = requests.get(scoring_service.base_url + "/version", timeout=10)
    assert version.status_code == 200
    if scoring_service.log_path is not None:
        assert version.text == mlflow.__version__


def test_batch_matches_in_process_predict(scoring_service):
    if scoring_service.model_uri is None:
        pytest.skip("API_MODEL_URI not set: no in-process model to compare the service with")
    records = encounter_records(40)
    served = predictions_of(post_json(scoring_service, {"dataframe_records": records}))
    assert list(served.columns) == ["prediction", "probability_score"]
    assert set(served["prediction"]) <= {0, 1}
    assert served["probability_score"].between(0, 1).all()
    in_process = mlflow.pyfunc.load_model(scoring_service.model_uri).predict(pd.DataFrame(records))
    assert served["prediction"].tolist() == in_process["prediction"].tolist()
    assert served["probability_score"].tolist() == pytest.approx(
        in_process["probability_score"].tolist(), abs=1e-9
    )


def test_one_patient_in_split_and_records_formats_agree(scoring_service):
    record = encounter_records(1, seed=11)[0]
    names = list(record)
    split = {"dataframe_split": {"columns": names, "data": [[record[n] for n in names]]}}
    from_split = predictions_of(post_json(scoring_service, split))
    from_records = predictions_of(post_json(scoring_service, {"dataframe_records": [record]}))
    assert len(from_split) == 1
    pd.testing.assert_frame_equal(from_split, from_records)


def test_identifiers_are_accepted_and_ignored(scoring_service):
    records = encounter_records(5, seed=3)
    relabelled = [changed(r, encounter_id=1 + i, patient_nbr=2 + i) for i, r in enumerate(records)]
    anonymous = [without(without(r, "encounter_id"), "patient_nbr") for r in records]
    baseline = predictions_of(post_json(scoring_service, {"dataframe_records": records}))
    for variant in (relabelled, anonymous):
        response = post_json(scoring_service, {"dataframe_records": variant})
        pd.testing.assert_frame_equal(predictions_of(response), baseline)


def test_whole_floats_and_unseen_open_categories_are_accepted(scoring_service):
    record = encounter_records(1, seed=5)[0]
    baseline = predictions_of(post_json(scoring_service, {"dataframe_records": [record]}))
    as_floats = changed(record, num_medications=float(record["num_medications"]))
    assert predictions_of(post_json(scoring_service, {"dataframe_records": [as_floats]})).equals(
        baseline
    )
    unseen = changed(record, medical_specialty=SENTINEL_SPECIALTY, diag_1="V99.9")
    assert len(predictions_of(post_json(scoring_service, {"dataframe_records": [unseen]}))) == 1


BAD_REQUEST_NAMES = (
    "missing column", "text in a count", "fraction in a count", "null where not allowed",
    "unknown category", "count out of range", "unknown coded id", "number in a text column",
    "no rows", "oversized batch", "unknown format key", "malformed JSON", "empty body",
    "missing Content-Type", "wrong Content-Type", "CSV instead of JSON",
)  # fmt: skip


@pytest.fixture(scope="module")
def bad_requests(scoring_service) -> dict[str, tuple[dict | str, str | None, str]]:
    """name -> (JSON body or raw text, Content-Type, fragment the error message must contain)."""
    service = scoring_service
    record = encounter_records(1, seed=21)[0]
    planted = changed(record, diag_1=SENTINEL_TEXT)

    def records(*rows):
        return {"dataframe_records": list(rows)}

    oversized = encounter_records(service.max_batch_rows + 1, seed=2)
    oversized[0]["diag_2"] = SENTINEL_TEXT
    return {
        "missing column": (records(without(planted, "age")), "json", "missing required columns"),
        "text in a count": (
            records(changed(record, num_medications=SENTINEL_TEXT)),
            "json",
            "'num_medications' must hold whole numbers",
        ),
        "fraction in a count": (
            records(changed(planted, num_medications=12.5)),
            "json",
            "'num_medications' must hold whole numbers, got a fraction",
        ),
        "null where not allowed": (
            records(changed(planted, gender=None)),
            "json",
            "'gender' must not be null",
        ),
        "unknown category": (
            records(changed(record, race=SENTINEL_TEXT)),
            "json",
            "'race' has a value outside its categories",
        ),
        "count out of range": (
            records(changed(planted, number_inpatient=SENTINEL_NUMBER)),
            "json",
            "'number_inpatient' must be within",
        ),
        "unknown coded id": (
            records(changed(planted, admission_type_id=99)),
            "json",
            "'admission_type_id' must be a code",
        ),
        "number in a text column": (
            records(changed(record, diag_3=SENTINEL_NUMBER)),
            "json",
            "'diag_3' must hold text",
        ),
        "no rows": ({"dataframe_records": []}, "json", "no rows"),
        "oversized batch": (records(*oversized), "json", "rows, more than"),
        "unknown format key": ({"records": [planted]}, "json", "input fields"),
        "malformed JSON": (
            '{"dataframe_records": [{"diag_1": "' + SENTINEL_TEXT + '",}]}',
            "application/json",
            "not valid JSON",
        ),
        "empty body": ("", "application/json", ""),
        "missing Content-Type": (json.dumps(records(planted)), None, ""),
        "wrong Content-Type": (json.dumps(records(planted)), "text/plain", ""),
        "CSV instead of JSON": ("race,diag_1\nCaucasian," + SENTINEL_TEXT, "text/csv", ""),
    }


def _send(service, body: dict | str, content_type: str | None) -> requests.Response:
    if content_type == "json":
        return post_json(service, body)
    return post_raw(service, body, content_type)


@pytest.mark.parametrize("name", BAD_REQUEST_NAMES)
def test_bad_request_gets_4xx_naming_the_problem_without_patient_values(
    scoring_service, bad_requests, name
):
    assert set(bad_requests) == set(BAD_REQUEST_NAMES)
    body, content_type, fragment = bad_requests[name]
    response = _send(scoring_service, body, content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if name == "missing Content-Type":
        assert response.status_code == 415
    assert SENTINEL_TEXT not in response.text
    assert str(SENTINEL_NUMBER) not in response.text
    if fragment:
        assert fragment in response.json()["message"]
    assert requests.get(scoring_service.base_url + "/ping", timeout=10).status_code == 200


def test_server_log_has_no_patient_values(scoring_service, bad_requests):
    if scoring_service.log_path is None:
        pytest.skip("the deployed service's logs are not readable from here")
    for body, content_type, _ in bad_requests.values():
        _send(scoring_service, body, content_type)
    accepted = changed(encounter_records(1, seed=9)[0], medical_specialty=SENTINEL_SPECIALTY)
    predictions_of(post_json(scoring_service, {"dataframe_records": [accepted]}))
    log = scoring_service.log_path.read_text(errors="replace")
    assert "POST /invocations" in log  # the log is really the server's
    for sentinel in (SENTINEL_TEXT, str(SENTINEL_NUMBER), SENTINEL_SPECIALTY):
        assert sentinel not in log


def test_reasons_param_adds_reasons_and_leaves_the_plain_answer_unchanged(scoring_service):
    records = encounter_records(20, seed=23)
    names = list(records[0])
    split = {"columns": names, "data": [[r[n] for n in names] for r in records]}
    plain = post_json(scoring_service, {"dataframe_split": split})
    zero = post_json(scoring_service, {"dataframe_split": split, "params": {"reasons": 0}})
    assert plain.status_code == 200 and zero.content == plain.content
    assert all(set(p) == {"prediction", "probability_score"} for p in plain.json()["predictions"])
    explained = predictions_of(
        post_json(scoring_service, {"dataframe_split": split, "params": {"reasons": 3}})
    )
    answered = pd.DataFrame(plain.json()["predictions"])
    pd.testing.assert_frame_equal(explained[list(answered.columns)], answered)
    raised, lowered = explained[reasons.RAISED], explained[reasons.LOWERED]
    assert all(len(r) <= 3 and all(x["contribution"] > 0 for x in r) for r in raised)
    assert all(len(r) <= 3 and all(x["contribution"] < 0 for x in r) for r in lowered)
    assert sum(len(r) for r in raised) > 0 and sum(len(r) for r in lowered) > 0
    named = {x["column"] for r in [*raised, *lowered] for x in r}
    assert named <= set(reasons.REASON_NAMES) and not named & set(columns.ID_COLUMNS)
    if scoring_service.model_uri is not None:
        in_process = mlflow.pyfunc.load_model(scoring_service.model_uri).predict(
            pd.DataFrame(records), params={"reasons": 3}
        )
        for served, local in zip(raised, in_process[reasons.RAISED], strict=True):
            assert [x["column"] for x in served] == [x["column"] for x in local]
            assert [x["contribution"] for x in served] == pytest.approx(
                [x["contribution"] for x in local], abs=1e-9
            )
