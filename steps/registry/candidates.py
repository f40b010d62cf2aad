"""The challenger's candidates and evaluation data: family-best runs, the best one, labelled rows
that no candidate was fitted on, and the models' scores on them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from custom_pyfunc import columns
from steps.core import config, storage, tracking
from steps.core.tracking import DATA_TAG_PREFIX, MODEL_URI_TAG, ROLE_TAG
from steps.data import labelled
from steps.evaluation import evaluate, model_card, patients


class RegistrationError(RuntimeError):
    """Nothing to register, or the evaluation data or a model cannot support a decision."""


@dataclass(frozen=True)
class EvaluationData:
    """Labelled, label-eligible evaluation rows and where they came from."""

    frame: pd.DataFrame
    labels: np.ndarray
    summary: model_card.EvaluationSummary


def latest_training_run_id() -> str:
    """The newest finished training run, in whichever experiment it was logged."""
    run_id = tracking.latest_training_run_id()
    if run_id is None:
        raise RegistrationError("no finished training run found: run train first")
    return run_id


def default_eval_data_uri(client: MlflowClient, train_run_id: str) -> str:
    """``initial_test`` of the data store the training run read (its ``resolved.data_uri``),
    else of the configured data store."""
    params = client.get_run(train_run_id).data.params
    data_uri = params.get(f"{config.RESOLVED_PREFIX}data_uri") or config.data_uri()
    return storage.join(data_uri, config.INITIAL_TEST_KEY)


def family_best_runs(client: MlflowClient, train_run_id: str) -> list[Run]:
    """The family-best runs nested in the training run (or one level deeper, in family runs)."""
    experiment_id = client.get_run(train_run_id).info.experiment_id

    def children(parent_run_id: str, role: str) -> list[Run]:
        return client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`{ROLE_TAG}` = '{role}'"
            ),
        )

    found = children(train_run_id, "family_best")
    if not found:
        for family_run in children(train_run_id, "family_parent"):
            found += children(family_run.info.run_id, "family_best")
    return found


def best_family_run(runs: list[Run]) -> Run:
    """The family-best run whose logged model has the highest selection metric, found with
    ``mlflow.search_logged_models`` over the runs' models (ties: the later run id)."""
    metric = tracking.SELECTION_METRIC
    by_id = {run.info.run_id: run for run in runs if MODEL_URI_TAG in run.data.tags}
    if by_id:
        quoted = ", ".join(f"'{run_id}'" for run_id in sorted(by_id))
        models = mlflow.search_logged_models(
            experiment_ids=sorted({run.info.experiment_id for run in by_id.values()}),
            filter_string=f"source_run_id IN ({quoted}) AND metrics.{metric} >= 0",
            order_by=[
                {"field_name": f"metrics.{metric}", "ascending": False},
                {"field_name": "source_run_id", "ascending": False},
            ],
            max_results=1,
            output_format="list",
        )
        if models:
            return by_id[models[0].source_run_id]
    raise RegistrationError(
        f"no family-best run whose logged model has metric {tracking.SELECTION_METRIC} "
        f"(and tag {MODEL_URI_TAG} on the run)"
    )


def load_evaluation_data(
    eval_data_uri: str, target: str = columns.DEFAULT_TARGET
) -> EvaluationData:
    """Read labelled raw-format CSV(s) (comma-separated files or folders) and keep eligible rows."""
    try:
        files = labelled.read_labelled(eval_data_uri)
    except labelled.LabelledDataError as exc:
        raise RegistrationError(f"evaluation data: {exc}") from exc
    frame, labels = evaluate.labelled_rows(files.frame, target)
    return EvaluationData(
        frame=frame.reset_index(drop=True),
        labels=labels,
        summary=model_card.EvaluationSummary(
            uris=files.uris,
            sha256=files.sha256,
            rows=len(frame),
            excluded_rows=len(files.frame) - len(frame),
            positives=int(labels.sum()),
            target=target,
        ),
    )


def disjoint_from_training(
    evaluation: EvaluationData, tags: dict[str, str]
) -> tuple[EvaluationData, dict[str, str]]:
    """The evaluation rows whose patients the model never saw in training, asserted, and the
    counts as tags."""
    try:
        training = patients.training_patients(tags)
        if training is None:
            return evaluation, {"patient_overlap_check": "not possible: no training data URIs"}
        disjoint = patients.disjoint_rows(evaluation.frame, training)
    except patients.PatientOverlapError as exc:
        raise RegistrationError(f"evaluation data: {exc}") from exc
    frame = evaluation.frame[disjoint.keep].reset_index(drop=True)
    labels = evaluation.labels[disjoint.keep]
    summary = replace(
        evaluation.summary,
        rows=len(frame),
        positives=int(labels.sum()),
        patient_overlap_rows=disjoint.rows_excluded,
        patient_overlap_patients=disjoint.patients_excluded,
    )
    tags = {"patient_overlap_check": "passed", **disjoint.tags()}
    return EvaluationData(frame=frame, labels=labels, summary=summary), tags


def predict(model_uri: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(probability_score, prediction)`` of the pyfunc at ``model_uri`` on the input columns."""
    model = mlflow.pyfunc.load_model(model_uri)
    inputs = frame[[c for c in columns.INPUT_COLUMNS if c in frame.columns]]
    output = pd.DataFrame(model.predict(inputs))
    missing = {"probability_score", "prediction"} - set(output.columns)
    if missing or len(output) != len(frame):
        raise RegistrationError(
            f"{model_uri} returned {len(output)} rows for {len(frame)}"
            + (f" and lacks column(s) {sorted(missing)}" if missing else "")
        )
    probability = output["probability_score"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(probability) & (probability >= 0) & (probability <= 1)):
        raise RegistrationError(f"{model_uri} returned probabilities outside [0, 1]")
    return probability, output["prediction"].to_numpy().astype(np.int8)


def training_data_files(
    client: MlflowClient, source: Run, train_run_id: str
) -> list[model_card.DataFile]:
    """Data hashes recorded on the source (or training) run, with row counts from split's manifest
    (rows of the file) or else the training run's ``<name>_rows`` parameters (labelled rows)."""
    training_run = client.get_run(train_run_id)
    tags = {**training_run.data.tags, **source.data.tags}
    manifest_uri = storage.join(config.data_uri(), config.PROCESSED_MANIFEST_KEY)
    rows_by_hash = {}
    if storage.exists(manifest_uri):
        files = storage.read_json(manifest_uri).get("files", {})
        rows_by_hash = {entry["sha256"]: entry.get("rows") for entry in files.values()}
    files = []
    for key, sha256 in sorted(tags.items()):
        if key.startswith(DATA_TAG_PREFIX) and key.endswith("_sha256"):
            name = key[len(DATA_TAG_PREFIX) : -len("_sha256")]
            rows = rows_by_hash.get(sha256) or training_run.data.params.get(f"{name}_rows")
            files.append(model_card.DataFile(name, sha256, int(rows) if rows else None))
    return files


def evaluation_target(client: MlflowClient, source: Run, train_run_id: str) -> str:
    """The label definition the source model was trained on (``30d`` when none was logged)."""
    training_params = client.get_run(train_run_id).data.params
    return source.data.params.get("target") or training_params.get("target", columns.DEFAULT_TARGET)
