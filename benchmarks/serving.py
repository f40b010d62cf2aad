"""Serving latency and throughput, side by side in one run, 1 worker each.

(a) MLflow's scoring server hosting a trivial pyfunc with the champion's signature (the floor:
parsing, MLflow's schema enforcement and JSON output, no model), (b) the champion through the
scoring server, (c) the champion in-process (``PyFuncModel.predict`` on a prepared frame, which
includes MLflow's schema enforcement) and (d) the model's own ``predict`` in-process (validation,
features, estimator: the project's code without MLflow's enforcement); (b)-(d) each without and
with ``params={"reasons": 3}`` (docs/reasons.md). Reports single-row p50/p99 latency, rows/s
for 1,000-row batches and each server's peak RSS (VmHWM of its processes), then the ratios
against their goals side by side, and ends with one JSON line of every number and ratio
(``reasons_*_cost``: with reasons over without, as latency at one row and as time per row for
1,000-row batches).

    python -m benchmarks.serving [--model-uri models:/health-predict@champion]

The served code is the model's own copy of ``custom_pyfunc`` (logged with it): a model logged
before a change to that package is measured with its old code. Rows are real encounters from
the data store's ``future_data.csv`` (run ``make demo`` first); they are sent over loopback only
and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import requests
from mlflow.models import ModelSignature

from custom_pyfunc import columns, reasons, validation
from steps.core import config, storage
from steps.deployment import server

SINGLE_ROW_REQUESTS = 300
WARMUP_REQUESTS = 20
BATCH_ROWS = 1_000
BATCH_REQUESTS = 10
BENCHMARK_REASONS = 3


class FloorModel(mlflow.pyfunc.PythonModel):
    """Answers every row with a constant: what serving costs without any model work."""

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"prediction": np.zeros(len(model_input), dtype="int64"),
                             "probability_score": np.zeros(len(model_input))})  # fmt: skip


def encounter_records(n_rows: int) -> list[dict]:
    """The first ``n_rows`` future encounters as JSON-ready records (label dropped)."""
    uri = storage.join(config.data_uri(), config.FUTURE_DATA_KEY)
    frame = columns.read_encounters_csv(storage.read_bytes(uri)).head(n_rows)
    frame = frame.drop(columns=[columns.LABEL_COLUMN])
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


def percentiles_ms(seconds: list[float]) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def server_peak_rss_mb(port: int) -> float:
    """Peak resident memory (VmHWM) of the process listening on ``port`` and its children."""
    (pid,) = {
        c.pid for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    }  # fmt: skip
    server = psutil.Process(pid)
    return sum(peak_rss_mb(process.pid) for process in (server, *server.children(recursive=True)))


def peak_rss_mb(pid: int | str = "self") -> float:
    """Peak resident memory (VmHWM) of one process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
        / 1024
    )


def _server_numbers(http: requests.Session, url: str, rows: list[dict], params: dict) -> dict:
    """Single-row latencies and 1,000-row batch throughput of one running server."""
    extra = {"params": params} if params else {}
    singles = [
        json.dumps({"dataframe_records": [row], **extra}) for row in rows[:SINGLE_ROW_REQUESTS]
    ]
    batches = [
        json.dumps({"dataframe_records": rows[i * BATCH_ROWS % len(rows) :][:BATCH_ROWS], **extra})
        for i in range(BATCH_REQUESTS)
    ]
    headers = {"Content-Type": "application/json"}
    for body in singles[:WARMUP_REQUESTS] + batches[:1]:
        http.post(url, data=body, headers=headers).raise_for_status()
    latencies = []
    for body in singles:
        start = time.perf_counter()
        http.post(url, data=body, headers=headers).raise_for_status()
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for body in batches:
        http.post(url, data=body, headers=headers).raise_for_status()
    batch_seconds = time.perf_counter() - start
    p50, p99 = percentiles_ms(latencies)
    return {"p50_ms": p50, "p99_ms": p99, "rows_per_s": BATCH_REQUESTS * BATCH_ROWS / batch_seconds}


def measure_server(model_uri: str, rows: list[dict], variants: dict[str, dict]) -> dict:
    """Per variant (name -> inference params), :func:`_server_numbers` of one served model, one
    after the other on the same server; and the server's peak RSS after all of them."""
    with server.serve_model(model_uri, workers=1) as base_url, requests.Session() as http:
        url = f"{base_url}/invocations"
        results = {name: _server_numbers(http, url, rows, p) for name, p in variants.items()}
        peak_rss = server_peak_rss_mb(int(base_url.rsplit(":", 1)[1]))
    for numbers in results.values():
        numbers["peak_rss_mb"] = peak_rss
    return results


