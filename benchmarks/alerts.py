"""False alarms and misses of the monitor's alerts (``steps.monitoring.decision.judge``).

A frozen model (LightGBM with fixed hyper-parameters, fitted on ``initial_train``, calibrated and
thresholded at the alert budget on ``initial_validation``, like ``train`` does) and the
``future_data`` batches (``--batch-size`` rows, file order; labels of batch ``t`` mature at batch
``t + --label-lag``; the recent window is the ``--window`` newest matured batches, by default
the loop's ``loop.RECENT_WINDOW_BATCHES``). Batches
``0 .. --tuning-batches - 1`` are the tuning period: the thresholds were chosen on its figures
(printed first); every other figure is on the batches after it.

* **real**: the frozen model on the real batches: the alerts per batch, and the CBPE error
  (estimated minus realised ROC-AUC) with and without recalibration on the newest matured batch;
* **null**: ``--null-replays`` replays of one period (the tuning period, then the reported one):
  its rows split by patient into a deployment half (the model is Platt-recalibrated there, its
  threshold reset to the budget, and it is the baseline) and a batch half, from which
  ``--replay-batches`` batches are resampled. Every alert on them is a false alarm;
* **harm**: the same replays of the reported period with a harm from batch ``--harm-at`` on:
  labels permuted, observed rate halved (half the positives relabelled), ``time_in_hospital`` in
  hours instead of days, ``race`` emptied. A miss is no alert of the right kind by the last batch;
  the delay counts batches from the first harmed batch the alert could see (its labels' maturity
  for the label harms, the batch itself for the input harms).

    python benchmarks/alerts.py [--work-dir DIR] [--batch-size 5000] [--tuning-batches 8]

The stores are under ``--work-dir`` (``benchmarks.replay.prepare_stores``: the raw data is
ingested from ``HEALTH_PREDICT_RAW_DATA`` and split there when the folder holds no split yet).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# The project root, so that this file runs as a script and as ``python -m benchmarks.alerts``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.replay import prepare_stores

# Fixed hyper-parameters in the middle of the LightGBM search space (no search: a 2-core run).
PARAMS = {
    "n_estimators": 300, "learning_rate": 0.03, "num_leaves": 16, "min_child_samples": 100,
    "subsample": 0.8, "colsample_bytree": 0.5, "reg_lambda": 1.0, "cat_smooth": 10.0,
    "min_data_per_group": 100,
}  # fmt: skip
HARMS = ("labels_permuted", "rate_halved", "unit_changed", "column_emptied")
EXPECTED = {
    "labels_permuted": "performance",
    "rate_halved": "performance",
    "unit_changed": "data_quality",
    "column_emptied": "data_quality",
}


def run(work_dir: Path, args) -> dict:
    """Fit the frozen model, replay real, null and harmed batches; returns the measurements."""
    prepare_stores(work_dir)
    import pandas as pd

    from custom_pyfunc import columns
    from steps.core import config, storage
    from steps.evaluation import evaluate
    from steps.monitoring import cbpe, decision, performance, tuning
    from steps.monitoring.inputs import contract_violations
    from steps.training import data as training_data
    from steps.training import fitting

    root = config.data_uri()
    budget = float(config.project_defaults("train")["alert_budget"])
    thresholds = decision.Thresholds.defaults()
    data = training_data.load_training_data(root, "30d")
    predictor, _ = fitting.fit_family_best("lightgbm", PARAMS, data, 0, budget)
    read = lambda key: columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))  # noqa: E731
    future = read(config.FUTURE_DATA_KEY)
    size = args.batch_size
    batches = [future.iloc[i : i + size].reset_index(drop=True)
               for i in range(0, len(future) - size + 1, size)]  # fmt: skip
    lag, window, first = args.label_lag, args.window, args.tuning_batches

    def scored(frame, recalibrate=None, threshold=None):
        """Valid rows' scores; label-eligible flags/scores and labelled arrays."""
        valid = frame[~contract_violations(frame).any(axis=1).to_numpy()]
        p = predictor.probability(valid) if len(valid) else np.zeros(0)
        if recalibrate is not None and len(p):
            p = recalibrate(p)
        flag = (p >= (predictor.threshold if threshold is None else threshold)).astype(int)
        eligible = columns.is_label_eligible(valid).to_numpy()
        labelled = eligible & valid[columns.LABEL_COLUMN].notna().to_numpy()
        target = columns.make_label(valid[labelled], "30d").to_numpy().astype(int)
        arrays = {"target": target, "probability_score": p[labelled], "prediction": flag[labelled]}
        return {"flags": flag[eligible], "scores": p[eligible], "labelled": arrays}

    def replay(frames, baseline, recalibrate=None, threshold=None, harm=None, harm_at=None,
               labels=None, start=None):  # fmt: skip
        """Alerts of every batch from ``start`` (default ``lag + 1``: one recent batch at least)."""
        frames = list(frames)
        labels = [dict(v, labelled=dict(v["labelled"])) for v in labels] if labels else [
            scored(f, recalibrate, threshold) for f in frames]  # fmt: skip
        rng = np.random.default_rng(7)
        if harm in ("labels_permuted", "rate_halved"):
            for t in range(harm_at, len(frames)):
                target = labels[t]["labelled"]["target"].copy()
                if harm == "labels_permuted":
                    target = rng.permutation(target)
                else:
                    positives = np.flatnonzero(target)
                    target[rng.choice(positives, len(positives) // 2, replace=False)] = 0
                labels[t]["labelled"]["target"] = target
        if harm in ("unit_changed", "column_emptied"):
            for t in range(harm_at, len(frames)):
                frames[t] = frames[t].copy()
                if harm == "unit_changed":
                    frames[t]["time_in_hospital"] = frames[t]["time_in_hospital"] * 24
                else:
                    frames[t]["race"] = None
                labels[t] = scored(frames[t], recalibrate, threshold)
        out = []
        for t in range(start or lag + 1, len(frames)):
            matured = labels[t - lag]["labelled"]
            usable = decision.labels_usable(int(matured["target"].sum()),
                                            int((1 - matured["target"]).sum()))  # fmt: skip
            sections = decision.judge(
                frames[t], labels[t]["flags"], labels[t]["scores"],
                frames[max(0, t - lag - window + 1) : t - lag + 1],
                matured if usable else None, baseline, budget, thresholds,
            )  # fmt: skip
            out.append({"batch": t, "alerts": decision.alerts(sections), "sections": sections})
        return out

    test = scored(read(config.INITIAL_TEST_KEY))["labelled"]
    results: dict = {"batches": len(batches), "thresholds": thresholds.as_dict()}

    # Real batches, frozen model.
    real = replay(batches, test)
    results["real"] = [
        {"batch": r["batch"], "alerts": ",".join(r["alerts"]) or "OK",
         "reasons": sum(len((s or {}).get("reasons", [])) for s in r["sections"].values())}
        for r in real if r["batch"] >= first
    ]  # fmt: skip
    errors, raw_errors = [], []
    for t in range(max(first, lag), len(batches)):
        now = scored(batches[t])
        matured = scored(batches[t - lag])["labelled"]
        realised = performance.delong_auc(now["labelled"]["target"],
                                          now["labelled"]["probability_score"])[0]  # fmt: skip
        labelled_scores = now["labelled"]["probability_score"]
        estimated = cbpe.estimated_roc_auc(performance.recalibrated(matured, labelled_scores))
        errors.append(estimated - realised)
        raw_errors.append(cbpe.estimated_roc_auc(labelled_scores) - realised)
    results["cbpe_error"] = {
        "recalibrated_mean": round(float(np.mean(errors)), 4),
        "recalibrated_mae": round(float(np.mean(np.abs(errors))), 4),
        "raw_mean": round(float(np.mean(raw_errors)), 4),
        "raw_mae": round(float(np.mean(np.abs(raw_errors))), 4),
        "batches": len(errors),
    }

    def null_setup(pool, seed):
        deploy_rows, batch_rows = tuning.split_by_patient(pool.sample(frac=1.0, random_state=seed))
        raw = scored(deploy_rows)["labelled"]
        platt = lambda p: performance.recalibrated(raw, p)  # noqa: E731
        deployed = scored(deploy_rows, platt)
        threshold = evaluate.alert_budget_threshold(deployed["scores"], budget)
        baseline = scored(deploy_rows, platt, threshold)["labelled"]
        draws = [batch_rows.sample(size, replace=True, random_state=seed * 100 + i)
                 .reset_index(drop=True) for i in range(args.replay_batches)]  # fmt: skip
        return draws, baseline, platt, threshold

    periods = {"tuning": pd.concat(batches[:first], ignore_index=True),
               "reported": pd.concat(batches[first:], ignore_index=True)}  # fmt: skip
    for name, pool in periods.items():
        counts = {kind: 0 for kind in decision.ALERT_KINDS}
        assessed = 0
        harmed = {h: {"missed": 0, "delays": []} for h in HARMS}
        for seed in range(args.null_replays):
            draws, baseline, platt, threshold = null_setup(pool, seed)
            labels = [scored(f, platt, threshold) for f in draws]
            for r in replay(draws, baseline, platt, threshold, labels=labels):
                assessed += 1
                for kind in r["alerts"]:
                    counts[kind] += 1
            if name != "reported":
                continue
            for harm in HARMS:
                onset = args.harm_at + (lag if EXPECTED[harm] == "performance" else 0)
                hits = [r["batch"] for r in replay(draws, baseline, platt, threshold, harm,
                                                   args.harm_at, labels, args.harm_at)
                        if r["batch"] >= onset and EXPECTED[harm] in r["alerts"]]  # fmt: skip
                if hits:
                    harmed[harm]["delays"].append(hits[0] - onset)
                else:
                    harmed[harm]["missed"] += 1
        results[f"null_{name}"] = {"batches_assessed": assessed, "false_alarms": counts}
        if name == "reported":
            results["harm"] = {
                h: {"replays": args.null_replays, "missed": v["missed"],
                    "max_delay": max(v["delays"], default=None),
                    "mean_delay": round(float(np.mean(v["delays"])), 2) if v["delays"] else None}
                for h, v in harmed.items()
            }  # fmt: skip
    return results


def main() -> None:
    # The loop's recent window (declared once, in the loop): the window the thresholds are
    # chosen with is the one the monitoring loop gives the monitor. Imported here, like the step
    # modules in run(), so that --help answers without loading MLflow and pandas.
    from steps.orchestration.loop import RECENT_WINDOW_BATCHES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="build/alerts-benchmark")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--tuning-batches", type=int, default=8)
    parser.add_argument("--label-lag", type=int, default=1)
    parser.add_argument(
        "--window",
        type=int,
        default=RECENT_WINDOW_BATCHES,
        help="recent window in batches (default: the loop's, %(default)s)",
    )
    parser.add_argument("--null-replays", type=int, default=10)
    parser.add_argument("--replay-batches", type=int, default=12)
    parser.add_argument("--harm-at", type=int, default=6)
    args = parser.parse_args()
    work_dir = Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    results = run(work_dir, args)
    for row in results.pop("real"):
        print(f"real batch {row['batch']}: {row['alerts']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
