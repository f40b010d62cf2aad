"""How cost grows with work: seconds and peak RSS of each stage at several sizes, and the exponent.

Stages, each through the project's own code path:

- ``train``: ``steps.training.trainer.train`` (what the ``train`` entry point runs: Ray Tune
  search, refit, calibration, baselines, evaluation, MLflow logging) on 20k, 40k and 80k training
  rows, with the same fixed small search at every size (``--families``, default ``lightgbm``,
  ``--trials-per-family`` 2 trials), so the exponent reflects data size, not search budget.
  Validation and test are the real ``initial_validation`` and ``initial_test`` at every size.
- ``monitor``: ``steps.monitoring.assess.assess`` (what the ``monitor`` entry point runs before
  it publishes the reports) on batches of 5k, 20k and 80k rows against a recent window
  (``recent_uri``) of 20k and of 80k rows; baseline ``initial_test``; realised performance on the
  batch's own labels (the entry point's default without ``labelled_uri``). The score cache is
  emptied before each measurement: the loop's recent window is new at every batch, so its scores
  and column reliance are computed each time. Goal: an 80k-row batch under 30 s and 4 GB.
- ``score_in_process``: the pyfunc model's own ``predict`` (validation, features, estimator) on
  1, 100, 1k and 10k rows; ``score_server``: the same rows posted as ``dataframe_records`` to
  MLflow's scoring server (``steps.deployment.server.serve_model``, 1 worker; the largest request
  it accepts is 10k rows). Median of repeated calls after a warm-up. The exponent is fitted on 1k
  and 10k rows only: at 1 and 100 rows the fixed per-request cost dominates, and those are
  reported as latency.

Rows: training and monitoring inputs are resampled from the real data by patient (patient groups
of ``initial_train``, resp. ``future_data``, drawn with replacement until the row count is
reached; every drawn copy gets a new patient id and new encounter ids, above every real id, so
the patient-disjointness checks stay valid). Scoring uses the first rows of ``future_data``.
Monitoring and scoring use one model, trained once per work folder by the ``train`` entry point
with ``--model-families`` (default: ``train``'s own default families) and ``--model-trials``;
its best family's model is the one measured.

Each measurement runs in its own subprocess and times the work only (not imports nor reading the
inputs). ``peak RSS MB`` is the VmHWM (MiB) of the process doing the work, reset just before it
(``/proc/self/clear_refs``): the subprocess itself, or for ``score_server`` the scoring server's
processes (since their start, model load included). ``tree MB`` is the peak of the subprocess's
whole process tree (Ray's processes, the scoring server), sampled every 0.2 s. Prints one table,
the fitted growth exponent per stage (slope of log seconds on log size, ``numpy.polyfit``; for
``monitor`` per window size, and over the window's size at the largest batch) against the goal
"no exponent above 1.1", beside it the slope between the two largest sizes alone (a fixed cost
flattens the fit over all sizes), the monitoring goal, and ONE final JSON line of every number.

    python -m benchmarks.scaling --work-dir DIR [--quick] [--stages train,monitor,score]

``--work-dir`` keeps the stores (ingest and split run there when absent, as
``benchmarks/replay.py`` does: ``HEALTH_PREDICT_RAW_DATA`` names the dataset), the resampled
files, the model and each measurement's log (``scaling/logs/``); a second run reuses them.
``--quick`` runs the smallest size of each stage only (a smoke check; no exponent).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The project root, so that this file runs as a script and as ``python -m benchmarks.scaling``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.replay import prepare_stores

TRAIN_ROWS = (20_000, 40_000, 80_000)
BATCH_ROWS = (5_000, 20_000, 80_000)
REFERENCE_ROWS = (20_000, 80_000)
SCORE_ROWS = (1, 100, 1_000, 10_000)
# Scoring sizes where the work dominates the fixed per-request cost: the exponent's sizes.
SCORE_FIT_ROWS = (1_000, 10_000)
GOAL_EXPONENT = 1.1
GOAL_MONITOR_BATCH, GOAL_MONITOR_S, GOAL_MONITOR_MB = 80_000, 30.0, 4_096
SEED = 42
# New patient and encounter ids start above every real one (patient_nbr < 2e8, encounter_id <
# 5e8), one range per resampled file.
ID_BASE = 1_000_000_000
# Loaded by train on first use; imported before its clock starts.
TRAIN_IMPORTS = (
    "ray", "ray.tune", "ray.tune.search.basic_variant", "aiohttp", "boto3", "git", "tensorboardX",
    "matplotlib.pyplot", "narwhals",
)  # fmt: skip
# The untimed first monitoring call's batch and window (rows).
WARMUP_BATCH_ROWS, WARMUP_REFERENCE_ROWS = 2_000, 2_000
STAGE_LABELS = {
    "train": "train",
    "monitor": "monitor",
    "score_in_process": "score in-process",
    "score_server": "score server",
}


# ---- inputs: resampled by patient ----------------------------------------------------------


def resample_by_patient(frame, rows: int, seed: int, id_base: int):
    """``rows`` rows of ``frame``: whole patient groups drawn with replacement until the count is
    reached (the last one cut), every drawn copy under a new patient id and every row under a new
    encounter id, all from ``id_base`` up."""
    import numpy as np

    from steps.evaluation import patients

    groups = list(frame.groupby(patients.PATIENT_COLUMN, sort=False).indices.values())
    sizes = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(groups), int(rows / sizes.mean() * 1.2) + 10)
    while sizes[draws].sum() < rows:
        draws = np.concatenate([draws, rng.integers(0, len(groups), len(draws))])
    draws = draws[: int(np.searchsorted(np.cumsum(sizes[draws]), rows)) + 1]
    positions = np.concatenate([groups[i] for i in draws])[:rows]
    copy = np.repeat(np.arange(len(draws)), sizes[draws])[:rows]
    resampled = frame.iloc[positions].reset_index(drop=True)
    resampled[patients.PATIENT_COLUMN] = (id_base + copy).astype("int64")
    resampled["encounter_id"] = (id_base + np.arange(rows)).astype("int64")
    return resampled.astype({patients.PATIENT_COLUMN: "Int64", "encounter_id": "Int64"})


def prepare_inputs(plan: dict) -> dict[str, str]:
    """Write the resampled files once (same seed, same files); return their URIs by name:
    ``train_<rows>`` (a data-store root with the three initial splits), ``batch_<rows>`` and
    ``reference_<rows>`` (the monitor's warm-up batch and window included)."""
    from custom_pyfunc import columns
    from steps.core import config, storage

    root = config.data_uri()
    base = storage.join(root, "scaling")

    def read(key: str):
        return columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))

    def write(uri: str, make) -> str:
        if not storage.exists(uri):
            storage.write_bytes(uri, columns.to_raw_csv_bytes(make()))
        return uri

    # Each file's seed and id range follow from its place in the full plan, whatever is run.
    monitor_files = [
        *(("batch", rows) for rows in (*BATCH_ROWS, WARMUP_BATCH_ROWS)),
        *(("reference", rows) for rows in (*REFERENCE_ROWS, WARMUP_REFERENCE_ROWS)),
    ]
    uris, sources = {}, {}
    for rows in plan["train"]:
        split_root = storage.join(base, f"train_{rows}")
        for key in (config.INITIAL_VALIDATION_KEY, config.INITIAL_TEST_KEY):
            if not storage.exists(storage.join(split_root, key)):
                storage.write_bytes(
                    storage.join(split_root, key), storage.read_bytes(storage.join(root, key))
                )
        if "train" not in sources:
            sources["train"] = read(config.INITIAL_TRAIN_KEY)
        index = 1 + TRAIN_ROWS.index(rows)
        write(
            storage.join(split_root, config.INITIAL_TRAIN_KEY),
            lambda rows=rows, index=index: resample_by_patient(
                sources["train"], rows, SEED + index, ID_BASE * index
            ),
        )
        uris[f"train_{rows}"] = split_root
    wanted = {("batch", WARMUP_BATCH_ROWS), ("reference", WARMUP_REFERENCE_ROWS)}
    wanted |= {("batch", rows) for rows in plan["batch"]}
    wanted |= {("reference", rows) for rows in plan["reference"]}
    for role, rows in wanted:
        if "future" not in sources:
            sources["future"] = read(config.FUTURE_DATA_KEY)
        index = 1 + len(TRAIN_ROWS) + monitor_files.index((role, rows))
        uris[f"{role}_{rows}"] = write(
            storage.join(base, f"{role}_{rows}.csv"),
            lambda rows=rows, index=index: resample_by_patient(
                sources["future"], rows, SEED + index, ID_BASE * index
            ),
        )
    return uris


