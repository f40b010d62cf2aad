#!/bin/bash
# airflow-init of the compose stack: database migrations, the DAGs' pools (pools.sh), then the
# simple auth manager's password file (the airflow-auth volume) with a generated password for
# every user in AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS that lacks one. Generated here,
# owner-only, so the api-server finds it and never prints a generated password to its log.
set -euo pipefail
airflow db migrate
bash "$(dirname "${BASH_SOURCE[0]}")/pools.sh"
python - <<'PY'
import json, os, secrets
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
users = [u.split(":", 1)[0] for u in os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",") if u]
passwords = json.loads(path.read_text() or "{}") if path.exists() else {}
missing = [user for user in users if user not in passwords]
for user in missing:
    passwords[user] = secrets.token_urlsafe(18)
if missing or not path.exists():
    os.umask(0o077)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(passwords) + "\n")
    partial.replace(path)
print(f"simple auth manager: passwords for {len(missing)} new user(s) written to {path}")
PY
