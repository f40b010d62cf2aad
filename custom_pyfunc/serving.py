"""What MLflow's scoring server (3.17.2) exposes for this model, and the guards enforcing it.

Exposed, in both launch modes (bare ``mlflow models serve`` and the image behind nginx):

- ``GET /ping``, ``GET /health`` (200 once the model is loaded), ``GET /version`` (MLflow version);
- ``POST /invocations`` with ``application/json`` holding exactly one of ``dataframe_records``
  (a list of objects, one per encounter, each with every input column) or ``dataframe_split``
  (``columns`` + ``data`` rows, an optional ``index`` as long as ``data``), or ``text/csv`` in the
  raw file's format (header row; ``?`` or an empty cell is missing; read by
  ``validation.read_csv_input``). A JSON body may add ``"params": {"reasons": k}`` (0 to
  ``reasons.MAX_REASONS``) for each row's reasons; any other param is refused (400).

Refused: every other path (404; FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` included) or
method (405); the ``instances``/``inputs`` formats (400: they turn null into ``'None'`` and their
errors quote the input); parquet and every other Content-Type (415); a body over
:data:`DEFAULT_MAX_BODY_BYTES` (413, from the ``Content-Length`` header before the body is read);
JSON nested deeper than a table or holding more rows than the batch limit, and CSV with more lines
than it (400, from a scan of the bytes before any row is parsed: 16 MiB of empty records cost
parsing first ~58 s and >500 MB).
Every error names columns and problems, never a value, and nothing here logs a request body.

MLflow's own ``invocations`` quotes the whole input in its errors, answers 500 to JSON nested
too deeply or to a huge integer, has no body limit and builds ``dataframe_split`` frames as long as
their ``index``; so :func:`install` (called by the model's ``load_context``, and only inside a
scoring-server process) replaces it with :func:`invocations` and puts :class:`RequestGuard` in
front of the app.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pandas as pd

from custom_pyfunc import columns, reasons, validation

MAX_BODY_BYTES_ENV = "HEALTH_PREDICT_MAX_BODY_BYTES"
# 10,000 encounters (the default batch limit) with identifiers take about 10.1 MB as
# dataframe_records, less as dataframe_split or CSV; 16 MiB leaves room for pretty-printed JSON.
# docker/serving/nginx.conf caps bodies at the same size (client_max_body_size 16m).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

# Deepest JSON a table format needs: body → dataframe_split → data → row (records: one less).
MAX_JSON_DEPTH = 4
# Leaf arrays/objects that are not rows: dataframe_split's columns and index, an empty data list.
_NON_ROW_LEAVES = 3
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"{}[]')))
MAX_INTEGER_DIGITS = 18  # every int64 count fits; longer ones would overflow float conversion
# A run of more digits anywhere in the body (a string's too): only then is every integer checked
# as it is parsed, a Python call per number that costs ~5 ms on a 1,000-row body.
_LONG_DIGIT_RUN = re.compile(rb"\d{%d}" % (MAX_INTEGER_DIGITS + 1))
ROUTES = {"/ping": {"GET", "HEAD"}, "/health": {"GET", "HEAD"}, "/version": {"GET", "HEAD"}}
ROUTES["/invocations"] = {"POST"}
JSON_FORMATS = ("dataframe_records", "dataframe_split")
CONTENT_TYPES = ("application/json", "text/csv")

_logger = logging.getLogger(__name__)
# MLflow runs each request in a thread of its own; under the GIL they cannot run in parallel, and
# several at once only starve the event loop that answers /ping. One at a time per worker.
_ONE_REQUEST_AT_A_TIME = threading.Lock()
_KNOWN = frozenset(columns.RAW_COLUMNS)


class RefusedRequest(Exception):
    """A request the server answers with ``status`` and a message holding no request value."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> str:
        """The JSON error body, shaped like MLflow's own errors."""
        return json.dumps({"error_code": self.error_code, "message": self.message})


def _bad_request(message: str) -> RefusedRequest:
    return RefusedRequest(400, "BAD_REQUEST", message)