def monitored_model(families: str, trials: int) -> str:
    """The URI of the best family's model of one ``train`` entry-point run on the real initial
    split (run once per work folder and settings: the run key finds it again)."""
    import mlflow

    from steps.core import tracking

    run_key = f"scaling-model-{families.replace(',', '-')}-{trials}"
    run_id = tracking.run_entry_point(
        "train", {"families": families, "trials_per_family": trials}, run_key=run_key
    )
    best_run = mlflow.get_run(run_id).data.tags[tracking.BEST_RUN_TAG]
    return mlflow.get_run(best_run).data.tags[tracking.MODEL_URI_TAG]


# ---- one measurement, in its own subprocess -------------------------------------------------


def reset_peak_rss() -> None:
    """Make this process's VmHWM start again from its current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def imported_since(modules: set[str]) -> dict[str, int]:
    """Modules imported since ``modules`` was taken, counted per top-level package: what the
    timed work still loaded on first use."""
    counts: dict[str, int] = {}
    for name in set(sys.modules) - modules:
        counts[name.split(".")[0]] = counts.get(name.split(".")[0], 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def repeats(rows: int) -> int:
    """Timed calls per scoring size: many at one row, a few at 10k."""
    return max(5, min(200, 20_000 // rows))


def timed_median(call, count: int, warmup: int) -> float:
    """Median seconds of ``count`` calls of ``call`` after ``warmup`` untimed ones."""
    import numpy as np

    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def measure_train(spec: dict) -> dict:
    """``train`` on one size. What it imports on first use (Ray, the estimators' libraries, the
    MLflow store's migrations) is loaded before the clock starts; starting Ray is timed."""
    import mlflow

    from benchmarks.serving import peak_rss_mb
    from steps.core import config
    from steps.training import families
    from steps.training.trainer import train

    for name in TRAIN_IMPORTS:
        importlib.import_module(name)
    # The searched families' libraries, and the baselines' (one-hot logreg, XGBoost).
    for family in {*families.parse_families(spec["families"]), "logreg", "xgboost"}:
        families.build_estimator(family, {}, SEED, 1)
    config.configure_mlflow()
    mlflow.MlflowClient().search_experiments(max_results=1)
    modules = set(sys.modules)
    reset_peak_rss()
    started = time.perf_counter()
    run_id = train(
        data_uri=spec["uri"], families=spec["families"], trials_per_family=spec["trials"],
        seed=SEED,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    metrics = mlflow.get_run(run_id).data.metrics
    return {
        "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
        "hpo_wall_s": metrics.get("hpo_wall_s"), "run_id": run_id,
        "imported_while_timed": imported_since(modules),
    }  # fmt: skip


def measure_monitor(spec: dict) -> dict:
    """``assess`` on one batch and window, after an untimed ``assess`` of the small warm-up
    batch and window (other files: nothing of theirs is cached for the measured ones), which
    loads what the first call imports (Evidently's plotting) and the model."""
    from benchmarks.serving import peak_rss_mb
    from steps.monitoring import assess

    assess.assess(spec["warmup_uri"], recent_uri=spec["warmup_reference_uri"],
                  model_uri=spec["model_uri"])  # fmt: skip
    modules = set(sys.modules)
    reset_peak_rss()
    started = time.perf_counter()
    summary = assess.assess(spec["uri"], recent_uri=spec["reference_uri"],
                            model_uri=spec["model_uri"])  # fmt: skip
    return {
        "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
        "alerts": summary["alerts"],
        "imported_while_timed": imported_since(modules),
    }  # fmt: skip


def measure_score_in_process(spec: dict) -> dict:
    import mlflow
    import pandas as pd

    from benchmarks.serving import encounter_records, peak_rss_mb

    frame = pd.DataFrame(encounter_records(spec["size"]))
    own = mlflow.pyfunc.load_model(spec["model_uri"]).unwrap_python_model()
    reset_peak_rss()
    seconds = timed_median(lambda: own.predict(None, frame, None), repeats(spec["size"]), warmup=3)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def measure_score_server(spec: dict) -> dict:
    import requests

    from benchmarks.serving import encounter_records, peak_rss_mb, server_peak_rss_mb
    from steps.deployment import server

    body = json.dumps({"dataframe_records": encounter_records(spec["size"])})
    headers = {"Content-Type": "application/json"}
    with server.serve_model(spec["model_uri"], workers=1) as base_url, requests.Session() as http:
        url = f"{base_url}/invocations"

        def post() -> None:
            http.post(url, data=body, headers=headers).raise_for_status()

        reset_peak_rss()
        seconds = timed_median(post, repeats(spec["size"]), warmup=3)
        server_mb = server_peak_rss_mb(int(base_url.rsplit(":", 1)[1]))
    return {"seconds": seconds, "peak_rss_mb": server_mb, "client_peak_rss_mb": peak_rss_mb()}


MEASURES = {
    "train": measure_train,
    "monitor": measure_monitor,
    "score_in_process": measure_score_in_process,
    "score_server": measure_score_server,
}


def measure_here(spec: dict, result_path: str, profile_path: str = "") -> None:
    """Run one measurement in this process and write its numbers to ``result_path``."""
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(MEASURES[spec["stage"]], spec)
        profiler.dump_stats(profile_path)
    else:
        result = MEASURES[spec["stage"]](spec)
    Path(result_path).write_text(json.dumps(result))


def measure(work_dir: Path, spec: dict, profile: bool) -> dict:
    """Run one measurement in a subprocess (log in ``scaling/logs/``); return its numbers and the
    peak RSS of its process tree."""
    from benchmarks.training import wait_with_peak_rss
    from steps.core import config

    name = f"{spec['stage']}_{spec['size']}" + (
        f"_ref{spec['reference']}" if spec.get("reference") else ""
    )
    logs = work_dir / "scaling" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(suffix=".json") as result,
        open(logs / f"{name}.log", "w") as log,
    ):
        command = [
            sys.executable, "-m", "benchmarks.scaling", "--work-dir", str(work_dir),
            "--measure", json.dumps(spec), "--result", result.name,
        ]  # fmt: skip
        if profile:
            command += ["--profile-to", str(logs / f"{name}.prof")]
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=config.PROJECT_ROOT
        )
        _, tree_mb = wait_with_peak_rss(process)
        if process.returncode:
            tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
            raise SystemExit(f"{name} failed (exit {process.returncode}):\n" + "\n".join(tail))
        numbers = json.loads(Path(result.name).read_text())
    return {**spec, **numbers, "tree_mb": tree_mb}


