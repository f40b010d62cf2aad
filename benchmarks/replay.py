"""Replay with control arms: does drift-triggered retraining beat a frozen model and a schedule?

Three arms see the same ``future_data`` batches (``--batch-size`` rows, in file order):

* **frozen**: the initial champion, trained on the initial data only (checked with
  ``steps.simulate.trained_without_future_data``);
* **scheduled**: retrain after every ``--retrain-every`` k-th batch, no drift detection;
* **drift-triggered** (ours): ``steps.monitor.assess`` on every batch (drift against the rows the
  served model was fitted on and CBPE on its inputs, realised performance on the newest matured
  batch, thresholds = ``Thresholds()``, frozen on the tuning slice by ``benchmarks/drift.py``);
  retrain on DRIFT_DETECTED.

Both retraining arms use the loop's own rules (``steps.monitoring.loop``): labels mature after
``--label-lag-batches`` (default: 30 days at the batch size), retraining needs two matured
batches, trains on ``initial_train`` + every matured batch but the newest, and the challenger
must pass the registry gate (``steps.evaluation.gate.judge``, register's defaults) on the newest
matured batch, with the patients it was trained on left out. To fit one run on a shared 2-core
machine, a retrained model is the initial champion's pipeline (same family and hyper-parameters,
``sklearn.base.clone``) refitted on the larger training set and calibrated on
``initial_validation`` like ``train`` does, without a new search; a model trained on the same
matured batches is fitted once and reused by both arms. (The full loop with entry points, Ray Tune
and the registry is ``mlflow run . -e simulate``.)

A tuning period comes first: on batches ``0 .. --tuning-batches - 1`` the drift arm is replayed
with each ``important_drift_share`` of ``TUNING_GRID`` (the reason that fires on real batches; the
other thresholds stay as frozen) and the fewest-retrainings value whose pooled ROC-AUC there (from
batch ``label lag + 2``) is at least the scheduled arm's is kept (else the best ROC-AUC). Then the
three arms replay every batch with that value.

Reported, on the pooled label-eligible rows of the batches after the tuning period (and
``>= label lag + 2``, the first batch a retrained model can serve), minus the patients of the
threshold-tuning slice: each arm's ROC-AUC and the paired bootstrap 95% CI (``gate.compare_auc``)
of drift-triggered minus frozen, drift-triggered minus scheduled and scheduled minus frozen;
retrainings and promotions per arm on those batches (and over the whole replay); the drift arm's
estimated (CBPE) vs realised ROC-AUC per batch. Goals: drift-triggered >= scheduled with fewer
retrainings, and drift-triggered - frozen >= +0.02 with the CI's lower bound above 0. The last
line printed is one JSON object.

    python benchmarks/replay.py [--batch-size 5000] [--retrain-every 4] [--tuning-batches 8]
        [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from steps.evaluation import evaluate
from steps.orchestration import loop, simulation
from steps.training import data as training_data
from steps.training import families, fitting

GOAL_GAIN = 0.02
# important_drift_share values tried on the tuning period (0.15: frozen on the tuning slice).
TUNING_GRID = (0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75)


def _use_stores(work_dir: Path) -> None:
    """Point the data store and MLflow at ``work_dir`` (before any step module reads them)."""
    os.environ["HEALTH_PREDICT_DATA_URI"] = str(work_dir / "data")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir / 'mlflow.db'}"
    os.environ["HEALTH_PREDICT_ARTIFACT_URI"] = (work_dir / "mlartifacts").as_uri()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@dataclass
class Arm:
    """One policy's served model per batch, its retrainings and per-batch record."""

    name: str
    timeline: list[dict] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # batch index -> scored rows (tuning patients out)
    retrained_at: list[int] = field(default_factory=list)
    promoted_at: list[int] = field(default_factory=list)

    def retrainings(self, first: int = 0) -> int:
        """Retrainings at batches ``>= first``."""
        return sum(index >= first for index in self.retrained_at)

    def promotions(self, first: int = 0) -> int:
        """Promotions at batches ``>= first``."""
        return sum(index >= first for index in self.promoted_at)

    def pooled(self, first: int, stop: int):
        """The scored rows of batches ``first`` to ``stop - 1``, pooled."""
        import pandas as pd

        return pd.concat([self.scores[i] for i in range(first, stop)], ignore_index=True)


