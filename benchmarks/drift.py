"""How good is the drift detector? Thresholds tuned on one slice, false alarms and power
reported on another, time and memory.

The model is ``--model-uri`` (default: the champion; it must be trained on the initial data only).
``initial_test``, the only initial data it never touched, is split by patient
(``steps.monitoring.tuning.split_by_patient``) into a tuning slice and a report slice:

1. **tune**: ``--draws`` no-drift batches (``--batch-size`` rows drawn with replacement) from the
   tuning slice, each against its own resample of the baseline, go through
   ``steps.monitor.assess``; the thresholds are frozen above their statistics
   (``tuning.freeze_thresholds``) and printed; ``Thresholds()`` (the MLproject defaults) should
   equal them;
2. **report**, with the frozen thresholds, on the report slice only: the false-alarm rate of
   ``--draws`` no-drift batches, with labels (matured labels + drift + CBPE rules) and without
   (drift + CBPE rules), and the power on ``--shift-draws`` batches per injected shift (sizes in
   ``SHIFTS``; covariate shifts without labels, label shifts with labels), each with a 95%
   Clopper-Pearson interval;
3. two real future batches (early, late) for context.

The reference is ``initial_train``; the performance baseline is ``initial_validation`` (the model's
calibration data), because ``initial_test`` is consumed by the two slices. Draws from one slice
share that slice's sampling error, so the intervals are conditional on the slices. The timing
runs the whole CLI, publishing included, in a fresh process. Last stdout line: one JSON object.

    python -m benchmarks.drift --draws 20 --shift-draws 20
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
from scipy.stats import binomtest

from custom_pyfunc import columns
from steps.core import config, storage
from steps.monitoring import tuning
from steps.monitoring.assess import assess, monitor
from steps.monitoring.decision import Thresholds, all_reasons

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


def _summaries(shift: Shift, labelled: bool, pool, draws: int, args, rng, name, folder) -> list:
    """Monitoring summaries of ``draws`` batches drawn from ``pool`` with ``shift`` applied, each
    against its own resample of the baseline."""
    summaries = []
    for draw in range(draws):
        batch = shift(pool, rng, args.batch_size)
        uri = _store(batch, labelled, f"{folder}/{name}_{draw}.csv")
        baseline = _no_shift(args.baseline, rng, len(args.baseline))
        baseline_uri = _store(baseline, True, f"{folder}/{name}_{draw}_baseline.csv")
        summaries.append(assess(uri, model_uri=args.model_uri, baseline_uri=baseline_uri)[0])
    return summaries


def _rate(summaries: list[dict], thresholds: Thresholds, labelled: bool) -> dict:
    """Share (%) of batches flagged under ``thresholds``, with its 95% Clopper-Pearson interval."""
    flagged = sum(
        bool(all_reasons(s if labelled else {**s, "performance": None}, thresholds))
        for s in summaries
    )
    interval = binomtest(flagged, len(summaries)).proportion_ci(0.95, method="exact")
    return {
        "pct": round(100 * flagged / len(summaries), 1),
        "ci95": [round(100 * interval.low, 1), round(100 * interval.high, 1)],
        "flagged": flagged,
        "batches": len(summaries),
    }


def _timed_cli_run(batch_uri: str, args) -> dict:
    """Wall time and peak RSS of ``python -m steps.monitor`` on one batch (warm score cache)."""
    command = [sys.executable, "-m", "steps.monitor", "--batch-uri", batch_uri,
               "--model-uri", args.model_uri, "--experiment", args.experiment,
               "--baseline-uri", args.baseline_uri,
               "--report-uri", str(Path(batch_uri).with_suffix(""))]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=config.PROJECT_ROOT)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"cli_wall_s": round(wall, 2), "cli_peak_rss_mib": round(peak_kib / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    """Tune, report, time; print per-case results and one final JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--model-uri", default=config.CHAMPION_MODEL_URI)
    parser.add_argument("--draws", type=int, default=20, help="no-drift batches per phase")
    parser.add_argument("--shift-draws", type=int, default=20, help="batches per injected shift")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--experiment", default="HealthPredict_Monitoring_Benchmark")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    data_root = args.data_uri or config.data_uri()
    read = lambda key: columns.read_encounters_csv(storage.read_bytes(storage.join(data_root, key)))  # noqa: E731
    args.baseline_uri = storage.join(data_root, config.INITIAL_VALIDATION_KEY)
    args.baseline = read(config.INITIAL_VALIDATION_KEY)
    tuning_pool, report_pool = tuning.split_by_patient(read(config.INITIAL_TEST_KEY))
    shared = set(tuning_pool[tuning.PATIENT_COLUMN]) & set(report_pool[tuning.PATIENT_COLUMN])
    assert not shared, "tuning and report slices share patients"
    future = read(config.FUTURE_DATA_KEY)
    rng = np.random.default_rng(args.seed)
    result: dict = {"draws": args.draws, "shift_draws": args.shift_draws,
                    "batch_size": args.batch_size, "tuning_rows": len(tuning_pool),
                    "report_rows": len(report_pool), "model_uri": args.model_uri}  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        # Warm-up: scores the reference/baseline and measures reliance once for this model.
        start = time.perf_counter()
        warm_uri = _store(_no_shift(tuning_pool, rng, args.batch_size), True, f"{folder}/warm.csv")
        assess(warm_uri, model_uri=args.model_uri, baseline_uri=args.baseline_uri)
        result["first_batch_s_cold_cache"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        monitor(warm_uri, model_uri=args.model_uri, report_uri=f"{folder}/report",
                experiment=args.experiment, baseline_uri=args.baseline_uri)  # fmt: skip
        result["batch_s_in_process"] = round(time.perf_counter() - start, 2)
        result.update(_timed_cli_run(warm_uri, args))

        tuned = _summaries(_no_shift, True, tuning_pool, args.draws, args, rng, "tune", folder)
        thresholds = tuning.freeze_thresholds([tuning.statistics(s) for s in tuned])
        result["thresholds_tuned"] = thresholds.as_dict()
        result["defaults_equal_tuned"] = Thresholds() == thresholds
        print(f"tuned on {len(tuned)} no-drift draws of the tuning slice: {thresholds}", flush=True)

        null = _summaries(_no_shift, True, report_pool, args.draws, args, rng, "null", folder)
        false_alarms = {
            "labelled": _rate(null, thresholds, labelled=True),
            "unlabelled": _rate(null, thresholds, labelled=False),
        }
        for mode, rate in false_alarms.items():
            print(f"no drift ({mode}, report slice): false alarms {rate}", flush=True)
        power = {}
        for name, (shift, labelled) in SHIFTS.items():
            outcomes = _summaries(shift, labelled, report_pool, args.shift_draws, args, rng, name,
                                  folder)  # fmt: skip
            power[name] = _rate(outcomes, thresholds, labelled)
            print(f"{name} ({'labelled' if labelled else 'unlabelled'}): detected {power[name]}",
                  flush=True)  # fmt: skip
        real = {}
        for name, start_row in (("early", 0), ("late", len(future) - 2 * args.batch_size)):
            rows = future.iloc[start_row : start_row + args.batch_size]
            uri = _store(rows, True, f"{folder}/future_{name}.csv")
            summary = assess(uri, model_uri=args.model_uri, baseline_uri=args.baseline_uri)[0]
            real[name] = {
                "decision_labelled": bool(all_reasons(summary, thresholds)),
                "decision_unlabelled": bool(all_reasons({**summary, "performance": None},
                                                        thresholds)),
                **{k: round(v, 3) for k, v in tuning.statistics(summary).items()},
                "estimated_roc_auc": round(summary["estimated_performance"]["batch"]["roc_auc"], 3),
                "roc_auc": round(summary["performance"]["batch"]["roc_auc"], 3),
            }  # fmt: skip
            print(f"real future {name}: {real[name]}", flush=True)

    result.update(
        false_alarm_pct=false_alarms,
        power_pct=power,
        min_power_pct=min(p["pct"] for p in power.values()),
        real_future=real,
        goal_met=bool(
            max(r["pct"] for r in false_alarms.values()) <= 5
            and min(p["pct"] for p in power.values()) >= 90
            and result["cli_wall_s"] < 5
        ),
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
