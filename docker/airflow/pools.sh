#!/bin/bash
# Creates (or resizes) every Airflow pool the DAGs use, as steps/orchestration/dag_common.py's
# POOLS declares them (the register pool: one slot). Run after `airflow db migrate`, with the
# project importable and Airflow's configuration in the environment: docker/airflow/init.sh in
# the compose stack, scripts/local_stack.sh without Docker.
set -euo pipefail
python -c '
from steps.orchestration.dag_common import POOLS
for name, (slots, description) in POOLS.items():
    print(name, slots, description, sep="\t")
' | while IFS=$'\t' read -r name slots description; do
  airflow pools set "$name" "$slots" "$description" >/dev/null
  echo "airflow pool $name: $slots slot(s)"
done
