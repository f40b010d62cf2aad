#!/bin/bash
# PostgreSQL for the compose stack (Debian's postgresql-15 in the services image), run as the
# postgres user. First start: initdb with the superuser password from the environment (through an
# owner-only file, never a command-line argument), then the two application databases
# (init-databases.sh). Every start: listen on the stack's network with password authentication.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${PGDATA:?PGDATA must be set}"
here="$(dirname "$0")"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
  pwfile="$(umask 077 && mktemp)"
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$pwfile" -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  PGHOST=/tmp PGUSER=postgres "$here/init-databases.sh"
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
