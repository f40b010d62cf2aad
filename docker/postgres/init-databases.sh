#!/bin/bash
# Creates the two application databases on a fresh Postgres: "airflow" and "mlflow", each owned
# by its own login role. Used by the Postgres container (/docker-entrypoint-initdb.d) and by
# scripts/local_stack.sh. Passwords come from AIRFLOW_DB_PASSWORD and MLFLOW_DB_PASSWORD; the
# connection from the usual PG* variables (the container entrypoint connects over its socket).
# psql reads the passwords from the environment (\getenv, psql 15+), so that they never appear on
# a command line.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set}"
export AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-${PGUSER:-postgres}}" \
  --dbname postgres <<'SQL'
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
