"""The serving image, measured side by side with the same model on ``mlflow models serve`` and
with the image the same model got when it declared full ``mlflow``.

Image build time cold (no layer cache; ``--cold-base`` also rebuilds the debootstrapped base) and
warm (nothing changed), image size, cold start of the container to the first 200 from
``/invocations`` (median of ``--repeats`` starts, alternating with the full-``mlflow`` image),
single-row p50/p99 through the container (nginx in front of 2 workers) against the same model on
``mlflow models serve`` on the host (2 workers), and rows/s at concurrency 1 and 8 on both. Ends
with one JSON line; the goals are a container/host p50 ratio <= 1.3 and an image <= 700 MB.

The full-``mlflow`` image is the former declaration of the same model: a copy whose
requirements.txt names ``mlflow`` and only the direct requirements (MLflow's own install steps
then resolve the rest, as for every model logged before custom_pyfunc/requirements.py).

    python -m benchmarks.container [--model-uri models:/health-predict@champion] [--cold-base]
        [--repeats 3] [--size-and-start-only]

Rows are real encounters from the data store's ``future_data.csv`` (run ``make demo`` first); they
go over loopback only and are never printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import requests
from packaging.requirements import Requirement

from benchmarks.serving import encounter_records, percentiles_ms
from custom_pyfunc import requirements
from steps.core import config
from steps.deployment import docker_run, images, model_image, server

SINGLE_ROW_REQUESTS = 300
WARMUP_REQUESTS = 20
THROUGHPUT_REQUESTS = 400
IMAGE_GOAL_MB = 700
# The libraries a fitted family adds to a model's direct requirements.
FAMILY_LIBRARIES = ("catboost", "lightgbm", "xgboost")


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


def cold_start_to_first_answer(image: str, record: dict) -> float:
    """Seconds from ``docker run`` to the first 200 from /invocations for one encounter."""
    client = images.engine()
    port = server.free_port()
    body = {"dataframe_records": [record]}
    started = time.perf_counter()
    container = client.containers.run(
        image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True,
        tmpfs={"/tmp": "rw,size=256m,mode=1777"},
    )  # fmt: skip
    try:
        while time.perf_counter() - started < 300:
            try:
                url = f"http://127.0.0.1:{port}/invocations"
                if requests.post(url, json=body, timeout=10).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("the container did not answer /invocations within 300 s")
    finally:
        container.remove(force=True)


def full_mlflow_variant(model_uri: str, folder: Path) -> Path:
    """A copy of the model whose requirements.txt declares what models declared before
    custom_pyfunc/requirements.py: full ``mlflow`` and the direct requirements only."""
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder)))
    logged = (model_dir / "requirements.txt").read_text().split()
    direct = (*requirements.SERVING_DISTRIBUTIONS[1:], *FAMILY_LIBRARIES)
    former = [f"mlflow=={mlflow.__version__}"]
    former += [pin for pin in logged if Requirement(pin).name in direct]
    (model_dir / "requirements.txt").write_text("\n".join(former) + "\n")
    return model_dir


def compare_with_full_mlflow(built: model_image.ServingImage, repeats: int) -> dict:
    """Size and cold start of ``built`` beside the full-``mlflow`` image of the same model."""
    client = images.engine()
    with tempfile.TemporaryDirectory(prefix="full-mlflow-") as tmp:
        variant = full_mlflow_variant(built.model.uri, Path(tmp) / "model")
        full = model_image.build_serving_image(str(variant), Path(tmp) / "build")
    record = encounter_records(1)[0]
    starts: dict[str, list[float]] = {"full": [], "slim": []}
    for _ in range(repeats):
        for name, image in (("full", full.tag), ("slim", built.tag)):
            starts[name].append(cold_start_to_first_answer(image, record))
    results = {}
    for name, image in (("full", full.tag), ("slim", built.tag)):
        results[f"{name}_image_size_mb"] = round(client.images.get(image).attrs["Size"] / 1e6)
        results[f"{name}_cold_start_s"] = round(statistics.median(starts[name]), 1)
    results["size_ratio_slim_over_full"] = round(
        results["slim_image_size_mb"] / results["full_image_size_mb"], 2
    )
    results["cold_start_ratio_slim_over_full"] = round(
        results["slim_cold_start_s"] / results["full_cold_start_s"], 2
    )
    results[f"goal_image_le_{IMAGE_GOAL_MB}_mb"] = results["slim_image_size_mb"] <= IMAGE_GOAL_MB
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=config.CHAMPION_MODEL_URI)
    parser.add_argument("--cold-base", action="store_true", help="also rebuild the base image")
    parser.add_argument("--repeats", type=int, default=3, help="cold starts of each image")
    parser.add_argument(
        "--size-and-start-only", action="store_true",
        help="only image size and cold start beside the full-mlflow image (no build timings, "
        "no latency)",
    )  # fmt: skip
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

    built = model_image.build_serving_image(args.model_uri)
    if not args.size_and_start_only:
        client.images.remove(built.tag, force=True)
        started = time.perf_counter()
        built = model_image.build_serving_image(args.model_uri, nocache=True)
        results["build_cold_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        again = model_image.build_serving_image(args.model_uri)
        results["build_warm_s"] = round(time.perf_counter() - started, 1)
        assert again.id == built.id, "a warm build must not change the image"
    results["image"] = built.tag
    results |= compare_with_full_mlflow(built, args.repeats)
    if args.size_and_start_only:
        print(json.dumps(results))
        return results

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