def run(work_dir: Path, args) -> dict[str, object]:
    """Set up the initial champion, replay the three arms, and return the measurements."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _use_stores(work_dir)
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.base import clone

    from custom_pyfunc import columns, features
    from custom_pyfunc.model import log_readmission_model
    from custom_pyfunc.predictor import ReadmissionPredictor
    from steps.core import config, storage, tracking
    from steps.data import labelled
    from steps.evaluation import gate, subgroups
    from steps.monitoring import cbpe, tuning
    from steps.monitoring.assess import assess
    from steps.monitoring.decision import DRIFT_DETECTED, Thresholds, all_reasons
    from steps.monitoring.decision import decision as decide

    started = time.perf_counter()
    root = config.data_uri()
    if not storage.exists(storage.join(root, config.FUTURE_DATA_KEY)):
        tracking.run_entry_point("ingest", {})
        tracking.run_entry_point("split", {})
    frozen_version = loop.champion_version()
    if frozen_version is None:
        budget = config.project_defaults("simulate")
        train_run_id = loop.run_training(
            None, families=budget["families"], trials_per_family=budget["trials_per_family"]
        )
        frozen_version = loop.run_registration(train_run_id, None).champion_after
    if not simulation.trained_without_future_data(frozen_version):
        raise RuntimeError(f"champion version {frozen_version} was trained with future data")
    frozen_uri = loop.model_uri(frozen_version)
    frozen = mlflow.pyfunc.load_model(frozen_uri).unwrap_python_model()._predictor
    setup_seconds = time.perf_counter() - started

    read = lambda key: columns.read_encounters_csv(storage.read_bytes(storage.join(root, key)))  # noqa: E731
    initial_train = read(config.INITIAL_TRAIN_KEY)
    validation, val_labels = evaluate.labelled_rows(read(config.INITIAL_VALIDATION_KEY))
    val_features = features.engineer_features(features.clean_data(validation))
    tuning_patients = tuning.split_by_patient(read(config.INITIAL_TEST_KEY))[0]["patient_nbr"]
    future = read(config.FUTURE_DATA_KEY)
    count = math.ceil(len(future) / args.batch_size)
    count = min(count, args.max_batches) if args.max_batches > 0 else count
    batches = [future.iloc[i * args.batch_size : (i + 1) * args.batch_size] for i in range(count)]
    evaluated = [evaluate.labelled_rows(batch) for batch in batches]  # (rows, labels) per batch
    lag = (
        loop.default_label_lag(args.batch_size)
        if args.label_lag_batches is None
        else args.label_lag_batches
    )
    thresholds = Thresholds()
    config.ensure_experiment("HealthPredict_Replay_Benchmark")
    folder = Path(tempfile.mkdtemp(dir=work_dir))

    models: dict[tuple, dict] = {(): {"predictor": frozen, "uri": frozen_uri, "key": "frozen"}}
    probabilities: dict[tuple[str, int], np.ndarray] = {}
    fit_seconds = []

    # The initial files every refit is fitted and calibrated on, for its data tags.
    initial_uris = {
        "initial_train": storage.join(root, config.INITIAL_TRAIN_KEY),
        "initial_validation": storage.join(root, config.INITIAL_VALIDATION_KEY),
    }
    initial_hashes = {n: labelled.read_labelled(u).sha256 for n, u in initial_uris.items()}

    def model_for(train_indices: tuple[int, ...]) -> dict:
        """The initial pipeline refitted on initial_train + the given matured batches (cached)."""
        if train_indices in models:
            return models[train_indices]
        begun = time.perf_counter()
        raw = pd.concat([initial_train, *(batches[j] for j in train_indices)], ignore_index=True)
        rows, labels = evaluate.labelled_rows(raw[raw[columns.LABEL_COLUMN].notna()])
        pipeline = clone(frozen.estimator)
        pipeline.fit(
            features.engineer_features(features.clean_data(rows)),
            labels,
            **families.fit_params(frozen.family, "model__"),
        )
        calibrated, _ = fitting.calibrate(pipeline, val_features, val_labels, seed=42)
        val_probability = (calibrated or pipeline).predict_proba(val_features)[:, 1]
        predictor = ReadmissionPredictor(
            estimator=pipeline,
            threshold=float(np.quantile(val_probability, 0.9)),  # flag the top 10%
            family=frozen.family,
            calibrated=calibrated,
        )
        # The run records what it was fitted on, as ``train`` does, so that ``assess`` compares
        # batches with these rows and leaves their patients out of the realised performance.
        extra = raw.iloc[len(initial_train) :]
        extra_uri = storage.write_bytes(
            str(folder / f"extra_train_0-{train_indices[-1]}.csv"),
            columns.to_raw_csv_bytes(extra[extra[columns.LABEL_COLUMN].notna()]),
        )
        data_tags = training_data.data_tags(
            {**initial_hashes, "extra_train": labelled.read_labelled(extra_uri).sha256},
            {**initial_uris, "extra_train": extra_uri},
        )
        with mlflow.start_run(
            experiment_id=config.ensure_experiment("HealthPredict_Replay_Benchmark"),
            run_name=f"refit-through-batch-{train_indices[-1]}",
            tags=data_tags,
        ):
            uri = log_readmission_model(predictor).model_uri
        fit_seconds.append(time.perf_counter() - begun)
        models[train_indices] = {
            "predictor": predictor,
            "uri": uri,
            "key": f"refit_0-{train_indices[-1]}",
            "patients": set(rows["patient_nbr"]),
        }
        return models[train_indices]

    def probability(model: dict, index: int) -> np.ndarray:
        if (model["key"], index) not in probabilities:
            rows = evaluated[index][0]
            probabilities[model["key"], index] = model["predictor"].probability(rows)
        return probabilities[model["key"], index]

    def batch_file(index: int, labelled: bool) -> str:
        batch = batches[index]
        kept = batch if labelled else batch.drop(columns=[columns.LABEL_COLUMN])
        name = f"batch_{index:05d}{'_labelled' if labelled else ''}.csv"
        return storage.write_bytes(str(folder / name), columns.to_raw_csv_bytes(kept))

    def gate_passes(challenger: dict, champion: dict, gate_index: int) -> tuple[bool, str]:
        """The registry gate on the gate batch, without the challenger's training patients."""
        rows, labels = evaluated[gate_index]
        keep = ~rows["patient_nbr"].isin(challenger["patients"]).to_numpy()
        challenger_p = probability(challenger, gate_index)[keep]
        verdict = gate.judge(
            labels[keep],
            challenger_p,
            (challenger_p >= challenger["predictor"].threshold).astype(int),
            subgroups.subgroups_of(rows[keep]),
            probability(champion, gate_index)[keep],
            gate.GatePolicy(),
        )
        return verdict.promote, verdict.reason

    summaries: dict[tuple, dict] = {}

    def drift_summary(champion: dict, index: int, matured: int | None) -> dict:
        """``assess`` of batch ``index`` for ``champion`` (cached: thresholds only re-decide)."""
        key = (champion["key"], index, matured)
        if key not in summaries:
            summaries[key] = assess(
                batch_file(index, labelled=False),
                model_uri=champion["uri"],
                thresholds=thresholds,
                labelled_uri=batch_file(matured, labelled=True) if matured is not None else None,
            )[0]
        return summaries[key]

    def replay(name: str, retrain_every: int, policy: Thresholds, stop: int) -> Arm:
        """One arm over batches ``0`` to ``stop - 1`` (``retrain_every`` 0: drift-triggered;
        -1: never, frozen)."""
        arm = Arm(name)
        state = loop.LoopState(loop_id=name, batch_size=args.batch_size, label_lag_batches=lag)
        champion = models[()]
        for index in range(stop):
            rows, labels = evaluated[index]
            served = probability(champion, index)
            record = {"arm": name, "batch": index, "served": champion["key"]}
            auc = float(gate.roc_auc(labels, served))
            record["roc_auc"] = round(auc, 4)
            record["roc_auc_se"] = round(
                cbpe.hanley_mcneil_se(auc, int(labels.sum()), int((1 - labels).sum())), 4
            )
            decision = None
            if retrain_every == 0:
                matured = loop.matured_indices(state, index)
                summary = drift_summary(champion, index, matured[-1] if matured else None)
                reasons = all_reasons(summary, policy)
                decision = decide(reasons)
                record["estimated_roc_auc"] = round(
                    summary["estimated_performance"]["batch"]["roc_auc"], 4
                )
                record["important_drift_share"] = summary["important_drift_share"]
                record["decision"] = decision
                # What fired, without the figures (e.g. "prediction drift").
                record["reasons"] = [r.split(":")[0].split(" (")[0] for r in reasons]
            if retrain_every >= 0 and loop.should_retrain(
                decision, state, index, max(retrain_every, 0)
            ):
                plan = loop.retraining_plan(state, index)
                challenger = model_for(tuple(plan.train_indices))
                arm.retrained_at.append(index)
                promote, reason = gate_passes(challenger, champion, plan.gate_index)
                record["retrained"] = challenger["key"]
                record["promoted"] = promote
                record["gate_reason"] = reason
                if promote:
                    champion = challenger
                    arm.promoted_at.append(index)
            state.batches_seen.append(index)
            arm.timeline.append(record)
            scored = pd.DataFrame(
                {"patient_nbr": rows["patient_nbr"].to_numpy(), "label": labels,
                 "score": served}
            )  # fmt: skip
            arm.scores[index] = tuning.without_patients(scored, tuning_patients)
        return arm

    def pooled_auc(arm: Arm, first: int, stop: int) -> float:
        rows = arm.pooled(first, stop)
        return float(gate.roc_auc(rows["label"].to_numpy(), rows["score"].to_numpy()))

    # The tuning period: batches before --tuning-batches choose the drift arm's
    # important_drift_share (the reason that fires on real batches); no reported figure uses them.
    tuning_stop = min(args.tuning_batches, count)
    tuning_from = simulation.first_reported_batch(lag)
    candidates = []
    if tuning_stop > tuning_from:
        schedule_in_tuning = replay("scheduled", args.retrain_every, thresholds, tuning_stop)
        # Compared at the 4 decimals reported, so a tie printed as a tie counts as one.
        target = round(pooled_auc(schedule_in_tuning, tuning_from, tuning_stop), 4)
        for share in TUNING_GRID:
            policy = dataclasses.replace(thresholds, important_drift_share=share)
            arm = replay("drift_triggered", 0, policy, tuning_stop)
            candidates.append(
                {"important_drift_share": share,
                 "roc_auc": round(pooled_auc(arm, tuning_from, tuning_stop), 4),
                 "retrainings": arm.retrainings()}
            )  # fmt: skip
            print(json.dumps({"tuning": candidates[-1]}), flush=True)
        good = [c for c in candidates if c["roc_auc"] >= target] or [
            max(candidates, key=lambda c: c["roc_auc"])
        ]
        chosen = min(good, key=lambda c: (c["retrainings"], -c["roc_auc"]))
        policy = dataclasses.replace(
            thresholds, important_drift_share=chosen["important_drift_share"]
        )
        tuning_result = {
            "batches": [0, tuning_stop - 1],
            "scored_batches": [tuning_from, tuning_stop - 1],
            "scheduled": {"roc_auc": target,
                          "retrainings": schedule_in_tuning.retrainings()},
            "candidates": candidates,
            "chosen_important_drift_share": chosen["important_drift_share"],
        }  # fmt: skip
    else:
        policy, tuning_result = thresholds, None
    report_from = max(simulation.first_reported_batch(lag), tuning_stop)
    if report_from >= count:
        raise SystemExit(f"nothing to report: batches {report_from}+ of {count}")

    replay_started = time.perf_counter()
    arms = [
        replay("frozen", -1, policy, count),
        replay("scheduled", args.retrain_every, policy, count),
        replay("drift_triggered", 0, policy, count),
    ]
    for arm in arms:
        for record in arm.timeline:
            print(json.dumps(record), flush=True)
    replay_seconds = time.perf_counter() - replay_started

    pooled = {arm.name: arm.pooled(report_from, count) for arm in arms}
    labels = pooled["frozen"]["label"].to_numpy()
    for arm in arms:
        assert (pooled[arm.name]["label"].to_numpy() == labels).all()

    def difference(first: str, second: str) -> dict:
        comparison = gate.compare_auc(
            labels, pooled[first]["score"].to_numpy(), pooled[second]["score"].to_numpy()
        )
        d = comparison.difference
        return {
            "estimate": round(d.estimate, 4),
            "ci95": [round(d.low, 4), round(d.high, 4)],
        }

    gains = {
        "drift_triggered_minus_frozen": difference("drift_triggered", "frozen"),
        "drift_triggered_minus_scheduled": difference("drift_triggered", "scheduled"),
        "scheduled_minus_frozen": difference("scheduled", "frozen"),
    }
    by_name = {arm.name: arm for arm in arms}
    drift_rows = [
        r for r in by_name["drift_triggered"].timeline
        if "estimated_roc_auc" in r and r["batch"] >= report_from
    ]  # fmt: skip
    estimate_errors = [r["estimated_roc_auc"] - r["roc_auc"] for r in drift_rows]
    ours, scheduled = by_name["drift_triggered"], by_name["scheduled"]
    return {
        "batches": count,
        "batch_size": args.batch_size,
        "label_lag_batches": lag,
        "days_per_batch": round(args.batch_size / loop.ENCOUNTERS_PER_DAY, 1),
        "retrain_every": args.retrain_every,
        "tuning_period": tuning_result,
        "reported_from_batch": report_from,
        "reported_rows": len(labels),
        "tuning_patients_left_out": int(tuning_patients.nunique()),
        "roc_auc": {
            name: round(float(gate.roc_auc(labels, frame["score"].to_numpy())), 4)
            for name, frame in pooled.items()
        },
        "gains": gains,
        # Counted on the reported batches (the whole replay in brackets).
        "retrainings": {a.name: [a.retrainings(report_from), a.retrainings()] for a in arms},
        "promotions": {a.name: [a.promotions(report_from), a.promotions()] for a in arms},
        "drift_decisions": sum(r.get("decision") == DRIFT_DETECTED for r in drift_rows),
        "cbpe_minus_realised_roc_auc": {
            "mean": round(float(np.mean(estimate_errors)), 4),
            "min": round(float(np.min(estimate_errors)), 4),
            "max": round(float(np.max(estimate_errors)), 4),
        },
        "thresholds": policy.as_dict(),
        "frozen_version": frozen_version,
        "models_fitted": len(models) - 1,
        "fit_seconds_mean": round(float(np.mean(fit_seconds)), 1) if fit_seconds else 0.0,
        "setup_seconds": round(setup_seconds, 1),
        "replay_seconds": round(replay_seconds, 1),
        "cpus": os.cpu_count(),
        "goal_gain": GOAL_GAIN,
        "gain_goal_met": bool(
            gains["drift_triggered_minus_frozen"]["estimate"] >= GOAL_GAIN
            and gains["drift_triggered_minus_frozen"]["ci95"][0] > 0
        ),
        "schedule_goal_met": bool(
            gains["drift_triggered_minus_scheduled"]["estimate"] >= 0
            and ours.retrainings(report_from) < scheduled.retrainings(report_from)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--max-batches", type=int, default=0, help="0 = all batches")
    parser.add_argument("--retrain-every", type=int, default=4, help="the scheduled arm's k")
    parser.add_argument("--label-lag-batches", type=int, default=None, help="default: 30 days")
    parser.add_argument(
        "--tuning-batches", type=int, default=8,
        help="the first N batches: a tuning period that chooses the drift arm's "
        "important_drift_share and is left out of every reported figure (0: no tuning period)",
    )  # fmt: skip
    parser.add_argument("--work-dir", default="", help="keep the stores here (default: temp)")
    args = parser.parse_args(argv)
    if args.retrain_every < 1:
        parser.error("--retrain-every must be >= 1")
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
        measured = run(Path(args.work_dir), args)
    else:
        with tempfile.TemporaryDirectory(prefix="replay-") as tmp:
            measured = run(Path(tmp), args)
    print(json.dumps(measured, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
