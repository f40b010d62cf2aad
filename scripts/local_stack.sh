#!/usr/bin/env bash
# The services stack of docker-compose.yml as local processes, for machines without Docker:
# a throwaway Postgres (initdb/pg_ctl) holding the "airflow" and "mlflow" databases (created by
# the same docker/postgres/init-databases.sh the container uses), `mlflow server` on it with a
# proxied local artifact folder, and Airflow 3 on it as the compose stack runs it: `airflow db
# migrate` and the DAGs' pools (docker/airflow/pools.sh), then api-server, scheduler
# (LocalExecutor), dag-processor and triggerer, each its own process with its own pid and log file.
#
#   scripts/local_stack.sh start    start whatever is not running, wait until healthy, write
#                                   the env file (after a crash, `start` again restarts the rest)
#   scripts/local_stack.sh status   print each service's state; exit 0 only if all are up
#   scripts/local_stack.sh stop     stop everything (the data stays; `rm -rf` the folder to drop it)
#
# Environment:
#   LOCAL_STACK_DIR       state folder (default: <project>/build/local_stack)
#   LOCAL_STACK_SERVICES  subset to start, in order (default: "postgres mlflow airflow")
#   LOCAL_STACK_PG_PORT, LOCAL_STACK_MLFLOW_PORT, LOCAL_STACK_AIRFLOW_PORT  (default: free ports)
#   LOCAL_STACK_ARTIFACTS_DESTINATION  MLflow artifact destination (default: <dir>/mlflow-artifacts;
#                                      an s3:// URI works with AWS credentials in the environment)
#   LOCAL_STACK_BIN       folder with the mlflow and airflow executables (default: <project>/.venv/bin)
#   LOCAL_STACK_TIMEOUT_S seconds to wait for each service to become healthy (default: 300)
#
# `start` writes <dir>/stack.env (mode 600) with MLFLOW_TRACKING_URI, the Airflow URL and the
# database URIs; `source` it to point the pipeline at the stack. Secrets (database passwords, the
# Airflow admin password, JWT secret and Fernet key) are generated on first start into
# <dir>/secrets.env (mode 600) and reach the services only through their environment or files,
# never a command line. Every service listens on 127.0.0.1 only (Airflow's log servers are off:
# the api-server reads the task logs from the shared log folder). The REST API authenticates with
# Airflow's SimpleAuthManager: POST $AIRFLOW_URL/auth/token with user "admin" and the password in
# $AIRFLOW_ADMIN_PASSWORDS_FILE returns a JWT for the Authorization header.
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${LOCAL_STACK_DIR:-$PROJECT_ROOT/build/local_stack}"
SERVICES="${LOCAL_STACK_SERVICES:-postgres mlflow airflow}"
BIN="${LOCAL_STACK_BIN:-$PROJECT_ROOT/.venv/bin}"
TIMEOUT_S="${LOCAL_STACK_TIMEOUT_S:-300}"
ENV_FILE="$STACK_DIR/stack.env"
SECRETS_FILE="$STACK_DIR/secrets.env"
PG_DIR="$STACK_DIR/postgres"
AIRFLOW_COMPONENTS="api-server scheduler dag-processor triggerer"
AIRFLOW_PASSWORDS_FILE="$STACK_DIR/airflow/simple_auth_manager_passwords.json"

