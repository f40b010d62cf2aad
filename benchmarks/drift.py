"""How good is the drift detector? False alarms, power on documented shifts, time and memory.

Runs ``steps.monitor.monitor`` (the real thing: Evidently reports, MLflow run, report folder) on

* no-drift batches: ``--batch-size`` rows drawn with replacement from the held-out initial data
  (``initial_validation``), in two modes: with labels (performance rules apply) and without
  (drift rules apply); the share flagged DRIFT_DETECTED is the false-alarm rate;
* shifted batches: the same draws with one injected shift each (sizes in ``SHIFTS``); covariate
  shifts are tested without labels (in production, inputs arrive weeks before their labels, and
  with labels the decision asks whether the model got worse), label shifts with labels;
* two real future batches (early, late) for context.

Detection runs ``steps.monitor.assess`` (the full decision: scoring, Evidently reports, rules) and
skips publishing; the timing runs the whole CLI, publishing included.

The reference is ``initial_train``, the baseline ``initial_test``; the model is ``--model-uri``
(default: the champion). Time and peak RSS of one warm batch are measured in a fresh process
running the CLI. Last stdout line: one JSON object.

    python -m benchmarks.drift --draws 20
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from custom_pyfunc import columns
from steps.core import config, storage
from steps.monitor import DEFAULT_MODEL_URI, assess, monitor
from steps.monitoring.decision import DRIFT_DETECTED, Thresholds

Shift = Callable[[pd.DataFrame, np.random.Generator, int], pd.DataFrame]


def _weighted_draw(pool: pd.DataFrame, weights: np.ndarray, rng, size: int) -> pd.DataFrame:
    """``size`` rows of ``pool`` drawn with replacement with the given row weights."""
    chosen = rng.choice(len(pool), size=size, replace=True, p=weights / weights.sum())
    return pool.iloc[chosen].reset_index(drop=True)


def older_age_mix(pool, rng, size):
    """Patients aged 70+ make up 70% of the batch (about 45% in the initial data)."""
    old = pool["age"].isin(["[70-80)", "[80-90)", "[90-100)"]).to_numpy()
    weights = np.where(old, 0.70 / old.mean(), 0.30 / (1 - old.mean()))
    return _weighted_draw(pool, weights, rng, size)


def more_emergency_admissions(pool, rng, size):
    """Emergency admissions (admission_type_id 1) make up 85% of the batch (about 55%)."""
    emergency = (pool["admission_type_id"] == 1).to_numpy()
    weights = np.where(emergency, 0.85 / emergency.mean(), 0.15 / (1 - emergency.mean()))
    return _weighted_draw(pool, weights, rng, size)


def a1c_testing_rate(pool, rng, size):
    """A1C measured for 50% of encounters (about 17%); tested rows keep their real results."""
    tested = (pool["A1Cresult"] != "None").to_numpy()
    weights = np.where(tested, 0.50 / tested.mean(), 0.50 / (1 - tested.mean()))
    return _weighted_draw(pool, weights, rng, size)


def new_specialty(pool, rng, size):
    """15% of encounters come from a specialty never seen before ("Telemedicine")."""
    batch = pool.sample(size, replace=True, random_state=rng.integers(2**31)).reset_index(drop=True)
    batch.loc[rng.random(size) < 0.15, "medical_specialty"] = "Telemedicine"
    return batch


def label_rate_change(pool, rng, size):
    """30-day readmissions make up 18% of the batch (about 11%): prior shift, rows resampled."""
    positive = (columns.make_label(pool) == 1).to_numpy()
    weights = np.where(positive, 0.18 / positive.mean(), 0.82 / (1 - positive.mean()))
    return _weighted_draw(pool, weights, rng, size)


def calibration_shift(pool, rng, size):
    """Same inputs, fewer readmissions: 35% of 30-day readmissions become ">30" (concept shift;
    the model over-predicts by about 1.5x, the real future data reaches 1.25-1.3x)."""
    batch = pool.sample(size, replace=True, random_state=rng.integers(2**31)).reset_index(drop=True)
    flip = (batch[columns.LABEL_COLUMN] == "<30").to_numpy() & (rng.random(size) < 0.35)
    batch.loc[flip, columns.LABEL_COLUMN] = ">30"
    return batch


# name -> (shift, tested with labels)
SHIFTS: dict[str, tuple[Shift, bool]] = {
    "older_age_mix": (older_age_mix, False),
    "more_emergency_admissions": (more_emergency_admissions, False),
    "a1c_testing_rate": (a1c_testing_rate, False),
    "new_specialty": (new_specialty, False),
    "label_rate_change": (label_rate_change, True),
    "calibration_shift": (calibration_shift, True),
}


def _no_shift(pool, rng, size):
    return pool.sample(size, replace=True, random_state=rng.integers(2**31)).reset_index(drop=True)


def _store(batch: pd.DataFrame, labelled: bool, uri: str) -> str:
    kept = batch if labelled else batch.drop(columns=[columns.LABEL_COLUMN])
    return storage.write_bytes(uri, columns.to_raw_csv_bytes(kept))


def _decisions(shift: Shift, labelled: bool, pool, args, rng, name: str, folder: str) -> list:
    outcomes = []
    for draw in range(args.draws):
        uri = _store(shift(pool, rng, args.batch_size), labelled, f"{folder}/{name}_{draw}.csv")
        outcomes.append(assess(uri, model_uri=args.model_uri)[0])
    return outcomes


def _rate(outcomes: list[dict]) -> float:
    return round(100 * np.mean([o["decision"] == DRIFT_DETECTED for o in outcomes]), 1)


def _timed_cli_run(batch_uri: str, args) -> dict:
    """Wall time and peak RSS of ``python -m steps.monitor`` on one batch (warm score cache)."""
    command = [sys.executable, "-m", "steps.monitor", "--batch-uri", batch_uri,
               "--model-uri", args.model_uri, "--experiment", args.experiment,
               "--report-uri", str(Path(batch_uri).with_suffix(""))]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=config.PROJECT_ROOT)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"cli_wall_s": round(wall, 2), "cli_peak_rss_mib": round(peak_kib / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print per-case results and one final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--experiment", default="HealthPredict_Monitoring_Benchmark")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    data_root = args.data_uri or config.data_uri()
    read = lambda key: columns.read_encounters_csv(storage.read_bytes(storage.join(data_root, key)))  # noqa: E731
    pool = read(config.INITIAL_VALIDATION_KEY)
    future = read(config.FUTURE_DATA_KEY)
    rng = np.random.default_rng(args.seed)
    result: dict = {"draws": args.draws, "batch_size": args.batch_size,
                    "thresholds": Thresholds().as_dict()}  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: scores the reference/baseline and measures reliance once for this model.
        start = time.perf_counter()
        warm_uri = _store(_no_shift(pool, rng, args.batch_size), True, f"{folder}/warmup.csv")
        assess(warm_uri, model_uri=args.model_uri)
        result["first_batch_s_cold_cache"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        monitor(warm_uri, model_uri=args.model_uri, report_uri=f"{folder}/report",
                experiment=args.experiment)  # fmt: skip
        result["batch_s_in_process"] = round(time.perf_counter() - start, 2)
        result.update(_timed_cli_run(warm_uri, args))

        false_alarms = {}
        for labelled in (True, False):
            mode = "labelled" if labelled else "unlabelled"
            outcomes = _decisions(_no_shift, labelled, pool, args, rng, f"null_{mode}", folder)
            false_alarms[mode] = _rate(outcomes)
            shares = [o["drift_share"] for o in outcomes]
            print(f"no drift ({mode}): false alarms {false_alarms[mode]}%, drift share "
                  f"{min(shares):.2f}-{max(shares):.2f}", flush=True)  # fmt: skip
        power = {}
        for name, (shift, labelled) in SHIFTS.items():
            outcomes = _decisions(shift, labelled, pool, args, rng, name, folder)
            power[name] = _rate(outcomes)
            print(f"{name} ({'labelled' if labelled else 'unlabelled'}): detected {power[name]}%; "
                  f"e.g. {outcomes[0]['reasons'][:1]}", flush=True)  # fmt: skip
        real = {}
        for name, start_row in (("early", 0), ("late", len(future) - 2 * args.batch_size)):
            rows = future.iloc[start_row : start_row + args.batch_size]
            for labelled in (True, False):
                key = f"{name}_{'labelled' if labelled else 'unlabelled'}"
                uri = _store(rows, labelled, f"{folder}/future_{key}.csv")
                summary = assess(uri, model_uri=args.model_uri)[0]
                real[key] = {"decision": summary["decision"], "drift_share": summary["drift_share"],
                             "prediction_psi": round(summary["prediction_drift"]["score"], 3),
                             "important_drift_share": summary["important_drift_share"]}  # fmt: skip
                if summary["performance"]:
                    real[key]["roc_auc"] = round(summary["performance"]["batch"]["roc_auc"], 3)
                    real[key]["calibration_ratio"] = round(
                        summary["performance"]["batch"]["calibration_ratio"], 3
                    )
                print(f"real future {key}: {real[key]}", flush=True)

    result.update(
        false_alarm_pct=false_alarms,
        max_false_alarm_pct=max(false_alarms.values()),
        power_pct=power,
        min_power_pct=min(power.values()),
        mean_power_pct=round(float(np.mean(list(power.values()))), 1),
        real_future=real,
        goal_met=bool(
            max(false_alarms.values()) <= 5
            and min(power.values()) >= 90
            and result["cli_wall_s"] < 5
        ),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
