"""The serving image, measured side by side with the same model on ``mlflow models serve``.

Image build time cold (no layer cache; ``--cold-base`` also rebuilds the debootstrapped base) and
warm (nothing changed), image size, cold start of the container to the first 200 on ``/ping``,
single-row p50/p99 through the container (nginx in front of 2 workers) against the same model on
``mlflow models serve`` on the host (2 workers), and rows/s at concurrency 1 and 8 on both. Ends
with one JSON line; the goal is a container/host p50 ratio <= 1.3.

    python -m benchmarks.container [--model-uri models:/health-predict@champion] [--cold-base]

Rows are real encounters from the data store's ``future_data.csv`` (run ``make demo`` first); they
go over loopback only and are never printed.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks.serving import encounter_records, percentiles_ms
from steps.core import config
from steps.deployment import docker_run, images, model_image, server

SINGLE_ROW_REQUESTS = 300
WARMUP_REQUESTS = 20
THROUGHPUT_REQUESTS = 400


def single_row_latency(base_url: str, records: list[dict]) -> tuple[float, float]:
    """p50 and p99 in ms of one-row requests sent one after another (after a warm-up)."""
    session = requests.Session()
    url = f"{base_url}/invocations"
    for record in records[:WARMUP_REQUESTS]:
        session.post(url, json={"dataframe_records": [record]}, timeout=30).raise_for_status()
    seconds = []
    for i in range(SINGLE_ROW_REQUESTS):
        body = {"dataframe_records": [records[i % len(records)]]}
        started = time.perf_counter()
        session.post(url, json=body, timeout=30).raise_for_status()
        seconds.append(time.perf_counter() - started)
    return percentiles_ms(seconds)


def throughput(base_url: str, records: list[dict], concurrency: int) -> float:
    """Single-row requests per second with ``concurrency`` clients, each on its own session."""
    url = f"{base_url}/invocations"

    def client(offset: int) -> None:
        session = requests.Session()
        for i in range(offset, THROUGHPUT_REQUESTS, concurrency):
            body = {"dataframe_records": [records[i % len(records)]]}
            session.post(url, json=body, timeout=60).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    return THROUGHPUT_REQUESTS / (time.perf_counter() - started)


def cold_start_to_first_ping(image: str) -> float:
    """Seconds from ``docker run`` to the first 200 on /ping (health status not awaited)."""
    client = images.engine()
    port = server.free_port()
    started = time.perf_counter()
    container = client.containers.run(
        image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True,
        tmpfs={"/tmp": "rw,size=256m,mode=1777"},
    )  # fmt: skip
    try:
        while time.perf_counter() - started < 300:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the container did not answer /ping within 300 s")
    finally:
        container.remove(force=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=config.CHAMPION_MODEL_URI)
    parser.add_argument("--cold-base", action="store_true", help="also rebuild the base image")
    args = parser.parse_args(argv)
    client = images.engine()
    results: dict = {}

    if args.cold_base:
        local = images.local_base_tag()
        if images.image_exists(client, local):
            client.images.remove(local, force=True)
        started = time.perf_counter()
        images.build_local_base(client)
        results["base_build_s"] = round(time.perf_counter() - started, 1)

    first = model_image.build_serving_image(args.model_uri)
    client.images.remove(first.tag, force=True)
    started = time.perf_counter()
    built = model_image.build_serving_image(args.model_uri, nocache=True)
    results["build_cold_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    again = model_image.build_serving_image(args.model_uri)
    results["build_warm_s"] = round(time.perf_counter() - started, 1)
    assert again.id == built.id, "a warm build must not change the image"
    results["image"] = built.tag
    results["image_size_mb"] = round(client.images.get(built.tag).attrs["Size"] / 1e6)
    results["cold_start_to_first_ping_s"] = round(cold_start_to_first_ping(built.tag), 1)

    records = encounter_records(500)
    container, container_url = docker_run.run_container(built.tag)
    try:
        p50, p99 = single_row_latency(container_url, records)
        results |= {"container_p50_ms": round(p50, 1), "container_p99_ms": round(p99, 1)}
        for concurrency in (1, 8):
            rate = throughput(container_url, records, concurrency)
            results[f"container_rps_c{concurrency}"] = round(rate, 1)
    finally:
        container.remove(force=True)
    with server.serve_model(built.model.uri, workers=2) as host_url:
        p50, p99 = single_row_latency(host_url, records)
        results |= {"host_p50_ms": round(p50, 1), "host_p99_ms": round(p99, 1)}
        for concurrency in (1, 8):
            results[f"host_rps_c{concurrency}"] = round(
                throughput(host_url, records, concurrency), 1
            )
    results["p50_ratio_container_over_host"] = round(
        results["container_p50_ms"] / results["host_p50_ms"], 2
    )
    results["goal_p50_ratio_le_1_3"] = bool(results["p50_ratio_container_over_host"] <= 1.3)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
