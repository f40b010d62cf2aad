"""In-process retraining for the engine (:mod:`steps.orchestration.engine`): the replay's services.

A challenger is the frozen champion's pipeline (same family and hyper-parameters,
``sklearn.base.clone``, no new search) refitted on ``initial_train`` plus the matured batches the
loop hands it (``loop.retraining_inputs``: every usable matured batch but the newest). On the
newest matured batch, with the patients it was trained on left out, it is recalibrated
(``fitting.calibrate``) and then judged by the registry gate (``gate.judge``) against the champion,
with the deployment cost the policy asks for. Its alert threshold
(``evaluate.alert_budget_threshold``) is set on every row of that batch, returning patients
included: they are part of the population it will serve, so leaving them out flags more than the
budget.

Refits, scores and gate verdicts are cached in a :class:`RefitCache` shared by the replay's arms:
a model trained on the same batches is fitted once.
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
from steps.evaluation import evaluate, gate, subgroups
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
        if self.assess is None:
            return None
        return self.assess(state, batch, champion, self.predictor(champion))

    def _refit(self, key: str, extra_train_uri: str, gate_rows: pd.DataFrame) -> None:
        """Fit, recalibrate and threshold the challenger ``key`` (see the module docstring)."""
        started = time.perf_counter()
        raw = pd.concat([self.initial_train, _read(extra_train_uri)], ignore_index=True)
        rows, labels = evaluate.labelled_rows(raw[raw[columns.LABEL_COLUMN].notna()])
        pipeline = clone(self.frozen.estimator)
        pipeline.fit(
            _engineered(rows), labels, **families.fit_params(self.frozen.family, "model__")
        )
        patients = set(rows["patient_nbr"].astype(str))
        unseen = ~gate_rows["patient_nbr"].astype(str).isin(patients).to_numpy()
        gate_labels = columns.make_label(gate_rows).to_numpy()
        calibrated, _ = fitting.calibrate(
            pipeline, _engineered(gate_rows[unseen]), gate_labels[unseen], seed=self.seed
        )
        served = calibrated if calibrated is not None else pipeline
        threshold = evaluate.alert_budget_threshold(
            served.predict_proba(_engineered(gate_rows))[:, 1], self.alert_budget
        )
        self.cache.predictors[key] = ReadmissionPredictor(
            estimator=pipeline, threshold=threshold, family=self.frozen.family,
            calibrated=calibrated,
        )  # fmt: skip
        self.cache.training_patients[key] = patients
        self.cache.fit_seconds.append(time.perf_counter() - started)

    def verdict(
        self, challenger: str, champion: str, gate_index: int, gate_rows: pd.DataFrame, cost: float
    ) -> gate.GateDecision:
        """The registry gate on the gate batch's rows unseen by the challenger (cached)."""
        key = (challenger, champion, gate_index, cost)
        if key not in self.cache.verdicts:
            unseen = (
                ~gate_rows["patient_nbr"]
                .astype(str)
                .isin(self.cache.training_patients[challenger])
                .to_numpy()
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
        extra_train_uri, eval_data_uri = inputs
        gate_rows, _ = evaluate.labelled_rows(_read(eval_data_uri))
        trained = plan.train_indices
        key = f"refit_{trained[0]}-{trained[-1]}_n{len(trained)}_gate_{plan.gate_index}"
        if key not in self.cache.predictors:
            self._refit(key, extra_train_uri, gate_rows)
        before = self.current
        if self.verdict(key, before, plan.gate_index, gate_rows, deployment_cost).promote:
            self.current = key
        return Outcome(train_run_id=key, champion_before=before, champion_after=self.current)