def _local_numbers(predict, rows: list[dict], params: dict) -> dict:
    """Single-row latencies and 1,000-row throughput of ``predict(frame, params)``."""
    singles = [pd.DataFrame([row]) for row in rows[:SINGLE_ROW_REQUESTS]]
    batch = pd.DataFrame(rows[:BATCH_ROWS])
    for frame in singles[:WARMUP_REQUESTS]:
        predict(frame, params or None)
    latencies = []
    for frame in singles:
        start = time.perf_counter()
        predict(frame, params or None)
        latencies.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(BATCH_REQUESTS):
        predict(batch, params or None)
    batch_seconds = time.perf_counter() - start
    p50, p99 = percentiles_ms(latencies)
    return {"p50_ms": p50, "p99_ms": p99, "rows_per_s": BATCH_REQUESTS * BATCH_ROWS / batch_seconds}


def measure_in_process(model_uri: str, rows: list[dict], variants: dict[str, dict]) -> dict:
    """The same measurements in this process, per variant: ``PyFuncModel.predict`` (under the
    variant's name) and the model's own ``predict`` (``_model`` appended)."""
    model = mlflow.pyfunc.load_model(model_uri)
    own = model.unwrap_python_model()
    results = {}
    for name, params in variants.items():
        results[name] = _local_numbers(lambda f, p: model.predict(f, params=p), rows, params)
        results[f"{name}_model"] = _local_numbers(
            lambda f, p: own.predict(None, f, p), rows, params
        )
    return results


def ratios(floor: dict, served: dict, local: dict) -> dict:
    """The ratios the goals are stated in (README, "What to expect at a hospital group's
    volume"): server against the floor and against in-process, reasons against none."""
    summary = {
        "server_p50_over_floor": served[""]["p50_ms"] / floor["p50_ms"],
        "server_rows_per_s_over_in_process": served[""]["rows_per_s"] / local[""]["rows_per_s"],
    }
    for where, numbers in (("server", served), ("in_process", local)):
        summary[f"reasons_{where}_p50_cost"] = numbers["_reasons"]["p50_ms"] / numbers[""]["p50_ms"]
        summary[f"reasons_{where}_batch_cost"] = (
            numbers[""]["rows_per_s"] / numbers["_reasons"]["rows_per_s"]
        )
    return {name: round(value, 2) for name, value in summary.items()}


GOALS = {
    "in-process 1-row p50 (model's own predict)": ("model_p50_ms", "ms", "<=", 3.0),
    "server 1-row p50 / trivial-model floor": ("server_p50_over_floor", "x", "<=", 1.15),
    "server 1k rows/s / in-process": ("server_rows_per_s_over_in_process", "x", ">=", 0.6),
    "reasons=3 cost, server 1 row": ("reasons_server_p50_cost", "x", "<=", 2.0),
    "reasons=3 cost, server 1k rows": ("reasons_server_batch_cost", "x", "<=", 3.0),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=config.CHAMPION_MODEL_URI)
    args = parser.parse_args(argv)
    config.configure_mlflow()
    rows = encounter_records(max(BATCH_ROWS, SINGLE_ROW_REQUESTS))
    with tempfile.TemporaryDirectory() as tmp:
        floor_uri = str(Path(tmp) / "floor_model")
        signature = ModelSignature(inputs=validation.input_schema())
        mlflow.pyfunc.save_model(floor_uri, python_model=FloorModel(), signature=signature)
        (floor,) = measure_server(floor_uri, rows, {"floor_server": {}}).values()
        variants = {"": {}, "_reasons": {reasons.PARAM: BENCHMARK_REASONS}}
        served = measure_server(args.model_uri, rows, variants)
        local = measure_in_process(args.model_uri, rows, variants)
    results = {
        "floor_server": floor,
        **{f"champion_server{name}": served[name] for name in variants},
        **{f"champion_in_process{name}": numbers for name, numbers in local.items()},
    }
    for name, numbers in results.items():
        print(f"{name:>36}: " + ", ".join(f"{k}={v:.1f}" for k, v in numbers.items()))
    summary = ratios(floor, served, local)
    summary["model_p50_ms"] = round(local["_model"]["p50_ms"], 2)
    print(f"in-process 1-row p50: PyFuncModel.predict {local['']['p50_ms']:.2f} ms, the model's "
          f"own predict {local['_model']['p50_ms']:.2f} ms; 1k rows: {local['']['rows_per_s']:.0f} "
          f"and {local['_model']['rows_per_s']:.0f} rows/s")  # fmt: skip
    for label, (key, unit, sense, goal) in GOALS.items():
        met = summary[key] <= goal if sense == "<=" else summary[key] >= goal
        print(f"{label:>44}: {summary[key]:.2f} {unit} (goal {sense} {goal}: "
              f"{'met' if met else 'missed'})")  # fmt: skip
        summary[f"goal_{key}"] = met
    summary["load_average_1min"] = round(os.getloadavg()[0], 1)
    print(json.dumps({**summary, **{
        f"{name}_{k}": round(v, 2) for name, numbers in results.items() for k, v in numbers.items()
    }}))  # fmt: skip


if __name__ == "__main__":
    main()
