"""Embedded defaults and the environment variables that override them.

Every stage reads its locations from here, so the same code runs on a laptop (local folders, a
SQLite MLflow store) and in the cloud (S3 data store, a remote tracking server) by configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

import mlflow
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESOLVED_PREFIX = "resolved."
# MLflow's fallback experiment, where `mlflow run` puts runs when no experiment is named.
DEFAULT_EXPERIMENT_ID, DEFAULT_EXPERIMENT_NAME = "0", "Default"
# Tag on such a run: the experiment that holds the stage's run instead.
FILED_UNDER_TAG = "health_predict.filed_under"

logger = logging.getLogger("health_predict.config")
# The one log format of every command: time, level, logger, message.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

UCI_DATASET_URL = (
    "https://archive.ics.uci.edu/static/public/296/"
    "diabetes+130-us+hospitals+for+years+1999-2008.zip"
)
RAW_CSV_NAME = "diabetic_data.csv"
RAW_CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"

MODEL_NAME = "health-predict"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
PREVIOUS_CHAMPION_ALIAS = "previous-champion"
# The served model, by alias (moves with promotions and rollbacks).
CHAMPION_MODEL_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"


def model_version_uri(version: str | int) -> str:
    """The registry URI of one version of the project's model."""
    return f"models:/{MODEL_NAME}/{version}"


DATA_EXPERIMENT = "HealthPredict_Data"
TRAINING_EXPERIMENT = "HealthPredict_Training"
REGISTRY_EXPERIMENT = "HealthPredict_Registry"
MONITORING_EXPERIMENT = "HealthPredict_Monitoring"
SIMULATION_EXPERIMENT = "HealthPredict_Simulation"
DEPLOYMENT_EXPERIMENT = "HealthPredict_Deployment"

# Relative keys inside the data store.
RAW_DATA_KEY = "raw_data/diabetic_data.csv"
QUARANTINE_KEY = "raw_data/quarantine.csv"
INGEST_SUMMARY_KEY = "raw_data/ingest_summary.json"
PROCESSED_DIR = "processed_data"
INITIAL_TRAIN_KEY = f"{PROCESSED_DIR}/initial_train.csv"
INITIAL_VALIDATION_KEY = f"{PROCESSED_DIR}/initial_validation.csv"
INITIAL_TEST_KEY = f"{PROCESSED_DIR}/initial_test.csv"
FUTURE_DATA_KEY = f"{PROCESSED_DIR}/future_data.csv"
# Hashes and row counts of the four processed files, written by split after them.
PROCESSED_MANIFEST_KEY = f"{PROCESSED_DIR}/manifest.json"
CURRENT_BATCH_DIR = "current_batch_for_monitoring"
DRIFT_REPORTS_DIR = "drift_reports"
# Model scores of the reference/baseline files, per model id and file hash (steps.monitor).
SCORE_CACHE_DIR = "monitoring_cache/scores"
LOOP_STATE_KEY = "monitoring_state/loop_state.json"


def raw_data_source() -> str:
    """Where the raw dataset comes from: a URL, a CSV path or a zip path."""
    return os.environ.get("HEALTH_PREDICT_RAW_DATA") or UCI_DATASET_URL


def data_uri() -> str:
    """Root of the data store: a local folder (default ``<project>/data``) or ``s3://bucket/prefix``."""
    return os.environ.get("HEALTH_PREDICT_DATA_URI") or str(PROJECT_ROOT / "data")


