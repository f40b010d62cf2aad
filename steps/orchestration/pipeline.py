"""The whole pipeline, end to end: ingest → split → train → register → serve → short replay.

Each stage runs as its own MLflow Project entry point (``mlflow.projects.run``), as in MLflow's
multistep example: stages hand each other MLflow run ids, and every stage's run is in MLflow.
"""

from __future__ import annotations

import logging

from steps.core import config, tracking
from steps.deployment.server import serve_model, serving_input_example, smoke_test

logger = logging.getLogger("health_predict.main")


def serve_and_query_champion() -> list[dict]:
    """The champion's answer to its own input example, served briefly by MLflow's scoring server."""

    model_uri = config.CHAMPION_MODEL_URI
    with serve_model(model_uri) as base_url:
        return smoke_test(base_url, serving_input_example(model_uri))


def run_pipeline(
    raw_data: str = "",
    data_uri: str = "",
    families: str = "",
    trials_per_family: int = 4,
    time_budget_s: float = 300,
    replay_batches: int = 2,
) -> dict[str, object]:
    """Run every stage in order and return the run ids and the served model's answer."""
    config.configure_mlflow()
    data_uri = data_uri or config.data_uri()
    summary: dict[str, object] = {"data_uri": data_uri}
    summary["ingest_run_id"] = tracking.run_entry_point(
        "ingest", {"raw_data": raw_data, "data_uri": data_uri}
    )
    summary["split_run_id"] = tracking.run_entry_point("split", {"data_uri": data_uri})
    summary["train_run_id"] = tracking.run_entry_point(
        "train",
        {
            "data_uri": data_uri,
            "families": families or config.default_families(),
            "trials_per_family": trials_per_family,
            "time_budget_s": time_budget_s,
        },
    )
    summary["register_run_id"] = tracking.run_entry_point(
        "register", {"train_run_id": summary["train_run_id"]}
    )
    summary["served_answer"] = serve_and_query_champion()
    if replay_batches > 0:
        summary["simulate_run_id"] = tracking.run_entry_point(
            "simulate", {"data_uri": data_uri, "max_batches": replay_batches}
        )
    return summary
