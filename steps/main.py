"""The whole pipeline, end to end: ingest → split → train → register → serve → short replay.

Each stage runs as its own MLflow Project entry point (``mlflow.projects.run``), as in MLflow's
multistep example: stages hand each other MLflow run ids, and every stage's run is in MLflow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import mlflow

from steps.core import config

logger = logging.getLogger("health_predict.main")

# Each stage and the experiment its run belongs to.
STAGE_EXPERIMENTS = {
    "ingest": config.DATA_EXPERIMENT,
    "split": config.DATA_EXPERIMENT,
    "train": config.TRAINING_EXPERIMENT,
    "register": config.REGISTRY_EXPERIMENT,
    "simulate": config.SIMULATION_EXPERIMENT,
}


def run_stage(entry_point: str, parameters: dict[str, object]) -> str:
    """Run one entry point of this project synchronously and return its MLflow run id."""
    experiment_id = config.ensure_experiment(STAGE_EXPERIMENTS[entry_point])
    logger.info("stage %s: starting", entry_point)
    submitted = mlflow.projects.run(
        uri=str(config.PROJECT_ROOT),
        entry_point=entry_point,
        parameters={name: value for name, value in parameters.items() if value not in ("", None)},
        experiment_id=experiment_id,
        env_manager="local",
        synchronous=True,
    )
    logger.info("stage %s: finished, run %s", entry_point, submitted.run_id)
    return submitted.run_id


def serve_and_query_champion() -> list[dict]:
    """The champion's answer to its own input example, served briefly by MLflow's scoring server."""
    from steps.serve import serve_model, serving_input_example, smoke_test

    model_uri = f"models:/{config.MODEL_NAME}@{config.CHAMPION_ALIAS}"
    with serve_model(model_uri) as base_url:
        return smoke_test(base_url, serving_input_example(model_uri))


def run_pipeline(
    raw_data: str = "",
    data_uri: str = "",
    families: str = "logreg,lightgbm",
    trials_per_family: int = 4,
    time_budget_s: float = 300,
    replay_batches: int = 2,
) -> dict[str, object]:
    """Run every stage in order and return the run ids and the served model's answer."""
    config.configure_mlflow()
    data_uri = data_uri or config.data_uri()
    summary: dict[str, object] = {"data_uri": data_uri}
    summary["ingest_run_id"] = run_stage("ingest", {"raw_data": raw_data, "data_uri": data_uri})
    summary["split_run_id"] = run_stage("split", {"data_uri": data_uri})
    summary["train_run_id"] = run_stage(
        "train",
        {
            "data_uri": data_uri,
            "families": families,
            "trials_per_family": trials_per_family,
            "time_budget_s": time_budget_s,
        },
    )
    summary["register_run_id"] = run_stage("register", {"train_run_id": summary["train_run_id"]})
    summary["served_answer"] = serve_and_query_champion()
    if replay_batches > 0:
        summary["simulate_run_id"] = run_stage(
            "simulate", {"data_uri": data_uri, "max_batches": replay_batches}
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m steps.main`` (the ``main`` entry point)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-data", default="")
    parser.add_argument("--data-uri", default="")
    parser.add_argument("--families", default="logreg,lightgbm")
    parser.add_argument("--trials-per-family", type=float, default=4)
    parser.add_argument("--time-budget-s", type=float, default=300)
    parser.add_argument("--replay-batches", type=float, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    summary = run_pipeline(
        raw_data=args.raw_data,
        data_uri=args.data_uri,
        families=args.families,
        trials_per_family=int(args.trials_per_family),
        time_budget_s=args.time_budget_s,
        replay_batches=int(args.replay_batches),
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
