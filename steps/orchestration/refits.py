"""In-process retraining for the engine (:mod:`steps.orchestration.engine`): the replay's services.

A challenger is the frozen champion's pipeline (same family and hyper-parameters,
``sklearn.base.clone``, no new search) refitted on ``initial_train`` plus the matured batches the
loop hands it (``loop.retraining_inputs``: every usable matured batch but the newest). It is
served through ``fitting.recalibrate``, the rule ``train`` applies when retraining: calibrated on
the calibration half of the newest matured batch (``loop.calibration_rows``) without the patients
it was trained on, its alert threshold set on every row of that half. The registry gate
(``gate.judge``) then judges it against the champion on the other half, without the patients it
was trained or calibrated on (what ``register``'s exclusions leave of that batch), with the
deployment cost the policy asks for.

The monitor is the ``monitor`` entry point's own assessment (``steps.monitoring.assess.assess``)
of the served model held here, on the inputs the DAG gives it (``loop.monitor_inputs``).

Refits, scores, gate verdicts and monitor summaries are cached in a :class:`RefitCache` shared by
the replay's arms: a model trained on the same batches is fitted once, and a batch is assessed
once per served model.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import clone

from custom_pyfunc import columns, features
from custom_pyfunc.predictor import ReadmissionPredictor
from steps.core import storage
from steps.core.tracking import DATA_TAG_PREFIX
from steps.evaluation import evaluate, gate, subgroups
from steps.evaluation.patients import patient_ids
from steps.monitoring import assess
from steps.monitoring.decision import Thresholds
from steps.orchestration import loop
from steps.orchestration.engine import Outcome
from steps.training import families, fitting

FROZEN = "frozen"


@dataclass
class RefitCache:
    """Refitted models (key -> predictor and training patients), scores and gate verdicts."""

    predictors: dict[str, ReadmissionPredictor] = field(default_factory=dict)
    training_patients: dict[str, set] = field(default_factory=dict)
    scores: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    verdicts: dict[tuple, gate.GateDecision] = field(default_factory=dict)
    fit_seconds: list[float] = field(default_factory=list)
    lineage: dict[str, dict[str, str]] = field(default_factory=dict)
    summaries: dict[tuple, dict] = field(default_factory=dict)
    monitor_seconds: list[float] = field(default_factory=list)


def _read(uri: str) -> pd.DataFrame:
    return columns.read_encounters_csv(storage.read_bytes(uri))


def _engineered(frame: pd.DataFrame) -> pd.DataFrame:
    return features.engineer_features(features.clean_data(frame))


@dataclass
class RefitServices:
    """One arm's served model (``current``) over the shared cache; no monitoring by default
    (``assess``: a callable ``(state, batch, champion_key, predictor) -> summary``)."""

    frozen: ReadmissionPredictor
    initial_train: pd.DataFrame
    data_uri: str
    alert_budget: float
    cache: RefitCache
    gate_policy: gate.GatePolicy = field(default_factory=gate.GatePolicy)
    seed: int = 42
    assess: object = None
    current: str = FROZEN
    # The monitor (``monitored``): its thresholds, the held-out baseline, the frozen model's
    # lineage tags (training data URIs), the training file behind ``initial_train`` and a token
    # naming this replay's models in the score cache.
    monitored: bool = False
    thresholds: Thresholds | None = None
    baseline_uri: str = ""
    frozen_lineage: dict[str, str] = field(default_factory=dict)
    initial_train_uri: str = ""
    run_token: str = "replay"

    def __post_init__(self) -> None:
        self.cache.predictors.setdefault(FROZEN, self.frozen)

    def champion(self) -> str:
        return self.current

    def predictor(self, key: str) -> ReadmissionPredictor:
        """The model a key names."""
        return self.cache.predictors[key]

    def probability(self, key: str, frame: pd.DataFrame, frame_key: str) -> np.ndarray:
        """Model ``key``'s probabilities on ``frame`` (cached under ``frame_key``)."""
        if (key, frame_key) not in self.cache.scores:
            self.cache.scores[key, frame_key] = self.predictor(key).probability(frame)
        return self.cache.scores[key, frame_key]

    def monitor(self, state: loop.LoopState, batch: loop.Batch, champion: str) -> dict | None:
        """The ``monitor``'s assessment (``steps.monitoring.assess.assess``, nothing published)
        of the batch with the served model held here, on the inputs the DAG gives it
        (``loop.monitor_inputs``); cached per (batch, model, usable matured batches), which is
        everything it depends on, so arms serving the same model share it. ``assess`` replaces
        it (a test's stand-in)."""
        if self.assess is not None:
            return self.assess(state, batch, champion, self.predictor(champion))
        if not self.monitored:
            return None
        inputs = loop.monitor_inputs(state, batch, self.data_uri)
        key = (batch.index, champion, tuple(loop.usable_matured(state, batch.index)))
        if key not in self.cache.summaries:
            started = time.perf_counter()
            model = assess.InProcessModel(
                self.predictor(champion), f"{self.run_token}-{champion}",
                self.cache.lineage.get(champion, self.frozen_lineage), self.alert_budget,
            )  # fmt: skip
            self.cache.summaries[key] = assess.assess(
                inputs["batch_uri"], inputs["recent_uri"] or None, champion,
                baseline_uri=self.baseline_uri, thresholds=self.thresholds,
                labelled_uri=inputs["labelled_uri"] or None, model=model,
            )  # fmt: skip
            self.cache.monitor_seconds.append(time.perf_counter() - started)
        return self.cache.summaries[key]

    def _refit(self, key: str, inputs: loop.RetrainingInputs) -> None:
        """Fit the challenger ``key`` and serve it through ``fitting.recalibrate`` on the
        calibration part of the newest matured batch (see the module docstring)."""
        started = time.perf_counter()
        raw = pd.concat([self.initial_train, _read(inputs.extra_train_uri)], ignore_index=True)
        rows, labels = evaluate.labelled_rows(raw[raw[columns.LABEL_COLUMN].notna()])
        pipeline = clone(self.frozen.estimator)
        pipeline.fit(
            _engineered(rows), labels, **families.fit_params(self.frozen.family, "model__")
        )
        patients = set(patient_ids(rows, "the training rows"))
        calibration_rows, calibration_labels = evaluate.labelled_rows(_read(inputs.calibration_uri))
        self.cache.predictors[key], _ = fitting.recalibrate(
            pipeline, self.frozen.family, calibration_rows, calibration_labels, patients,
            self.alert_budget, self.seed,
        )  # fmt: skip
        self.cache.training_patients[key] = patients | set(
            patient_ids(calibration_rows, "the calibration rows")
        )
        self.cache.lineage[key] = {
            f"{DATA_TAG_PREFIX}{name}_uri": uri
            for name, uri in (
                ("initial_train", self.initial_train_uri),
                ("extra_train", inputs.extra_train_uri),
                ("calibration", inputs.calibration_uri),
            )
            if uri
        }
        self.cache.fit_seconds.append(time.perf_counter() - started)

    def verdict(
        self, challenger: str, champion: str, gate_index: int, gate_rows: pd.DataFrame, cost: float
    ) -> gate.GateDecision:
        """The registry gate on the gate batch's rows whose patients the challenger was neither
        trained nor calibrated on (cached)."""
        key = (challenger, champion, gate_index, cost)
        if key not in self.cache.verdicts:
            unseen = ~np.isin(
                patient_ids(gate_rows, "the gate rows"),
                list(self.cache.training_patients[challenger]),
            )
            rows = gate_rows[unseen]
            frame_key = f"gate_{gate_index}_unseen_by_{challenger}"
            challenger_p = self.probability(challenger, rows, frame_key)
            threshold = self.predictor(challenger).threshold
            self.cache.verdicts[key] = gate.judge(
                columns.make_label(rows).to_numpy(),
                challenger_p,
                (challenger_p >= threshold).astype(int),
                subgroups.subgroups_of(rows),
                self.probability(champion, rows, frame_key),
                dataclasses.replace(self.gate_policy, deployment_cost=cost),
            )
        return self.cache.verdicts[key]

    def retrain(
        self, state: loop.LoopState, batch: loop.Batch, deployment_cost: float
    ) -> Outcome | None:
        plan = loop.retraining_plan(state, batch.index)
        inputs = loop.retraining_inputs(state, batch.index, self.data_uri)
        if plan is None or inputs is None:
            return None
        gate_rows, _ = evaluate.labelled_rows(_read(inputs.eval_data_uri))
        trained = plan.train_indices
        key = f"refit_{trained[0]}-{trained[-1]}_n{len(trained)}_gate_{plan.gate_index}"
        if key not in self.cache.predictors:
            self._refit(key, inputs)
        before = self.current
        if self.verdict(key, before, plan.gate_index, gate_rows, deployment_cost).promote:
            self.current = key
        return Outcome(train_run_id=key, champion_before=before, champion_after=self.current)
