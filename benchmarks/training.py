"""Training benchmark: our model vs fair fixed-setting baselines, HPO efficiency, peak RSS.

Runs ``python -m steps.train`` (real Ray Tune, its own throwaway MLflow store) on the processed data
in the data store and, in the same run, fits the fair baselines of ``steps.evaluation.baselines``
(one-hot logistic regression; one-hot XGBoost, learning rate 0.05, depth 4, 300 trees; categories
seen < 20 times pooled) on the same training rows. Everything is scored on ``initial_test`` and on
the whole ``future_data`` (death/hospice rows excluded), data nothing was tuned on. Prints ours
minus the best baseline on each set (the baseline with the higher ROC-AUC there, the conservative
choice) with a paired bootstrap 95% CI (``steps.evaluation.gate.compare_auc``), each family's best
and their average, precision/recall/lift at the alert budget, and ONE final JSON line.

    python -m benchmarks.training --data-uri data --trials-per-family 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.metrics import average_precision_score, roc_auc_score

from custom_pyfunc import columns
from steps.core import config, storage
from steps.evaluation import baselines, evaluate

SETS = ("initial_test", "future_data")


def read_split(root: str, key: str):
    """Label-eligible rows of one processed file and their labels."""
    return evaluate.labelled_rows(
        columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))
    )


def scores(y_true, probability) -> dict[str, float]:
    return {
        "roc_auc": round(float(roc_auc_score(y_true, probability)), 4),
        "pr_auc": round(float(average_precision_score(y_true, probability)), 4),
    }


def versus_best_baseline(labels, ours, baseline_scores: dict) -> dict[str, object]:
    """Ours minus the baseline with the higher ROC-AUC on these rows, paired bootstrap 95% CI."""
    best, difference = baselines.versus_best_baseline(labels, ours, baseline_scores)
    return {
        "baseline": best,
        "roc_auc_difference": round(difference.estimate, 4),
        "ci95": [round(difference.low, 4), round(difference.high, 4)],
    }


def at_threshold(labels, probability, threshold) -> dict[str, float]:
    """Precision, recall, lift and share flagged at ``threshold``."""
    values = evaluate.classification_metrics(labels, probability, threshold)
    return {k: round(values[k], 4) for k in ("flag_rate", "precision", "recall", "lift")}


def run_training(args, env) -> tuple[float, float, float]:
    """Run the train step as a child process; return wall seconds and peak RSS (MiB) of the
    driver and of the whole process tree (Ray workers included), sampled every 0.2 s."""
    command = [
        sys.executable, "-m", "steps.train", "--data-uri", args.data_uri,
        "--families", args.families, "--trials-per-family", str(args.trials_per_family),
        "--time-budget-s", str(args.time_budget_s), "--seed", str(args.seed),
        "--ray-address", args.ray_address,
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=config.PROJECT_ROOT)
    driver_mib, tree_mib = wait_with_peak_rss(process)
    if process.returncode:
        raise SystemExit(f"train failed with exit code {process.returncode}")
    return time.perf_counter() - started, driver_mib, tree_mib


def wait_with_peak_rss(process: subprocess.Popen, interval_s: float = 0.2) -> tuple[float, float]:
    """Wait for ``process``; return the peak RSS (MiB) of it alone and of its whole process tree
    (the RSS of it and every descendant summed: Ray workers, a scoring server), sampled every
    ``interval_s``."""
    driver = psutil.Process(process.pid)
    peak_driver = peak_tree = 0
    while process.poll() is None:
        try:
            tree = [driver, *driver.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree if p.is_running()]
            peak_driver, peak_tree = max(peak_driver, rss[0]), max(peak_tree, sum(rss))
        except psutil.Error:
            pass
        time.sleep(interval_s)
    return peak_driver / 2**20, peak_tree / 2**20


def latency_ms(model, frame) -> dict[str, float]:
    """Median in-process predict time for one row and for 1,000 rows."""
    one, batch = frame.iloc[[0]], frame.iloc[:1000]
    for _ in range(10):
        model.predict(one)
    singles = []
    for i in range(200):
        row = frame.iloc[[i]]
        started = time.perf_counter()
        model.predict(row)
        singles.append(time.perf_counter() - started)
    batches = []
    for _ in range(10):
        started = time.perf_counter()
        model.predict(batch)
        batches.append(time.perf_counter() - started)
    return {
        "single_row_p50_ms": round(float(np.median(singles)) * 1000, 2),
        "batch_1000_ms": round(float(np.median(batches)) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-uri", default=config.data_uri())
    parser.add_argument("--families", default=config.default_families())
    parser.add_argument("--trials-per-family", type=int, default=4)
    parser.add_argument("--time-budget-s", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ray-address", default="", help="existing Ray cluster (empty: local)")
    parser.add_argument(
        "--store", default="", help="keep the MLflow store in this folder; if it already holds a "
        "training run, score that run instead of training again (resource figures are then NaN)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    splits = {
        name: read_split(args.data_uri, key)
        for name, key in (
            ("train", config.INITIAL_TRAIN_KEY),
            ("initial_test", config.INITIAL_TEST_KEY),
            ("future_data", config.FUTURE_DATA_KEY),
        )
    }
    fitted = baselines.fit_baselines(*splits["train"], seed=0, n_jobs=os.cpu_count() or 1)
    baseline_scores = {s: baselines.baseline_scores(fitted, splits[s][0]) for s in SETS}

    keep = contextlib.nullcontext(args.store) if args.store else tempfile.TemporaryDirectory()
    with keep as store:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
            "HEALTH_PREDICT_ARTIFACT_URI": Path(store, "artifacts").as_uri(),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        if args.store and Path(store, "mlflow.db").exists():
            wall_s = driver_mib = tree_mib = float("nan")
        else:
            Path(store).mkdir(parents=True, exist_ok=True)
            wall_s, driver_mib, tree_mib = run_training(args, env)
        os.environ.update(
            {k: env[k] for k in ("MLFLOW_TRACKING_URI", "HEALTH_PREDICT_ARTIFACT_URI")}
        )
        import mlflow

        config.configure_mlflow()
        parent = mlflow.search_runs(
            experiment_names=[config.TRAINING_EXPERIMENT],
            filter_string="tags.`health_predict.role` = 'training'",
            output_format="list",
        )[0]
        family_runs = mlflow.search_runs(
            experiment_names=[config.TRAINING_EXPERIMENT],
            filter_string="tags.`health_predict.role` = 'family_best'",
            output_format="list",
        )
        family_scores, families, latency = {}, {}, None
        best_family = parent.data.tags["health_predict.best_family"]
        for run in family_runs:
            family = run.data.tags["health_predict.family"]
            model = mlflow.pyfunc.load_model(run.data.tags["health_predict.model_uri"])
            family_scores[family] = {}
            families[family] = {"val_raw_roc_auc": round(run.data.metrics["val_raw_roc_auc"], 4)}
            for name in SETS:
                frame, labels = splits[name]
                output = model.predict(frame.drop(columns=[columns.LABEL_COLUMN]))
                family_scores[family][name] = output["probability_score"].to_numpy()
                families[family][name] = scores(labels, family_scores[family][name])
            if family == best_family:
                threshold = float(run.data.params["threshold"])
                maxf1_threshold = run.data.metrics["maxf1_threshold"]
                latency = latency_ms(model, splits["initial_test"][0].drop(columns=["readmitted"]))
        hpo = parent.data.metrics

    average = {s: np.mean([family_scores[f][s] for f in family_scores], axis=0) for s in SETS}
    results = {
        "baselines": {b: {s: scores(splits[s][1], baseline_scores[s][b]) for s in SETS}
                      for b in baselines.BASELINES},
        "ours": {s: scores(splits[s][1], family_scores[best_family][s]) for s in SETS},
        "family_average": {s: scores(splits[s][1], average[s]) for s in SETS},
    }  # fmt: skip
    summary = {
        "benchmark": "training",
        "best_family": best_family,
        **results,
        "ours_minus_best_baseline": {
            s: versus_best_baseline(splits[s][1], family_scores[best_family][s], baseline_scores[s])
            for s in SETS
        },
        "family_average_minus_best_baseline": {
            s: versus_best_baseline(splits[s][1], average[s], baseline_scores[s]) for s in SETS
        },
        "alert_budget_operating_point": {
            s: at_threshold(splits[s][1], family_scores[best_family][s], threshold) for s in SETS
        },
        "max_f1_operating_point": {
            s: at_threshold(splits[s][1], family_scores[best_family][s], maxf1_threshold)
            for s in SETS
        },
        "families": families,
        "hpo_efficiency": round(hpo["hpo_efficiency"], 3),
        "hpo_wall_s": round(hpo["hpo_wall_s"], 1),
        "hpo_trials": int(hpo["hpo_trials"]),
        "train_wall_s": round(wall_s, 1),
        "peak_rss_driver_mib": round(driver_mib, 1),
        "peak_rss_tree_mib": round(tree_mib, 1),
        "in_process_latency": latency,
        "cpus": os.cpu_count(),
    }
    print(f"{'ROC-AUC / PR-AUC':32}{'initial_test':>20}{'future_data':>20}")
    rows = {f"baseline {b}": results["baselines"][b] for b in baselines.BASELINES}
    rows[f"ours ({best_family})"] = results["ours"]
    rows["average of family bests"] = results["family_average"]
    rows.update({f"family {f}": families[f] for f in families})
    for label, row in rows.items():
        cells = [f"{row[s]['roc_auc']:.4f} / {row[s]['pr_auc']:.4f}" for s in SETS]
        print(f"{label:32}{cells[0]:>20}{cells[1]:>20}")
    for s in SETS:
        versus = summary["ours_minus_best_baseline"][s]
        print(f"ours - {versus['baseline']} on {s}: {versus['roc_auc_difference']:+.4f} "
              f"95% CI [{versus['ci95'][0]:+.4f}, {versus['ci95'][1]:+.4f}]")  # fmt: skip
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