# ---- the plan, the exponents and the report -------------------------------------------------


def plan_sizes(quick: bool) -> dict[str, tuple[int, ...]]:
    if quick:
        return {"train": TRAIN_ROWS[:1], "batch": BATCH_ROWS[:1],
                "reference": REFERENCE_ROWS[:1], "score": SCORE_ROWS[:2]}  # fmt: skip
    return {"train": TRAIN_ROWS, "batch": BATCH_ROWS, "reference": REFERENCE_ROWS,
            "score": SCORE_ROWS}  # fmt: skip


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(seconds) on log(size); None with fewer than two sizes."""
    import numpy as np

    if len({size for size, _ in points}) < 2:
        return None
    sizes, seconds = zip(*points, strict=True)
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def exponents(rows: list[dict]) -> dict[str, dict]:
    """Per stage (monitor: per window size, and over the window's size at the largest batch),
    the exponent and the sizes it was fitted on."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        stage = row["stage"]
        if stage == "monitor":
            stage = f"monitor_ref{row['reference']}"
        elif stage.startswith("score") and row["size"] not in SCORE_FIT_ROWS:
            continue
        series.setdefault(stage, []).append((row["size"], row["seconds"]))
    monitored = [row for row in rows if row["stage"] == "monitor"]
    if monitored:  # and over the window's size, at the largest batch
        largest = max(row["size"] for row in monitored)
        series[f"monitor_batch{largest}_over_ref"] = [
            (row["reference"], row["seconds"]) for row in monitored if row["size"] == largest
        ]
    result = {}
    for stage, points in series.items():
        value = growth_exponent(points)
        # A fixed cost flattens the fit over all sizes; the two largest show the growth nearest
        # to where the work dominates (reported beside it, not judged).
        top = growth_exponent(sorted(points)[-2:]) if len(points) > 2 else None
        result[stage] = {
            "sizes": sorted(size for size, _ in points),
            "exponent": None if value is None else round(value, 3),
            "goal_met": None if value is None else value <= GOAL_EXPONENT,
            "two_largest_exponent": None if top is None else round(top, 3),
        }
    return result


def monitor_goal(rows: list[dict]) -> dict[str, dict]:
    """The 80k-row monitoring batch against each reference: under 30 s and 4 GB?"""
    return {
        f"monitor_ref{row['reference']}": {
            "seconds": round(row["seconds"], 2), "peak_rss_mb": round(row["peak_rss_mb"]),
            "goal_met": row["seconds"] < GOAL_MONITOR_S and row["peak_rss_mb"] < GOAL_MONITOR_MB,
        }
        for row in rows
        if row["stage"] == "monitor" and row["size"] == GOAL_MONITOR_BATCH
    }  # fmt: skip


def report(rows: list[dict], summary: dict) -> None:
    """Print the table, the exponents, the goals and the final JSON line."""
    print(f"\n{'stage':<26}{'size':>8}{'seconds':>11}{'rows/s':>10}{'peak RSS MB':>13}"
          f"{'tree MB':>10}")  # fmt: skip
    for row in rows:
        label = STAGE_LABELS[row["stage"]]
        if row["stage"] == "monitor":
            label += f" (ref {row['reference']:,})"
        print(f"{label:<26}{row['size']:>8,}{row['seconds']:>11.4g}"
              f"{row['size'] / row['seconds']:>10,.0f}{row['peak_rss_mb']:>13,.0f}"
              f"{row['tree_mb']:>10,.0f}")  # fmt: skip
    print("peak RSS MB: the process doing the work (score server: the scoring server's processes);"
          " tree MB: the measurement's whole process tree (Ray, the server), sampled")  # fmt: skip
    print(f"\ngrowth exponent (slope of log seconds on log size; goal: none above {GOAL_EXPONENT})")
    for stage, fit in summary["exponents"].items():
        sizes = ", ".join(f"{s:,}" for s in fit["sizes"])
        if fit["exponent"] is None:
            print(f"  {stage:<28} n/a (one size: {sizes})")
        else:
            verdict = "pass" if fit["goal_met"] else "FAIL"
            top = fit["two_largest_exponent"]
            top = "" if top is None else f"; the two largest alone: {top:.2f}"
            print(f"  {stage:<28} {fit['exponent']:.2f}  {verdict}  (fitted on {sizes} rows{top})")
    latency = [r for r in rows if r["stage"].startswith("score") and r["size"] < SCORE_FIT_ROWS[0]]
    if latency:
        print("scoring latency (fixed per-request cost dominates; not in the exponent):")
        for r in latency:
            print(f"  {STAGE_LABELS[r['stage']]:<22} {r['size']:>3,} row(s): "
                  f"{r['seconds'] * 1e3:.1f} ms")  # fmt: skip
    goal = f"{GOAL_MONITOR_BATCH:,}-row batch < {GOAL_MONITOR_S:.0f} s and < {GOAL_MONITOR_MB:,} MB"
    for stage, numbers in summary["monitor_goal"].items():
        verdict = "pass" if numbers["goal_met"] else "FAIL"
        print(f"monitor goal ({goal}), {stage}: {numbers['seconds']:.1f} s, "
              f"{numbers['peak_rss_mb']:,} MB  {verdict}")  # fmt: skip
    if not summary["monitor_goal"]:
        print(f"monitor goal ({goal}): not measured in this run")
    print(json.dumps(summary, sort_keys=True))


def run(args) -> dict:
    """Prepare the inputs and the model, run every measurement, report."""
    unknown = set(args.stages.split(",")) - {"train", "monitor", "score"}
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}: choose from train, monitor, score")
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    prepare_stores(work_dir)
    from steps.core import config, storage

    args.model_families = args.model_families or config.default_families()
    sizes = plan_sizes(args.quick)
    uris = prepare_inputs(sizes)
    model_uri = monitored_model(args.model_families, args.model_trials)
    stages = set(args.stages.split(","))
    specs = [
        {"stage": "train", "size": rows, "uri": uris[f"train_{rows}"],
         "families": args.families, "trials": args.trials_per_family}
        for rows in sizes["train"]
    ]  # fmt: skip
    specs += [
        {"stage": "monitor", "size": rows, "uri": uris[f"batch_{rows}"], "reference": reference,
         "reference_uri": uris[f"reference_{reference}"], "model_uri": model_uri,
         "warmup_uri": uris[f"batch_{WARMUP_BATCH_ROWS}"],
         "warmup_reference_uri": uris[f"reference_{WARMUP_REFERENCE_ROWS}"]}
        for reference in sizes["reference"] for rows in sizes["batch"]
    ]  # fmt: skip
    specs += [
        {"stage": stage, "size": rows, "model_uri": model_uri}
        for stage in ("score_in_process", "score_server") for rows in sizes["score"]
    ]  # fmt: skip
    cache = storage.join(config.data_uri(), config.SCORE_CACHE_DIR)
    specs = [spec for spec in specs if spec["stage"].split("_")[0] in stages]
    rows = []
    for spec in specs:
        if spec["stage"] == "monitor":
            for key in storage.list_keys(cache):  # cold: the window's scores are computed
                storage.delete(key)
        rows.append(measure(work_dir, spec, args.profile))
        row = rows[-1]
        print(f"measured {row['stage']} {row['size']:,} rows: {row['seconds']:.4g} s, "
              f"{row['peak_rss_mb']:,.0f} MB", flush=True)  # fmt: skip
    summary = {
        "benchmark": "scaling",
        "quick": args.quick,
        "stages": args.stages,
        "train_search": {"families": args.families, "trials_per_family": args.trials_per_family},
        "model": {
            "families": args.model_families,
            "trials_per_family": args.model_trials,
            "uri": model_uri,
        },
        "measurements": [
            {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in row.items()
                if not k.endswith("uri") and k not in ("families", "trials")
            }
            for row in rows
        ],
        "exponents": exponents(rows),
        "goal_exponent": GOAL_EXPONENT,
        "monitor_goal": monitor_goal(rows),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    report(rows, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Rows are resampled from the real data and never printed.",
    )
    parser.add_argument(
        "--work-dir",
        required=True,
        help="stores, resampled files, model and logs (reused by a second run)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the smallest size of each stage only (smoke check, no exponent)",
    )
    parser.add_argument(
        "--families",
        default="lightgbm",
        help="model families of the train stage's fixed search (default: lightgbm)",
    )
    parser.add_argument(
        "--trials-per-family",
        type=int,
        default=2,
        help="Ray Tune trials per family of the train stage (default: 2)",
    )
    parser.add_argument(
        "--model-families",
        default=None,
        help="families of the model monitored and scored (default: train's own)",
    )
    parser.add_argument(
        "--model-trials", type=int, default=2, help="trials per family of that model (default: 2)"
    )
    parser.add_argument(
        "--stages",
        default="train,monitor,score",
        help="comma-separated stages to measure (default: train,monitor,score)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile each measurement to scaling/logs/*.prof (slower timings)",
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        prepare_stores(Path(args.work_dir).resolve())
        measure_here(json.loads(args.measure), args.result, args.profile_to)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
