"""The scoring server's row and nesting limits hold before any frame is built: bodies near the
16 MiB body limit holding millions of empty rows are refused from a scan of their bytes, in
memory a small multiple of the body (in-process ``serving.read_request``, no server needed)."""

from __future__ import annotations

import tracemalloc

import pytest

from custom_pyfunc import serving, validation

LIMIT = 10_000
ROOM = serving.DEFAULT_MAX_BODY_BYTES - 64


@pytest.fixture(autouse=True)
def row_limit(monkeypatch):
    monkeypatch.setenv(validation.MAX_BATCH_ROWS_ENV, str(LIMIT))


def refusal(body: bytes, content_type: str = "application/json") -> tuple[Exception, int]:
    """The exception ``read_request`` raises and the peak memory it allocated (bytes)."""
    tracemalloc.start()
    try:
        with pytest.raises((serving.RefusedRequest, validation.InvalidModelInput)) as refused:
            serving.read_request(body, content_type)
        return refused.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_records": [' + b",".join([b"{}"] * (ROOM // 3)) + b"]}",
        b'{"dataframe_split": {"columns": [], "data": ['
        + b",".join([b"[]"] * (ROOM // 3))
        + b"]}}",
        b'{"dataframe_records": [' + b",".join([b'{"race": null}'] * (ROOM // 15)) + b"]}",
    ],
    ids=["empty records", "empty split rows", "sparse records"],
)
def test_millions_of_rows_are_refused_before_parsing(body: bytes):
    error, peak = refusal(body)
    assert f"more than {LIMIT} rows" in str(error)
    # Parsing first built one Python object per row: over 500 MB for these bodies.
    assert peak < 4 * len(body), f"{peak / 2**20:.0f} MiB allocated for a {len(body)} byte body"


def test_csv_with_more_lines_than_the_limit_is_refused_before_reading():
    body = b"race,gender\n" + b"Caucasian,Female\n" * (LIMIT + 1)
    error, peak = refusal(body, "text/csv")
    assert f"more than {LIMIT} rows" in str(error)
    assert peak < 4 * len(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_records": [{"race": [[["x"]]]}]}',
        b'{"dataframe_split": {"columns": ["race"], "data": [[{"a": ["x"]}]]}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_json_deeper_than_a_table_is_refused(body: bytes):
    error, _ = refusal(body)
    assert "nested too deeply" in str(error)


def test_brackets_inside_strings_and_rows_within_the_limit_pass_the_scan():
    serving._prescan_json(b'{"dataframe_records": [{"race": "[[[[{{{{"}]}', LIMIT)
    rows = b",".join([b'["x"]'] * LIMIT)
    serving._prescan_json(
        b'{"dataframe_split": {"columns": ["race"], "data": [' + rows + b"]}}", LIMIT
    )
