"""One promotion at a time in Airflow: every DAG task that can promote a champion runs in the
register pool, declared once with one slot, and the pool is created wherever Airflow's database is
initialised. Parses source only (the pytest process never imports Airflow); the pool's creation on
a real Airflow runs in tests/integration/test_local_stack.py.
"""

from __future__ import annotations

import ast
import re

from steps.core.config import PROJECT_ROOT

DAGS = sorted((PROJECT_ROOT / "dags").glob("*.py"))
DAG_COMMON = PROJECT_ROOT / "steps" / "orchestration" / "dag_common.py"
POOLS_SCRIPT = "docker/airflow/pools.sh"
# Calls that judge a challenger and may move the champion alias.
PROMOTING_CALLS = {"run_registration", "retrain"}


def _called_names(function: ast.FunctionDef) -> set[str]:
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            target = node.func
            names.add(getattr(target, "attr", None) or getattr(target, "id", ""))
    return names


def _task_pool(function: ast.FunctionDef) -> str | None:
    """The name given as ``pool=`` to the function's ``@task(...)`` decorator, if any."""
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "task":
            for keyword in decorator.keywords:
                if keyword.arg == "pool" and isinstance(keyword.value, ast.Name):
                    return keyword.value.id
    return None


def _is_task(function: ast.FunctionDef) -> bool:
    return any(
        getattr(getattr(d, "func", d), "id", "") == "task"
        or getattr(getattr(d, "func", d), "attr", "") in {"branch", "sensor"}
        for d in function.decorator_list
    )


def test_every_promoting_task_runs_in_the_register_pool():
    promoting = {}
    for path in DAGS:
        for node in ast.walk(ast.parse(path.read_text())):
            promotes = isinstance(node, ast.FunctionDef) and _called_names(node) & PROMOTING_CALLS
            if promotes and _is_task(node):
                promoting[f"{path.name}:{node.name}"] = _task_pool(node)
    # The training DAG's register and the monitoring DAG's inline retraining.
    assert set(promoting) == {
        "training_pipeline_dag.py:register",
        "monitoring_retraining_dag.py:retrain_inline",
    }
    assert set(promoting.values()) == {"REGISTER_POOL"}, promoting


def test_register_pool_is_declared_once_with_one_slot():
    tree = ast.parse(DAG_COMMON.read_text())
    assignments = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    name = ast.literal_eval(assignments["REGISTER_POOL"])
    assert name == "health_predict_register"
    pools = assignments["POOLS"]
    assert [getattr(key, "id", None) for key in pools.keys] == ["REGISTER_POOL"]
    slots, description = ast.literal_eval(pools.values[0])
    assert slots == 1 and description
    for path in DAGS:
        assert f'"{name}"' not in path.read_text(), f"{path.name}: use REGISTER_POOL"


def test_pools_are_created_right_after_every_airflow_db_migrate():
    """The compose stack's airflow-init and the local stack run pools.sh after migrating."""
    pools_script = (PROJECT_ROOT / POOLS_SCRIPT).read_text()
    assert "from steps.orchestration.dag_common import POOLS" in pools_script
    assert re.search(r'airflow pools set "\$name" "\$slots" "\$description"', pools_script)
    for script in ("docker/airflow/init.sh", "scripts/local_stack.sh"):
        text = (PROJECT_ROOT / script).read_text()
        assert re.search(r"db migrate\b[^\n]*\n[^\n]*/pools\.sh\"", text), (
            f"{script} does not run pools.sh on the line after `airflow db migrate`"
        )