def max_body_bytes() -> int:
    """Largest accepted request body: ``HEALTH_PREDICT_MAX_BODY_BYTES``, else 16 MiB."""
    return int(os.environ.get(MAX_BODY_BYTES_ENV) or DEFAULT_MAX_BODY_BYTES)


def _media_type(content_type: str | None) -> str:
    """The media type of ``content_type``, refusing what the server does not read (415)."""
    if not content_type:
        raise RefusedRequest(
            415, "UNSUPPORTED_MEDIA_TYPE", "Missing Content-Type header: send application/json."
        )
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    charset_ok = all(p in ("charset=utf-8", 'charset="utf-8"') for p in parameters if p)
    if media_type not in CONTENT_TYPES or not charset_ok:
        raise RefusedRequest(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Content-Type must be application/json or text/csv (UTF-8); "
            "parquet and the other types MLflow knows are not served.",
        )
    return media_type


def _parse_int(digits: str) -> int:
    """A JSON integer; one too long for a 64-bit count (or for a float) is a 400, not a 500."""
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _bad_request(
            f"The request body holds a number too long to read (over {MAX_INTEGER_DIGITS} digits)."
        )
    return int(digits)


def _load_json(data: bytes) -> Any:
    """The decoded body; malformed, too deeply nested or unreadable numbers are a 400."""
    parse_int = _parse_int if _LONG_DIGIT_RUN.search(data) else None
    try:
        return json.loads(data, parse_int=parse_int)
    except RefusedRequest:
        raise
    except UnicodeDecodeError:
        raise _bad_request("The request body is not UTF-8.") from None
    except json.JSONDecodeError as error:
        raise _bad_request(
            f"The request body is not valid JSON at line {error.lineno}, column {error.colno}."
        ) from None
    except RecursionError:
        raise _bad_request("The request body is nested too deeply to be a table.") from None
    except ValueError:  # an integer longer than Python's int_max_str_digits
        raise _bad_request("The request body holds a number too long to read.") from None


def _too_many_rows(limit: int) -> validation.InvalidModelInput:
    return validation.InvalidModelInput(
        [f"the batch has more than {limit} rows ({validation.MAX_BATCH_ROWS_ENV})"]
    )


def _brackets_outside_strings(data: bytes) -> bytes:
    """The ``{}[]`` of a JSON body in order, those inside strings left out (C-speed byte passes:
    escapes dropped, everything but quotes and brackets deleted, then quoted spans masked)."""
    kept = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    if b'"' not in kept:
        return kept
    codes = np.frombuffer(kept, dtype=np.uint8)
    quotes = codes == ord('"')
    outside = (np.cumsum(quotes, dtype=np.uint8) & 1) == 0  # parity survives the uint8 wrap
    return codes[outside & ~quotes].tobytes()


def _prescan_json(data: bytes, limit: int | None) -> None:
    """Refuse, before any object is built, JSON nested deeper than a table or holding more than
    ``limit`` rows: strings dropped, only brackets kept, innermost empty pairs removed a level
    at a time. The first level removes every row (a leaf) and at most ``_NON_ROW_LEAVES``
    others, so a count above ``limit + _NON_ROW_LEAVES`` is over the limit for sure (the exact
    count is checked on the parsed frame). Malformed bodies are left to the JSON parser."""
    brackets = _brackets_outside_strings(data)
    for level in range(1, MAX_JSON_DEPTH + 2):
        if not brackets:
            return
        removed = brackets.count(b"{}") + brackets.count(b"[]")
        # Both pairs marked first, then dropped: one nesting level per pass, never two.
        brackets = brackets.replace(b"{}", b"\0\0").replace(b"[]", b"\0\0").replace(b"\0", b"")
        if level == 1 and limit is not None and removed > limit + _NON_ROW_LEAVES:
            raise _too_many_rows(limit)
        if removed and level > MAX_JSON_DEPTH:
            raise _bad_request("The request body is nested too deeply to be a table.")
        if not removed:
            return


def _prescan_csv(data: bytes, limit: int | None) -> None:
    """Refuse a CSV body with more than ``limit`` lines after its header before reading it."""
    if limit is not None and data.count(b"\n") - data.endswith(b"\n") > limit:
        raise _too_many_rows(limit)


