#!/bin/bash
# MLflow tracking server of the compose stack behind MLflow's own basic-auth app. The backend store
# URI (with its password) comes from MLFLOW_BACKEND_STORE_URI, never the command line; the admin
# credentials from MLFLOW_ADMIN_PASSWORD (generated on first run into .env), written to an
# owner-only auth config under /tmp that MLFLOW_AUTH_CONFIG_PATH names.
set -euo pipefail
: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI must be set}"
: "${MLFLOW_ADMIN_PASSWORD:?MLFLOW_ADMIN_PASSWORD must be set}"
umask 077
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:////var/lib/mlflow-auth/basic_auth.db
admin_username = admin
admin_password = ${MLFLOW_ADMIN_PASSWORD}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port 5000 --workers 2 \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION}" --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS}"
