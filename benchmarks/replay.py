"""Replay the monitoring engine under several retraining policies: what does each one buy?

Every arm runs ``steps.orchestration.engine.handle_batch`` (the sequence the monitoring DAG and
``simulate`` run) over the same ``future_data`` batches (``--batch-size`` rows, in file order,
label lag ``--label-lag-batches``, default 30 days), each in its own loop state; the arms differ
only in their policy: ``frozen``, ``every:1``, ``every:2``, ``every:4`` and ``cost:C``.
Retraining is in-process (``steps.orchestration.refits``): the initial champion's pipeline refitted
on ``initial_train`` + the usable matured batches but the newest, recalibrated and re-thresholded
by ``fitting.recalibrate`` (``train``'s rule) on the newest's calibration half and gated on its
other half by ``gate.judge`` with the policy's deployment cost. Every batch is monitored by the
``monitor``'s own ``assess`` on the served model, with the inputs the DAG gives it; an assessment
is shared by the arms that serve the same model on the same usable batches (it depends on nothing
else), so ``cost:C``'s ``performance``-alert path and the holds run here as in the DAG.

A ``data_quality`` alert holds its batch out of retraining, gating and the monitor's recent
window until it is released on purpose. In the DAG a person does that; here a held batch is
released ``--release-after`` batches later (default 1: before the next batch, when its labels
mature at a lag of 1), with ``RELEASE_REASON``. On this data the alerts are a lasting shift
(``medical_specialty`` goes from about 21% missing to 68% over the decade), not a broken feed:
never released (``--release-after 0``), every batch after the first alert alerts against the same
pre-shift window and is held too, and the loop stops learning.

A tuning period comes first: on batches ``0 .. --tuning-batches - 1`` the cost arm is replayed
for each deployment cost in ``COST_GRID``; the largest cost whose pooled ROC-AUC there (from the
first batch a retrained model can serve) is within ``GOAL_AUC_GAP`` of ``every:1`` is kept (fewer
deployments), else the best ROC-AUC. No reported figure uses those batches.

Reported on the batches after the tuning period, per arm: pooled ROC-AUC, deployments and
retrainings, alerts raised, flagged share per batch (alert budget = ``train``'s
``alert_budget``), readmissions caught at the budget; paired 95% CIs of ROC-AUC differences
resampled by patient (``--n-bootstrap``), and a per-batch paired view (9 batches are few: a
pattern in them is a hint, not evidence). ``timeline.png`` (``--out``) shows the alerts,
deployments and flagged share per batch. The last line printed is one JSON object.

``--arms`` names the reported arms in the order they run (``cost`` is the tuned cost arm; default
all five). Each batch prints one JSON line as it is handled, and each reported arm prints its
summary (``arm_summary``, with its paired difference to ``every:1`` once that arm has run) as it
finishes, so a run stopped early still shows the arms it completed.

    python benchmarks/replay.py --work-dir DIR [--batch-size 5000] [--tuning-batches 8]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

GOAL_AUC_GAP = 0.001
COST_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02)
SCHEDULES = ("frozen", "every:1", "every:2", "every:4")
REFERENCE = "every:1"
# The tuned cost arm's name in --arms.
COST_ARM = "cost"
# The replay's stand-in for the care team that reviews a data_quality hold (--release-after).
RELEASE_REASON = "replay: reviewed, a lasting shift of the feed, not a broken feed"


def prepare_stores(work_dir: Path) -> None:
    """Point the data store and MLflow at ``work_dir`` (before any step module reads them), and
    ingest and split there when it holds no split yet."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["HEALTH_PREDICT_DATA_URI"] = str(work_dir / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir / 'mlflow.db'}"
    os.environ["HEALTH_PREDICT_ARTIFACT_URI"] = (work_dir / "mlartifacts").as_uri()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from steps.core import config, storage, tracking

    if not storage.exists(storage.join(config.data_uri(), config.FUTURE_DATA_KEY)):
        tracking.run_entry_point("ingest", {})
        tracking.run_entry_point("split", {})