def _records_frame(records: Any) -> pd.DataFrame:
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _bad_request("dataframe_records must be a list of objects, one per encounter.")
    if not records:
        return pd.DataFrame()
    # A column absent from every record is reported by validation; from some records, here
    # (counted only when the key sets differ: one C-speed comparison per record otherwise).
    keys = records[0].keys()
    if any(record.keys() != keys for record in records):
        partly_absent = {
            name: count
            for name in columns.INPUT_COLUMNS
            if 0 < (count := sum(1 for record in records if name not in record)) < len(records)
        }
        if partly_absent:
            raise validation.InvalidModelInput(
                [
                    f"column '{name}' is missing from {count} of {len(records)} records"
                    for name, count in partly_absent.items()
                ]
            )
    return pd.DataFrame.from_records(records)


def _split_frame(split: Any) -> pd.DataFrame:
    if (
        not isinstance(split, dict)
        or "data" not in split
        or set(split) - {"columns", "data", "index"}
    ):
        raise _bad_request(
            "dataframe_split must be an object with 'columns', 'data' and optionally 'index'."
        )
    rows, names = split["data"], split.get("columns")
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad_request("dataframe_split 'data' must be a list of rows (lists).")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise _bad_request("dataframe_split 'columns' must be a list of column names.")
    if "index" in split and (
        not isinstance(split["index"], list) or len(split["index"]) != len(rows)
    ):
        raise _bad_request(
            f"dataframe_split 'index' must list one entry per row of 'data' ({len(rows)})."
        )
    if len(set(names)) != len(names):
        repeated = sorted(
            name for name, count in Counter(names).items() if count > 1 and name in _KNOWN
        )
        raise _bad_request(
            f"dataframe_split 'columns' lists a name more than once (known columns: {repeated})."
        )
    ragged = sum(1 for row in rows if len(row) != len(names))
    if ragged:
        raise _bad_request(
            f"dataframe_split: {ragged} of {len(rows)} rows do not have one value per column "
            f"({len(names)})."
        )
    return pd.DataFrame(rows, columns=names)


def _json_frame(data: bytes) -> tuple[pd.DataFrame, dict]:
    body = _load_json(data)
    keys = set(body) if isinstance(body, dict) else set()
    formats = [key for key in JSON_FORMATS if key in keys]
    if unsupported := sorted(keys & {"instances", "inputs"}):
        raise _bad_request(
            f"The '{unsupported[0]}' format is not served: send dataframe_records or "
            "dataframe_split."
        )
    if len(formats) != 1:
        raise _bad_request(
            "The body must be a JSON object with exactly one of the input fields "
            f"{list(JSON_FORMATS)}."
        )
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise _bad_request('params must be an object, e.g. {"reasons": 3}.')
    try:
        reasons.requested_reasons(params)
    except reasons.InvalidParams as invalid:
        raise _bad_request(str(invalid)) from None
    if formats[0] == "dataframe_records":
        return _records_frame(body["dataframe_records"]), params
    return _split_frame(body["dataframe_split"]), params


def read_request(data: bytes, content_type: str | None) -> tuple[pd.DataFrame, dict]:
    """The encounters of an ``/invocations`` body, validated, and its inference params (JSON
    only); raises :class:`RefusedRequest` or :class:`validation.InvalidModelInput` (both name
    problems, never values)."""
    media_type = _media_type(content_type)
    limit = validation.max_batch_rows()
    if media_type == "application/json":
        _prescan_json(data, limit)
        frame, params = _json_frame(data)
    else:
        _prescan_csv(data, limit)
        frame, params = validation.read_csv_input(io.BytesIO(data)), {}
    return validation.validate_model_input(frame), params