def tracking_uri() -> str:
    """MLflow tracking URI: the env var, else a SQLite store in the project folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def artifact_root() -> str:
    """Where new experiments keep artifacts when the tracking store does not decide it."""
    return os.environ.get("HEALTH_PREDICT_ARTIFACT_URI") or (PROJECT_ROOT / "mlartifacts").as_uri()


def configure_logging() -> None:
    """Log INFO and above to stderr in ``LOG_FORMAT`` (each command calls this once)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def configure_mlflow() -> str:
    """Point the MLflow client at the configured tracking store and return its URI."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Make experiment ``name`` active (created if needed, artifacts under ``artifact_root()``).

    Under ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``). When the user chose its
    experiment (``--experiment-name``), that experiment is made active and the stage logs into
    that run. When nobody did, ``mlflow run`` put it in ``Default`` (with artifacts under
    ``./mlruns``): then the stage logs into a new run of ``name`` instead, tags the ``Default``
    run with where its work went, and says so in a warning.
    """
    configure_mlflow()
    client = mlflow.MlflowClient()
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        experiment_id = client.get_run(run_id).info.experiment_id
        if experiment_id != DEFAULT_EXPERIMENT_ID or name == DEFAULT_EXPERIMENT_NAME:
            mlflow.set_experiment(experiment_id=experiment_id)
            return experiment_id
        client.set_tag(run_id, FILED_UNDER_TAG, name)
        # From here on the stage's runs are new runs of `name`, not the Default one.
        for variable in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            os.environ.pop(variable, None)
        logger.warning(
            "mlflow run created run %s in experiment '%s'; this stage's run is filed under "
            "experiment '%s' instead (pass --experiment-name to choose)",
            run_id,
            DEFAULT_EXPERIMENT_NAME,
            name,
        )
    experiment_id = experiment_id_of(name)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def experiment_id_of(name: str) -> str:
    """The id of experiment ``name``, created (artifacts under ``artifact_root()``) if needed."""
    configure_mlflow()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A tracking server that proxies artifacts chooses the location itself.
    location = None if tracking_uri().startswith("http") else f"{artifact_root()}/{name}"
    return client.create_experiment(name, artifact_location=location)


def log_resolved_params(params: dict[str, object]) -> None:
    """Log the values a stage resolved (defaults filled in) as ``resolved.<key>`` params.

    ``mlflow run`` logs the entry point's parameters as given (often an empty "use the default")
    and MLflow params are immutable, so resolved values never reuse those keys.
    """
    mlflow.log_params({f"{RESOLVED_PREFIX}{key}": value for key, value in params.items()})


def project_defaults(entry_point: str) -> dict[str, object]:
    """The parameters MLproject declares for ``entry_point`` and their defaults (None: required)."""
    spec = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    parameters = spec["entry_points"][entry_point].get("parameters", {})
    return {
        name: (p.get("default") if isinstance(p, dict) else p) for name, p in parameters.items()
    }


def default_families() -> str:
    """``train``'s model families by default, as MLproject declares them (its one declaration;
    chosen on the tuning period by benchmarks/families.py)."""
    return str(project_defaults("train")["families"])


def _whole_number(text: str) -> int:
    """An integer option given as ``8`` or ``8.0`` (MLproject float parameters); not ``8.5``."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text}")
    return int(value)


def optional_whole_number(text: str) -> int | None:
    """A whole number, or None ("use the default") for the empty string."""
    return _whole_number(text) if text != "" else None


def boolean(text: str) -> bool:
    """``true`` or ``false`` (any case), as MLproject string parameters write them."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def _optional_text(text: str) -> str | None:
    """The text, or None ("resolved at run time") for the empty string."""
    return text if text != "" else None


def whole_numbers(value: str) -> list[int]:
    """Comma-separated whole numbers (e.g. batch indices) as a list; "" is the empty list."""
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {value!r}"
        ) from None


def entry_point_parser(
    entry_point: str,
    description: str,
    help_texts: dict[str, str],
    types: dict[str, Callable[[str], object]] | None = None,
) -> argparse.ArgumentParser:
    """A parser with one ``--<name>`` option per MLproject parameter of ``entry_point``.

    Defaults come from MLproject (the one place they are declared); whole-number defaults parse
    as int, other numbers as float, ``true``/``false`` as bool (``boolean``), the rest as text.
    An empty string means "the default, resolved at run time" and parses as None, here only;
    ``types`` overrides the type of a parameter (e.g. ``optional_whole_number``). ``help_texts``
    must describe every parameter.
    """
    defaults = project_defaults(entry_point)
    undocumented = sorted(set(defaults) - set(help_texts))
    if undocumented:
        raise ValueError(f"{entry_point}: no help text for {undocumented}")
    parser = argparse.ArgumentParser(
        prog=f"python -m steps.{entry_point}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, default in defaults.items():
        if default is None:
            kind = str
        elif isinstance(default, bool) or str(default).lower() in ("true", "false"):
            kind = boolean
        elif isinstance(default, str):
            kind = _optional_text
        elif float(default).is_integer():
            kind = _whole_number
        else:
            kind = float
        kind = (types or {}).get(name, kind)
        shown = "required" if default is None else f"default: {default!r}"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            # argparse passes a string default through ``type``; numbers as declared.
            default=str(default).lower()
            if isinstance(default, bool)
            else (str(default) if default is not None and kind is not float else default),
            required=default is None,
            help=f"{help_texts[name]} ({shown})",
        )
    return parser
