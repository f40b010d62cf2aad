"""Soak the scoring server: mixed valid and bad traffic at concurrency 8 against 2 workers.

``python -m benchmarks.soak [--model-uri URI] [--duration-s 600]`` serves the model (default: the
champion) with ``mlflow models serve -w 2`` on a loopback port, sends a bounded number of requests
for a bounded time (valid dataframe_records / dataframe_split / CSV batches, the hostile
requests of tests/api and two bodies near the 16 MiB limit holding millions of empty rows), pings
``/ping`` every 100 ms on the side, samples the workers' RSS every second, and prints one JSON
line: 5xx count, dropped connections, worker RSS growth from the first to the last minute,
``/ping`` p99. ``tests/api/test_soak.py`` runs the same function for 2 minutes, without the two
16 MiB bodies (``tests/api/test_row_prescan.py`` holds their cost).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import psutil
import requests

from custom_pyfunc import columns, serving
from steps.deployment import server

CONCURRENCY = 8
WORKERS = 2
MAX_REQUESTS = 200_000  # an upper bound besides the duration


@dataclass
class SoakResult:
    """What a soak measured (seconds, counts, bytes, ratios)."""

    duration_s: float
    requests: int
    ok: int
    client_errors: int
    server_errors: int
    dropped_connections: int
    ping_count: int
    ping_p99_ms: float
    ping_max_ms: float
    worker_rss_first_minute_mb: float
    worker_rss_last_minute_mb: float
    worker_rss_growth: float


def _requests(records: list[dict], oversized: bool) -> list[tuple[bytes, str, bool]]:
    """(body, Content-Type, valid?) cycled through by the load threads."""
    names = list(records[0])

    def split(rows: list[dict]) -> dict:
        return {
            "dataframe_split": {"columns": names, "data": [[r[n] for n in names] for r in rows]}
        }

    one = records[0]
    valid = [
        (json.dumps({"dataframe_records": records[:1]}), "application/json"),
        (json.dumps({"dataframe_records": records[:50]}), "application/json"),
        (json.dumps(split(records[:20])), "application/json"),
        (columns.to_raw_csv_bytes(pd.DataFrame(records[:10])), "text/csv"),
    ]
    bad = [
        ('{"dataframe_records": [{"race": "x",}]}', "application/json"),
        ("[" * 10_000 + "]" * 10_000, "application/json"),
        (
            json.dumps({"dataframe_records": [{**one, "num_medications": 10**4000}]}),
            "application/json",
        ),
        (json.dumps({"instances": records[:5]}), "application/json"),
        (json.dumps({"dataframe_records": [{**one, "gender": None}]}), "application/json"),
        (json.dumps({"dataframe_records": records[:5]}), "application/vnd.apache.parquet"),
        ("race,diag_1\nCaucasian,428\nx,y,z,w\n", "text/csv"),
    ]
    encoded = [(b if isinstance(b, bytes) else b.encode(), t, True) for b, t in valid]
    encoded += [(b.encode(), t, False) for b, t in bad]
    if not oversized:
        return encoded
    # Near the body limit and far over the row limit: empty records and empty split rows,
    # refused before a frame (or a Python object per row) is built.
    room = serving.DEFAULT_MAX_BODY_BYTES - 64
    empty_records = b'{"dataframe_records": [' + b",".join([b"{}"] * (room // 3)) + b"]}"
    empty_rows = (
        b'{"dataframe_split": {"columns": [], "data": [' + b",".join([b"[]"] * (room // 3)) + b"]}}"
    )
    encoded += [(empty_records, "application/json", False), (empty_rows, "application/json", False)]
    return encoded


def _listening_processes(base_url: str) -> list[psutil.Process]:
    """The uvicorn workers serving ``base_url`` (the processes holding its listening socket,
    minus the supervisor that started them)."""
    port = urlsplit(base_url).port
    holders = []
    for process in psutil.process_iter():
        try:
            if any(
                c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                for c in process.net_connections(kind="tcp")
            ):
                holders.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    pids = {p.pid for p in holders}
    return [p for p in holders if not any(c.pid in pids for c in p.children())] or holders


def soak(
    base_url: str, records: list[dict], duration_s: float, oversized: bool = False
) -> SoakResult:
    """Drive ``base_url`` for ``duration_s`` seconds and measure (see the module docstring);
    ``oversized`` adds the two 16 MiB bodies (each holds a worker for about a second, so the
    ping latency then measures them, not the server's health)."""
    catalogue = _requests(records, oversized)
    workers = _listening_processes(base_url)
    stop_at = time.monotonic() + duration_s
    counts = {"requests": 0, "ok": 0, "client": 0, "server": 0, "dropped": 0}
    lock = threading.Lock()
    ping_ms: list[float] = []
    rss: list[tuple[float, int]] = []
    started = time.monotonic()

    def load(thread: int) -> None:
        session = requests.Session()
        i = thread
        while time.monotonic() < stop_at and counts["requests"] < MAX_REQUESTS:
            body, content_type, _ = catalogue[i % len(catalogue)]
            i += CONCURRENCY
            try:
                response = session.post(
                    f"{base_url}/invocations",
                    data=body,
                    headers={"Content-Type": content_type},
                    timeout=60,
                )
                key = "ok" if response.ok else "server" if response.status_code >= 500 else "client"
            except requests.RequestException:
                key = "dropped"
                session = requests.Session()
            with lock:
                counts["requests"] += 1
                counts[key] += 1

    def ping() -> None:
        session = requests.Session()
        while time.monotonic() < stop_at:
            sent = time.perf_counter()
            try:
                ok = session.get(f"{base_url}/ping", timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            ping_ms.append((time.perf_counter() - sent) * 1000 if ok else float("inf"))
            time.sleep(0.1)

    def sample() -> None:
        while time.monotonic() < stop_at:
            total = 0
            for process in workers:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
            rss.append((time.monotonic() - started, total))
            time.sleep(1.0)

    side = [threading.Thread(target=ping), threading.Thread(target=sample)]
    for thread in side:
        thread.start()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(load, range(CONCURRENCY)))
    for thread in side:
        thread.join()
    elapsed = time.monotonic() - started
    window = min(60.0, elapsed / 2)
    first = max(b for t, b in rss if t <= window)
    last = max(b for t, b in rss if t >= elapsed - window)
    return SoakResult(
        duration_s=round(elapsed, 1),
        requests=counts["requests"],
        ok=counts["ok"],
        client_errors=counts["client"],
        server_errors=counts["server"],
        dropped_connections=counts["dropped"],
        ping_count=len(ping_ms),
        ping_p99_ms=round(float(np.percentile(ping_ms, 99)), 1),
        ping_max_ms=round(max(ping_ms), 1),
        worker_rss_first_minute_mb=round(first / 2**20, 1),
        worker_rss_last_minute_mb=round(last / 2**20, 1),
        worker_rss_growth=round(last / first - 1, 4),
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the model with 2 workers, soak it, print the figures as one JSON line."""
    from steps.core import config
    from tests.fixtures_data import synthetic_encounters

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default="")
    parser.add_argument("--duration-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    model_uri = args.model_uri or config.CHAMPION_MODEL_URI
    frame = synthetic_encounters(200, seed=5).drop(columns=[columns.LABEL_COLUMN])
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    with server.serve_model(model_uri, workers=WORKERS) as base_url:
        result = soak(base_url, records, args.duration_s, oversized=True)
    print(json.dumps({"benchmark": "soak", "concurrency": CONCURRENCY, "workers": WORKERS,
                      **asdict(result)}))  # fmt: skip


if __name__ == "__main__":
    main()