def patient_bootstrap(labels, first, second, patients, n_resamples: int, seed: int = 0) -> dict:
    """ROC-AUC of ``first`` minus ``second`` and its 95% CI, patients resampled with replacement."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    codes = np.unique(patients, return_inverse=True)[1]
    n_patients = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    estimate = roc_auc_score(labels, first) - roc_auc_score(labels, second)
    draws = []
    for _ in range(n_resamples):
        weight = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)[codes]
        keep = weight > 0
        w, y = weight[keep], labels[keep]
        draws.append(
            roc_auc_score(y, first[keep], sample_weight=w)
            - roc_auc_score(y, second[keep], sample_weight=w)
        )
    low, high = np.quantile(draws, [0.025, 0.975])
    return {"estimate": round(float(estimate), 4), "ci95": [round(low, 4), round(high, 4)]}


def run(work_dir: Path, args) -> dict[str, object]:
    """Set up the initial champion, tune the cost on the tuning period, replay every arm."""
    prepare_stores(work_dir)
    import mlflow
    import numpy as np
    import pandas as pd

    from custom_pyfunc import columns
    from steps.core import config, storage
    from steps.evaluation import evaluate, gate
    from steps.monitoring import assess
    from steps.monitoring.decision import Thresholds
    from steps.orchestration import engine, loop, refits, simulation

    started = time.perf_counter()
    root = config.data_uri()
    frozen_version = loop.champion_version()
    if frozen_version is None:
        # train's own default families (MLproject): the family the DAG retrains with.
        options = {"trials_per_family": args.trials_per_family, "families": args.families}
        frozen_version = loop.run_registration(
            loop.run_training(None, **options), None
        ).champion_after
    if not simulation.trained_without_future_data(frozen_version):
        raise RuntimeError(f"champion version {frozen_version} was trained with future data")
    frozen_model = mlflow.pyfunc.load_model(loop.model_uri(frozen_version))
    frozen = frozen_model.unwrap_python_model()._predictor
    monitor_settings = {
        "monitored": True,
        "thresholds": Thresholds.defaults(),
        "baseline_uri": storage.join(root, config.INITIAL_TEST_KEY),
        "frozen_lineage": assess.model_lineage_tags(frozen_model),
        "initial_train_uri": storage.join(root, config.INITIAL_TRAIN_KEY),
        # Names this run's models in the monitor's score cache (a key like refit_0-6 is reused
        # by every run).
        "run_token": f"replay-{uuid.uuid4().hex[:8]}",
    }
    setup_seconds = time.perf_counter() - started

    def read(key: str) -> pd.DataFrame:
        return columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))

    initial_train = read(config.INITIAL_TRAIN_KEY)
    future_bytes = storage.read_bytes(storage.join(root, config.FUTURE_DATA_KEY))
    future = columns.read_encounters_csv(future_bytes)
    count = math.ceil(len(future) / args.batch_size)
    count = min(count, args.max_batches) if args.max_batches > 0 else count
    truth = [
        evaluate.labelled_rows(future.iloc[i * args.batch_size : (i + 1) * args.batch_size])
        for i in range(count)
    ]
    lag = (
        loop.default_label_lag(args.batch_size)
        if args.label_lag_batches is None
        else args.label_lag_batches
    )
    budget = float(config.project_defaults("train")["alert_budget"])
    cache = refits.RefitCache()

    def replay(policy_text: str, stop: int) -> dict:
        """One arm over batches ``0 .. stop - 1``: timeline rows and served scores per batch."""
        policy = engine.parse_policy(policy_text)
        arm_root = work_dir / "arms" / policy_text.replace(":", "_")
        shutil.rmtree(arm_root, ignore_errors=True)
        storage.write_bytes(str(arm_root / config.FUTURE_DATA_KEY), future_bytes)
        state = engine.begin(args.batch_size, str(arm_root), lag)
        services = refits.RefitServices(
            frozen, initial_train, str(arm_root), budget, cache, **monitor_settings
        )
        rows, scores = [], {}
        for index in range(stop):
            due = [j for j in state.held if 0 < args.release_after <= index - j]
            if due:
                state = engine.begin(args.batch_size, str(arm_root), lag, due, RELEASE_REASON)
            state, record = engine.handle_batch(services, policy, state, str(arm_root))
            rows_i, labels_i = truth[index]
            served = services.probability(record.champion, rows_i, f"batch_{index}")
            flagged = served >= services.predictor(record.champion).threshold
            rows.append(
                {**record.row(), "arm": policy_text,
                 "roc_auc": round(gate.roc_auc(labels_i, served), 4),
                 "flagged_share": round(float(flagged.mean()), 4),
                 "caught": int((flagged & (labels_i == 1)).sum()),
                 "readmissions": int(labels_i.sum())}
            )  # fmt: skip
            print(json.dumps(rows[-1], default=str), flush=True)
            scores[index] = served
        return {"policy": policy_text, "timeline": rows, "scores": scores}

    def pooled(arm: dict, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.concatenate([truth[i][1] for i in range(first, stop)])
        return labels, np.concatenate([arm["scores"][i] for i in range(first, stop)])

    def deployments(arm: dict, first: int, stop: int) -> int:
        return sum(r["deployed"] for r in arm["timeline"] if first <= r["batch_index"] < stop)

    # Tuning period: the cost is chosen here; no reported figure uses these batches.
    tuning_stop = min(args.tuning_batches, count)
    tuning_from = simulation.first_reported_batch(lag)
    if tuning_stop <= tuning_from:
        raise SystemExit(f"--tuning-batches must exceed {tuning_from}: nothing to tune on")
    reference = replay(REFERENCE, tuning_stop)
    target = gate.roc_auc(*pooled(reference, tuning_from, tuning_stop))
    candidates = []
    for cost in COST_GRID:
        arm = replay(f"cost:{cost:g}", tuning_stop)
        auc = gate.roc_auc(*pooled(arm, tuning_from, tuning_stop))
        candidates.append(
            {
                "cost": cost,
                "roc_auc": round(auc, 4),
                "deployments": deployments(arm, 0, tuning_stop),
            }
        )
        print(json.dumps({"tuning": candidates[-1]}), flush=True)
    good = [c for c in candidates if c["roc_auc"] >= round(target, 4) - GOAL_AUC_GAP]
    chosen = (
        max(good, key=lambda c: c["cost"]) if good else max(candidates, key=lambda c: c["roc_auc"])
    )
    tuning = {
        "batches": [0, tuning_stop - 1],
        "scored_batches": [tuning_from, tuning_stop - 1],
        "every_1_roc_auc": round(target, 4),
        "candidates": candidates,
        "chosen_cost": chosen["cost"],
    }
    report_from = max(tuning_from, tuning_stop)
    if report_from >= count:
        raise SystemExit(f"nothing to report: batches {report_from}+ of {count}")

    replay_started = time.perf_counter()
    ours = f"cost:{chosen['cost']:g}"
    labels = np.concatenate([truth[i][1] for i in range(report_from, count)])
    patients = np.concatenate(
        [truth[i][0]["patient_nbr"].astype(str).to_numpy() for i in range(report_from, count)]
    )
    reported = range(report_from, count)

    def summary(arm: dict) -> dict:
        rows = [r for r in arm["timeline"] if r["batch_index"] in reported]
        return {
            "roc_auc": round(gate.roc_auc(*pooled(arm, report_from, count)), 4),
            "deployments": deployments(arm, report_from, count),
            "retrainings": sum(r["retrained"] for r in rows),
            "alerts": sum(bool(r["alerts"]) for r in rows),
            "holds": sum(r["hold"] for r in rows),
            "alerts_by_kind": {
                kind: sum(kind in r["alerts"].split(",") for r in rows)
                for kind in engine.ALERT_KINDS
            },
            "flagged_share_per_batch": [r["flagged_share"] for r in rows],
            "caught": sum(r["caught"] for r in rows),
            "readmissions": sum(r["readmissions"] for r in rows),
        }

    def compared(name: str) -> dict:
        return patient_bootstrap(
            labels,
            pooled(arms[name], report_from, count)[1],
            pooled(arms[REFERENCE], report_from, count)[1],
            patients,
            args.n_bootstrap,
        )

    # The reported arms, in --arms order; each prints its summary as it finishes.
    arms, table, comparisons = {}, {}, {}
    for name in [ours if a == COST_ARM else a for a in args.arms]:
        arms[name] = replay(name, count)
        table[name] = summary(arms[name])
        print(json.dumps({"arm_summary": {"arm": name, **table[name]}}, default=str), flush=True)
        if REFERENCE not in arms:
            continue
        for other in [a for a in arms if a != REFERENCE]:
            label = f"{other} minus {REFERENCE}"
            if label not in comparisons:
                comparisons[label] = compared(other)
                line = {"paired_roc_auc_difference": {label: comparisons[label]}}
                print(json.dumps(line, default=str), flush=True)
    replay_seconds = time.perf_counter() - replay_started
    per_batch = {
        name: [
            round(a["roc_auc"] - b["roc_auc"], 4)
            for a, b in zip(arms[name]["timeline"], arms[REFERENCE]["timeline"], strict=True)
            if a["batch_index"] in reported
        ]
        for name in (ours, "every:4", "frozen")
        if name in arms
    }
    if args.out:
        plot_timeline(arms, report_from, budget, Path(args.out))
    shares = table[ours]["flagged_share_per_batch"] if ours in table else []
    return {
        "batches": count,
        "batch_size": args.batch_size,
        "label_lag_batches": lag,
        "alert_budget": budget,
        "release_after": args.release_after,
        "tuning_period": tuning,
        "reported_batches": [report_from, count - 1],
        "reported_rows": int(labels.size),
        "table": table,
        "paired_roc_auc_difference_by_patient": comparisons,
        "per_batch_roc_auc_minus_every_1": per_batch,
        "arms": list(arms),
        "goals": {
            "roc_auc_within_0.001_of_every_1": bool(
                table[ours]["roc_auc"] >= table[REFERENCE]["roc_auc"] - GOAL_AUC_GAP
            )
            if ours in table
            else None,
            "at_most_half_the_deployments": bool(
                2 * table[ours]["deployments"] <= table[REFERENCE]["deployments"]
            )
            if ours in table
            else None,
            "flagged_share_within_1.5_points": bool(max(abs(s - budget) for s in shares) <= 0.015)
            if shares
            else None,
        },
        "frozen_version": frozen_version,
        "frozen_family": frozen.family,
        "models_fitted": len(cache.fit_seconds),
        "fit_seconds_mean": round(float(np.mean(cache.fit_seconds)), 1) if cache.fit_seconds else 0,
        "monitor_runs": len(cache.monitor_seconds),
        "monitor_seconds_mean": round(float(np.mean(cache.monitor_seconds)), 1)
        if cache.monitor_seconds
        else 0,
        "setup_seconds": round(setup_seconds, 1),
        "replay_seconds": round(replay_seconds, 1),
        "cpus": os.cpu_count(),
    }


def plot_timeline(arms: dict, report_from: int, budget: float, path: Path) -> Path:
    """Flagged share per batch per arm (budget line), deployments and alerts as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (share_ax, event_ax) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for offset, (name, arm) in enumerate(arms.items()):
        x = [r["batch_index"] for r in arm["timeline"]]
        share_ax.plot(x, [r["flagged_share"] for r in arm["timeline"]], marker="o", label=name)
        deployed = [r["batch_index"] for r in arm["timeline"] if r["deployed"]]
        alerted = [r["batch_index"] for r in arm["timeline"] if r["alerts"]]
        event_ax.scatter(deployed, [offset] * len(deployed), marker="^", color="tab:green")
        event_ax.scatter(alerted, [offset + 0.2] * len(alerted), marker="x", color="tab:red")
    share_ax.axhline(budget, color="black", linewidth=0.8)
    share_ax.axhspan(budget - 0.015, budget + 0.015, color="grey", alpha=0.15)
    share_ax.axvline(report_from - 0.5, color="grey", linestyle="--")
    share_ax.set_ylabel("flagged share (band: budget ± 1.5 points)")
    share_ax.set_title("Served model per batch: left of the dashed line is the tuning period")
    share_ax.legend(fontsize=8)
    event_ax.set_yticks(range(len(arms)), list(arms))
    event_ax.set_xlabel("batch index")
    event_ax.set_title("deployments (^, after the batch) and alerts (x)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--max-batches", type=int, default=0, help="0 = all batches")
    parser.add_argument("--label-lag-batches", type=int, default=None, help="default: 30 days")
    parser.add_argument("--tuning-batches", type=int, default=8)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument(
        "--release-after",
        type=int,
        default=1,
        help="release a held batch this many batches later (0: never; see the docstring)",
    )
    parser.add_argument(
        "--families", default="", help="initial champion's families (empty: train's default)"
    )
    parser.add_argument("--trials-per-family", type=int, default=4)
    parser.add_argument("--out", default="timeline.png", help="the timeline plot ('' = none)")
    parser.add_argument("--work-dir", default="", help="keep the stores here (default: temp)")
    parser.add_argument(
        "--arms",
        type=lambda text: [a.strip() for a in text.split(",") if a.strip()],
        default=[*SCHEDULES, COST_ARM],
        help=f"reported arms in run order ('{COST_ARM}': the tuned cost; must include "
        f"{REFERENCE}; default: {','.join([*SCHEDULES, COST_ARM])})",
    )
    args = parser.parse_args(argv)
    unknown = [a for a in args.arms if a not in (*SCHEDULES, COST_ARM)]
    if unknown or REFERENCE not in args.arms or len(set(args.arms)) != len(args.arms):
        parser.error(
            f"--arms: among {','.join([*SCHEDULES, COST_ARM])}, once each, with {REFERENCE}"
        )
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        measured = run(Path(args.work_dir).resolve(), args)
    else:
        with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
            measured = run(Path(tmp), args)
    print(json.dumps(measured, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