def invocations(data: bytes, content_type: str | None, model, input_schema=None):
    """Replacement for ``mlflow.pyfunc.scoring_server.invocations`` (same arguments and result)."""
    # lazy: mlflow.pyfunc.scoring_server takes ~10 s to import; only a scoring server needs it
    from mlflow.pyfunc import scoring_server

    def answer(status: int, body: str) -> Any:
        return scoring_server.InvocationsResponse(body, status, "application/json")

    try:
        with _ONE_REQUEST_AT_A_TIME:
            frame, params = read_request(data, content_type)
            # Validated above, params included: MLflow's own schema enforcement (which rebuilds
            # the frame column by column, about 2 ms a request) would only repeat it.
            k = reasons.requested_reasons(params)
            predictions = model.unwrap_python_model().predict_validated(frame, k)
    except RefusedRequest as refused:
        return answer(refused.status, refused.body())
    except reasons.InvalidParams as invalid:  # e.g. reasons asked of a random forest
        return answer(400, _bad_request(str(invalid)).body())
    except validation.InvalidModelInput as invalid:
        return answer(
            400, json.dumps({"error_code": invalid.error_code, "message": invalid.message})
        )
    except Exception as error:  # a valid request the model failed on
        _logger.error("the model failed on a validated request: %s", type(error).__name__)
        failed = RefusedRequest(500, "INTERNAL_ERROR", "The model failed on a valid request.")
        return answer(500, failed.body())
    return answer(200, predictions_json(predictions))


def predictions_json(predictions: pd.DataFrame) -> str:
    """The answer body, byte for byte MLflow's ``predictions_to_json`` (``{"predictions": [one
    object per row]}``, its numpy-aware encoder), encoded in one C-speed call: MLflow streams it
    through ``json.dump``, whose pure-Python encoder took ~25 ms for 1,000 rows with reasons."""
    # lazy: only a scoring server answers (its import takes ~10 s, see invocations)
    from mlflow.utils.proto_json_utils import NumpyEncoder

    records = predictions.to_dict(orient="records")
    return json.dumps({"predictions": records}, cls=NumpyEncoder)


Send = Callable[[dict], Awaitable[None]]


async def _respond(send: Send, refused: RefusedRequest) -> None:
    body = refused.body().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if refused.status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: only :data:`ROUTES`, and ``/invocations`` bodies up to a size limit.

    A ``Content-Length`` over the limit is refused (413) before any of the body is read; a body
    without one is read up to the limit and refused as soon as it goes over.
    """

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        methods = ROUTES.get(scope["path"])
        if methods is None:
            message = "Use /ping, /health, /version or POST /invocations."
            return await _respond(send, RefusedRequest(404, "ENDPOINT_NOT_FOUND", message))
        if scope["method"] not in methods:
            message = f"{scope['path']} answers {' and '.join(sorted(methods))} only."
            return await _respond(send, RefusedRequest(405, "METHOD_NOT_ALLOWED", message))
        if scope["path"] != "/invocations":
            return await self.app(scope, receive, send)
        too_large = RefusedRequest(
            413,
            "REQUEST_TOO_LARGE",
            f"The request body is larger than {self.max_body_bytes} bytes ({MAX_BODY_BYTES_ENV}).",
        )
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _respond(send, too_large)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await _respond(send, too_large)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)


def install() -> None:
    """Inside a scoring-server process (and only there), route ``/invocations`` through
    :func:`invocations` and put :class:`RequestGuard` in front of the app. Idempotent.

    Runs from the model's ``load_context``, while ``scoring_server.app`` is being imported and
    before ``scoring_server.init`` has built the FastAPI app (too late to wrap ``init`` itself:
    the call already holds it), so the guard goes in when the app builds its middleware stack
    on the first request; the server process holds no other FastAPI app.
    """
    if "mlflow.pyfunc.scoring_server.app" not in sys.modules:
        return
    # lazy: already loaded by the scoring server (checked above); a top-level import costs ~10 s
    from fastapi import FastAPI
    from mlflow.pyfunc import scoring_server

    if getattr(scoring_server, "_health_predict_guarded", False):
        return
    build_middleware_stack = FastAPI.build_middleware_stack

    def guarded_middleware_stack(app: FastAPI):
        return RequestGuard(build_middleware_stack(app), max_body_bytes=max_body_bytes())

    scoring_server.invocations = invocations
    FastAPI.build_middleware_stack = guarded_middleware_stack
    scoring_server._health_predict_guarded = True