log() { printf '[local_stack] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

wants() { [[ " $SERVICES " == *" $1 "* ]]; }

free_port() {
  "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Postgres refuses to run as root: run its tools as an unprivileged account then.
PG_OS_USER=""
if [ "$(id -u)" -eq 0 ]; then
  for candidate in postgres nobody; do
    if id -u "$candidate" >/dev/null 2>&1; then PG_OS_USER="$candidate"; break; fi
  done
  [ -n "$PG_OS_USER" ] || die "running as root and neither a 'postgres' nor a 'nobody' user exists"
fi
as_pg_user() {
  if [ -n "$PG_OS_USER" ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

http_ok() { "$BIN/python" - "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as response:
        sys.exit(0 if response.status < 400 else 1)
except Exception:
    sys.exit(1)
PY
}

wait_for() { # name url pidfile logfile
  local name="$1" url="$2" pidfile="$3" logfile="$4" started=$SECONDS
  until http_ok "$url"; do
    if ! pid_alive "$pidfile"; then
      tail -n 40 "$logfile" >&2 || true
      die "$name exited while starting (log: $logfile)"
    fi
    if [ $((SECONDS - started)) -ge "$TIMEOUT_S" ]; then
      tail -n 40 "$logfile" >&2 || true
      die "$name not healthy after ${TIMEOUT_S}s (log: $logfile)"
    fi
    sleep 1
  done
  log "$name healthy at $url"
}

# Starts a command in its own session (process group = its pid) so `stop` ends its children too.
spawn() { # pidfile logfile command...
  local pidfile="$1" logfile="$2"; shift 2
  # umask 077: the logs may hold generated credentials (Airflow prints its admin password).
  ( umask 077; setsid "$@" >"$logfile" 2>&1 < /dev/null & echo $! > "$pidfile" )
}

stop_group() { # name pidfile
  local name="$1" pidfile="$2" pid waited=0
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  # Wait for the whole process group (workers and subprocesses too), not just its leader.
  while kill -0 -- "-$pid" 2>/dev/null && [ "$waited" -lt 30 ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 -- "-$pid" 2>/dev/null; then
    log "$name did not stop in 30s, killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  log "$name stopped"
}

load_state() {
  # shellcheck disable=SC1090
  [ -f "$SECRETS_FILE" ] && source "$SECRETS_FILE"
  # shellcheck disable=SC1090
  [ -f "$ENV_FILE" ] && source "$ENV_FILE"
  return 0
}

# Adds each missing secret or port to the secrets file (mode 600); existing values are kept.
write_secrets() {
  ( umask 077; touch "$SECRETS_FILE" )
  local name value
  for name in POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD AIRFLOW_ADMIN_PASSWORD \
      AIRFLOW_JWT_SECRET AIRFLOW_API_SECRET_KEY AIRFLOW_FERNET_KEY \
      LOCAL_STACK_PG_PORT LOCAL_STACK_MLFLOW_PORT LOCAL_STACK_AIRFLOW_PORT; do
    grep -q "^$name=" "$SECRETS_FILE" && continue
    case "$name" in
      LOCAL_STACK_*_PORT) value="${!name:-$(free_port)}" ;;
      AIRFLOW_FERNET_KEY) value="$(openssl rand -base64 32 | tr '+/' '-_')" ;;
      *) value="$(openssl rand -hex 16)" ;;
    esac
    printf '%s=%s\n' "$name" "$value" >> "$SECRETS_FILE"
  done
}

start_postgres() {
  for tool in initdb pg_ctl psql; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH: install the PostgreSQL server binaries"
  done
  if as_pg_user pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
    log "postgres already running on port $LOCAL_STACK_PG_PORT"; return 0
  fi
  mkdir -p "$PG_DIR"
  [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER" "$PG_DIR"
  local fresh=0
  if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
    fresh=1
    ( umask 077; printf '%s\n' "$POSTGRES_PASSWORD" > "$PG_DIR/pwfile" )
    [ -z "$PG_OS_USER" ] || chown "$PG_OS_USER" "$PG_DIR/pwfile"
    as_pg_user initdb -D "$PG_DIR/data" -U postgres --pwfile="$PG_DIR/pwfile" \
      --auth=scram-sha-256 -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
      || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    rm -f "$PG_DIR/pwfile"
  fi
  # Loopback only; the Unix socket stays inside the state folder; no fsync (throwaway data).
  as_pg_user pg_ctl -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $LOCAL_STACK_PG_PORT -k $PG_DIR -F" start >/dev/null \
    || { tail -n 40 "$PG_DIR/postgres.log" >&2; die "postgres did not start"; }
  if [ "$fresh" -eq 1 ]; then
    PGHOST=127.0.0.1 PGPORT="$LOCAL_STACK_PG_PORT" PGUSER=postgres PGPASSWORD="$POSTGRES_PASSWORD" \
      AIRFLOW_DB_PASSWORD="$AIRFLOW_DB_PASSWORD" MLFLOW_DB_PASSWORD="$MLFLOW_DB_PASSWORD" \
      bash "$PROJECT_ROOT/docker/postgres/init-databases.sh" >/dev/null
  fi
  log "postgres ready on 127.0.0.1:$LOCAL_STACK_PG_PORT (databases airflow, mlflow)"
}

launch_mlflow() {
  if pid_alive "$STACK_DIR/mlflow.pid"; then log "mlflow already running"; return 0; fi
  local destination="${LOCAL_STACK_ARTIFACTS_DESTINATION:-$STACK_DIR/mlflow-artifacts}"
  [[ "$destination" == *://* ]] || mkdir -p "$destination"
  # The backend URI holds the database password: environment, not command line. No GenAI job
  # runner (a huey consumer) either: the project does not use it.
  ( export MLFLOW_BACKEND_STORE_URI MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
    spawn "$STACK_DIR/mlflow.pid" "$STACK_DIR/mlflow.log" \
      "$BIN/mlflow" server \
      --artifacts-destination "$destination" --serve-artifacts \
      --host 127.0.0.1 --port "$LOCAL_STACK_MLFLOW_PORT" --workers 1 )
}

# The Airflow configuration, exported in the calling subshell only (secrets never on a command
# line; the same settings as docker-compose.yml's x-airflow-common).
airflow_environment() {
  export AIRFLOW_HOME="$STACK_DIR/airflow"
  export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="$AIRFLOW_DATABASE_URI"
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
  export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT_ROOT/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=false
  export AIRFLOW__CORE__FERNET_KEY="$AIRFLOW_FERNET_KEY"
  export AIRFLOW__API_AUTH__JWT_SECRET="$AIRFLOW_JWT_SECRET"
  export AIRFLOW__API__SECRET_KEY="$AIRFLOW_API_SECRET_KEY"
  export AIRFLOW__API__HOST=127.0.0.1
  export AIRFLOW__API__PORT="$LOCAL_STACK_AIRFLOW_PORT"
  export AIRFLOW__API__WORKERS=1
  export AIRFLOW__API__BASE_URL="$AIRFLOW_URL"
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="$AIRFLOW_URL/execution/"
  export AIRFLOW__CORE__AUTH_MANAGER=airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_PASSWORDS_FILE"
  export MLFLOW_TRACKING_URI
  export GIT_PYTHON_REFRESH=quiet
  export PYTHONPATH="$PROJECT_ROOT${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$BIN:$PATH"
}

launch_airflow() {
  mkdir -p "$STACK_DIR/airflow"
  chmod 700 "$STACK_DIR/airflow"
  ( umask 077
    printf '{"admin": "%s"}\n' "$AIRFLOW_ADMIN_PASSWORD" > "$AIRFLOW_PASSWORDS_FILE" )
  local component
  # A fresh start migrates the metadata database first; a restart of one crashed component
  # (the api-server still up) does not need to.
  if ! pid_alive "$STACK_DIR/airflow-api-server.pid"; then
    ( airflow_environment; umask 077
      "$BIN/airflow" db migrate >"$STACK_DIR/airflow-migrate.log" 2>&1 \
        && bash "$PROJECT_ROOT/docker/airflow/pools.sh" >>"$STACK_DIR/airflow-migrate.log" 2>&1 ) \
      || { tail -n 40 "$STACK_DIR/airflow-migrate.log" >&2; die "airflow db migrate or pools failed"; }
  fi
  for component in $AIRFLOW_COMPONENTS; do
    if pid_alive "$STACK_DIR/airflow-$component.pid"; then
      log "airflow $component already running"; continue
    fi
    local extra=()
    # The log servers listen on every interface; the api-server reads the local log folder.
    case "$component" in scheduler|triggerer) extra=(--skip-serve-logs) ;; esac
    ( airflow_environment
      spawn "$STACK_DIR/airflow-$component.pid" "$STACK_DIR/airflow-$component.log" \
        "$BIN/airflow" "$component" "${extra[@]}" )
    log "airflow $component started"
  done
}

write_env_file() {
  ( umask 077
    cat > "$ENV_FILE" <<ENV
# Written by scripts/local_stack.sh start; source it to use the local stack.
export LOCAL_STACK_DIR='$STACK_DIR'
export MLFLOW_TRACKING_URI='$MLFLOW_TRACKING_URI'
export AIRFLOW_URL='$AIRFLOW_URL'
export AIRFLOW_HOME='$STACK_DIR/airflow'
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN='$AIRFLOW_DATABASE_URI'
export MLFLOW_BACKEND_STORE_URI='$MLFLOW_BACKEND_STORE_URI'
export AIRFLOW_ADMIN_PASSWORDS_FILE='$AIRFLOW_PASSWORDS_FILE'
ENV
  )
}

derive_uris() {
  MLFLOW_TRACKING_URI="http://127.0.0.1:$LOCAL_STACK_MLFLOW_PORT"
  AIRFLOW_URL="http://127.0.0.1:$LOCAL_STACK_AIRFLOW_PORT"
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$MLFLOW_DB_PASSWORD@127.0.0.1:$LOCAL_STACK_PG_PORT/mlflow"
  AIRFLOW_DATABASE_URI="postgresql+psycopg2://airflow:$AIRFLOW_DB_PASSWORD@127.0.0.1:$LOCAL_STACK_PG_PORT/airflow"
}

stop_after_failed_start() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    log "start failed, stopping what was started"
    cmd_stop
  fi
}

cmd_start() {
  local started_at=$SECONDS
  mkdir -p "$STACK_DIR"
  chmod 755 "$STACK_DIR"
  write_secrets
  load_state
  derive_uris
  write_env_file
  # A failed start leaves nothing running.
  trap stop_after_failed_start EXIT
  if wants postgres; then start_postgres; fi
  # MLflow and Airflow each migrate their own database, so they start side by side.
  if wants mlflow; then launch_mlflow; fi
  if wants airflow; then launch_airflow; fi
  if wants mlflow; then
    wait_for mlflow "$MLFLOW_TRACKING_URI/health" "$STACK_DIR/mlflow.pid" "$STACK_DIR/mlflow.log"
  fi
  if wants airflow; then
    wait_for airflow "$AIRFLOW_URL/api/v2/version" "$STACK_DIR/airflow-api-server.pid" \
      "$STACK_DIR/airflow-api-server.log"
    local component
    for component in $AIRFLOW_COMPONENTS; do
      pid_alive "$STACK_DIR/airflow-$component.pid" \
        || { tail -n 40 "$STACK_DIR/airflow-$component.log" >&2; die "airflow $component exited"; }
    done
  fi
  trap - EXIT
  log "stack up in $((SECONDS - started_at))s; env file: $ENV_FILE"
  echo "$ENV_FILE"
}

cmd_stop() {
  [ -d "$STACK_DIR" ] || { log "nothing to stop in $STACK_DIR"; return 0; }
  local component
  for component in $AIRFLOW_COMPONENTS; do
    stop_group "airflow $component" "$STACK_DIR/airflow-$component.pid"
  done
  stop_group mlflow "$STACK_DIR/mlflow.pid"
  if [ -f "$PG_DIR/data/PG_VERSION" ] && as_pg_user pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
    as_pg_user pg_ctl -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null
    log "postgres stopped"
  fi
}

cmd_status() {
  load_state
  [ -f "$SECRETS_FILE" ] || { echo "no stack in $STACK_DIR"; return 3; }
  derive_uris
  local healthy=0
  if wants postgres; then
    if as_pg_user pg_ctl -D "$PG_DIR/data" status >/dev/null 2>&1; then
      echo "postgres: up (127.0.0.1:$LOCAL_STACK_PG_PORT)"
    else echo "postgres: down"; healthy=3; fi
  fi
  if wants mlflow; then
    if pid_alive "$STACK_DIR/mlflow.pid" && http_ok "$MLFLOW_TRACKING_URI/health"; then
      echo "mlflow: up ($MLFLOW_TRACKING_URI)"
    else echo "mlflow: down"; healthy=3; fi
  fi
  if wants airflow; then
    local component
    for component in $AIRFLOW_COMPONENTS; do
      if pid_alive "$STACK_DIR/airflow-$component.pid"; then
        echo "airflow $component: up"
      else echo "airflow $component: down"; healthy=3; fi
    done
    if http_ok "$AIRFLOW_URL/api/v2/version"; then
      echo "airflow: up ($AIRFLOW_URL)"
    else echo "airflow: down"; healthy=3; fi
  fi
  return "$healthy"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
