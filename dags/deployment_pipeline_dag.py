"""
### Health Predict: deployment of the champion model

1. **resolve_model**: the registry version to deploy, `model_version` or else the current
   `champion`, pinned as `models:/health-predict/<version>` so an alias moving mid-run changes
   nothing;
2. **choose_target** on the `target` param:
   - `k8s`: **deploy_kubernetes** runs the `deploy` entry point: hardened Dockerfile from
     `mlflow models generate-dockerfile` → image tagged with the model version → push to ECR →
     update the Kubernetes Deployment → wait for the rollout (rolled back if it never becomes
     ready). Without docker, a cluster or AWS credentials it stops before that step with a message
     saying which one is missing; nothing is half-deployed.
   - `local`: **serve_and_smoke_test** serves the version with MLflow's scoring server
     (`mlflow models serve --env-manager local`) on a free loopback port, sends a real
     `/invocations` request and checks the answer, then stops the server. This is the target that
     runs on a machine without docker or Kubernetes.

Triggered by the training DAG and the monitoring DAG when the champion changes (conf
`{"target": "...", "model_version": "..."}`), or by hand. Results: the task logs, the MLflow
experiment `HealthPredict_Deployment` (`deploy` runs with the Dockerfile and rollout outcome).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from steps.orchestration.dag_common import DAG_SETTINGS, DEPLOYMENT_DAG_ID, TRAINING_DAG_ID


@dag(
    dag_id=DEPLOYMENT_DAG_ID,
    doc_md=__doc__,
    schedule=None,
    params={
        "target": Param("k8s", enum=["k8s", "local"], description="Where to deploy"),
        "model_version": Param(
            "", type="string", description="Registry version; empty = current champion"
        ),
        "namespace": Param(None, type=["null", "string"], description="Kubernetes namespace"),
        "deployment": Param(None, type=["null", "string"], description="Kubernetes Deployment"),
        "ecr_repository": Param(None, type=["null", "string"], description="ECR repository"),
        "aws_region": Param(None, type=["null", "string"], description="AWS region"),
        "rollout_timeout_s": Param(None, type=["null", "number"], minimum=1),
    },
    **DAG_SETTINGS,
    tags=["health-predict", "deployment"],
)
def health_predict_api_deployment():
    @task
    def resolve_model() -> dict:
        """The version to deploy and its pinned registry URI."""
        from steps.orchestration import loop

        version = get_current_context()["params"]["model_version"] or loop.champion_version()
        if not version:
            raise RuntimeError(f"no champion model to deploy: run {TRAINING_DAG_ID} first")
        return {"version": str(version), "model_uri": loop.model_uri(str(version))}

    @task.branch
    def choose_target() -> str:
        target = get_current_context()["params"]["target"]
        return "deploy_kubernetes" if target == "k8s" else "serve_and_smoke_test"

    @task(execution_timeout=timedelta(hours=1))
    def deploy_kubernetes(model: dict) -> str:
        """Run the deploy entry point for Kubernetes; returns its MLflow run id."""
        from steps.core import tracking

        params = get_current_context()["params"]
        options = {
            name: params[name]
            for name in ("namespace", "deployment", "ecr_repository", "aws_region")
            if params[name]
        }
        if params["rollout_timeout_s"]:
            options["rollout_timeout_s"] = params["rollout_timeout_s"]
        return tracking.run_entry_point(
            "deploy", {"target": "k8s", "model_uri": model["model_uri"], **options}
        )

    @task
    def serve_and_smoke_test(model: dict) -> dict:
        """Serve the model locally, send its input example, check the answer's shape."""
        from steps.deployment.server import serve_model, serving_input_example, smoke_test

        payload = serving_input_example(model["model_uri"])
        with serve_model(model["model_uri"]) as base_url:
            answer = smoke_test(base_url, payload)
        return {"version": model["version"], "answer": answer}

    model = resolve_model()
    model >> choose_target() >> [deploy_kubernetes(model), serve_and_smoke_test(model)]


health_predict_api_deployment()
