"""Training benchmark: model quality vs a one-hot + XGBoost baseline, HPO efficiency, peak RSS.

Runs ``python -m steps.train`` (real Ray Tune, its own throwaway MLflow store) on the processed data
in the data store, and in the same run trains the baseline; both are scored on ``initial_test`` and
on the whole ``future_data`` (death/hospice rows excluded). Also times in-process prediction of the
best model (one row, 1,000 rows). Prints a table, then ONE JSON line.

    python -m benchmarks.training --data-uri data --trials-per-family 8 --time-budget-s 420
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from sklearn.compose import make_column_transformer
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from xgboost import XGBClassifier

from custom_pyfunc import columns
from steps.core import config, storage
from steps.evaluation import evaluate

CATEGORICAL = [*columns.STRING_INPUT_COLUMNS, *columns.CODED_ID_COLUMNS]
NUMERIC = list(columns.COUNT_RANGES)


def read_split(root: str, key: str):
    """Label-eligible rows of one processed file and their labels."""
    return evaluate.labelled_rows(
        columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))
    )


def baseline_model():
    """Plain one-hot + XGBoost with default hyperparameters."""
    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL), ("passthrough", NUMERIC)
    )
    return make_pipeline(encoder, XGBClassifier(n_jobs=os.cpu_count(), random_state=0))


def baseline_frame(frame):
    """Raw columns with categories as text (missing as "missing") for the baseline."""
    out = frame[CATEGORICAL + NUMERIC].copy()
    out[CATEGORICAL] = out[CATEGORICAL].astype(str).fillna("missing")
    out[NUMERIC] = out[NUMERIC].astype("float64")
    return out


def scores(y_true, probability) -> dict[str, float]:
    return {
        "roc_auc": round(float(roc_auc_score(y_true, probability)), 4),
        "pr_auc": round(float(average_precision_score(y_true, probability)), 4),
    }


def run_training(args, env) -> tuple[float, float, float]:
    """Run the train step as a child process; return wall seconds and peak RSS (MiB) of the
    driver and of the whole process tree (Ray workers included), sampled every 0.2 s."""
    command = [
        sys.executable, "-m", "steps.train", "--data-uri", args.data_uri,
        "--families", args.families, "--trials-per-family", str(args.trials_per_family),
        "--time-budget-s", str(args.time_budget_s), "--seed", str(args.seed),
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=config.PROJECT_ROOT)
    driver = psutil.Process(process.pid)
    peak_driver = peak_tree = 0
    while process.poll() is None:
        try:
            tree = [driver, *driver.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree if p.is_running()]
            peak_driver, peak_tree = max(peak_driver, rss[0]), max(peak_tree, sum(rss))
        except psutil.Error:
            pass
        time.sleep(0.2)
    if process.returncode:
        raise SystemExit(f"train failed with exit code {process.returncode}")
    return time.perf_counter() - started, peak_driver / 2**20, peak_tree / 2**20


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
    parser.add_argument("--families", default="logreg,random_forest,xgboost,lightgbm")
    parser.add_argument("--trials-per-family", type=int, default=8)
    parser.add_argument("--time-budget-s", type=float, default=420)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    splits = {
        name: read_split(args.data_uri, key)
        for name, key in (
            ("train", config.INITIAL_TRAIN_KEY),
            ("initial_test", config.INITIAL_TEST_KEY),
            ("future_data", config.FUTURE_DATA_KEY),
        )
    }
    baseline = baseline_model().fit(baseline_frame(splits["train"][0]), splits["train"][1])
    results = {"baseline": {}, "ours": {}}
    for name in ("initial_test", "future_data"):
        frame, labels = splits[name]
        probability = baseline.predict_proba(baseline_frame(frame))[:, 1]
        results["baseline"][name] = scores(labels, probability)

    with tempfile.TemporaryDirectory() as store:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
            "HEALTH_PREDICT_ARTIFACT_URI": Path(store, "artifacts").as_uri(),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
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
        families = {}
        for run in family_runs:
            family = run.data.tags["health_predict.family"]
            model = mlflow.pyfunc.load_model(run.data.tags["health_predict.model_uri"])
            families[family] = {
                "val_roc_auc": round(run.data.metrics["val_roc_auc"], 4),
                "test_roc_auc": round(run.data.metrics["test_roc_auc"], 4),
                "test_pr_auc": round(run.data.metrics["test_pr_auc"], 4),
            }
            frame, labels = splits["future_data"]
            inputs = frame.drop(columns=[columns.LABEL_COLUMN])
            future = model.predict(inputs)["probability_score"].to_numpy()
            families[family]["future_roc_auc"] = scores(labels, future)["roc_auc"]
            families[family]["future_pr_auc"] = scores(labels, future)["pr_auc"]
            if run.info.run_id == parent.data.tags["health_predict.best_run_id"]:
                best_family = family
                results["ours"] = {
                    "initial_test": {
                        "roc_auc": families[family]["test_roc_auc"],
                        "pr_auc": families[family]["test_pr_auc"],
                    },
                    "future_data": scores(labels, future),
                }
                results["latency"] = latency_ms(model, inputs)
        hpo = parent.data.metrics

    summary = {
        "benchmark": "training",
        "best_family": best_family,
        "baseline": results["baseline"],
        "ours": results["ours"],
        "future_roc_auc_gain": round(
            results["ours"]["future_data"]["roc_auc"]
            - results["baseline"]["future_data"]["roc_auc"],
            4,
        ),
        "families": families,
        "hpo_efficiency": round(hpo["hpo_efficiency"], 3),
        "hpo_wall_s": round(hpo["hpo_wall_s"], 1),
        "hpo_trials": int(hpo["hpo_trials"]),
        "train_wall_s": round(wall_s, 1),
        "peak_rss_driver_mib": round(driver_mib),
        "peak_rss_tree_mib": round(tree_mib),
        "in_process_latency": results["latency"],
        "cpus": os.cpu_count(),
    }
    print(f"{'':14}{'initial_test ROC/PR':>24}{'future_data ROC/PR':>24}")
    for who in ("baseline", "ours"):
        cells = [f"{results[who][s]['roc_auc']:.4f} / {results[who][s]['pr_auc']:.4f}"
                 for s in ("initial_test", "future_data")]  # fmt: skip
        print(f"{who:14}{cells[0]:>24}{cells[1]:>24}")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
