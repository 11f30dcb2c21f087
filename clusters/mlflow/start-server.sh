#!/usr/bin/env bash
# Start the skillearn MLflow tracking server: PostgreSQL backend store, object-store artifacts
# (S3 or GCS, proxied by the server so clients need no bucket credentials), basic auth.
#
#   export MLFLOW_DB_PASSWORD=...            # PostgreSQL password of user mlflow
#   export MLFLOW_AUTH_ADMIN_PASSWORD=...    # admin password, used on the first start only
#   export MLFLOW_ARTIFACTS=s3://YOUR-BUCKET/mlflow   # or gs://YOUR-BUCKET/mlflow
#   clusters/mlflow/start-server.sh          # or: docker compose -f clusters/mlflow/compose.yaml up
#
# Optional: MLFLOW_DB_HOST (default 127.0.0.1), MLFLOW_DB_PORT (5432), MLFLOW_DB_USER (mlflow),
# MLFLOW_DB_NAME (mlflow; the basic-auth users live in ${MLFLOW_DB_NAME}_auth), MLFLOW_HOST
# (127.0.0.1: reachable from this machine only), MLFLOW_PORT (5000).
#
# Basic auth sends passwords with every request: clients reach the server through TLS only (the
# Caddy proxy of compose.yaml, or any reverse proxy with a certificate in front of
# MLFLOW_HOST:MLFLOW_PORT); never bind MLFLOW_HOST to an address others reach without it.
#
# The database password never appears on a command line (`ps`) or in a URI: it is written to a
# private (mode 600) pgpass file that libpq reads (PGPASSFILE), removed when the server stops,
# and dropped from the server's environment. Any character is fine in it (& # @ / ? : \ ...).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD to the PostgreSQL password of user mlflow}"
: "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS to s3://BUCKET/PREFIX or gs://BUCKET/PREFIX}"
db_host="${MLFLOW_DB_HOST:-127.0.0.1}"
db_port="${MLFLOW_DB_PORT:-5432}"
db_user="${MLFLOW_DB_USER:-mlflow}"
db_name="${MLFLOW_DB_NAME:-mlflow}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"

umask 077  # every file below is private to this user
pgpass="$(mktemp)"
auth_config="$(mktemp --suffix=.ini)"
trap 'rm -f "$pgpass" "$auth_config"' EXIT

# pgpass line host:port:database:user:password; `\` and `:` in the password are escaped.
password="${MLFLOW_DB_PASSWORD//\\/\\\\}"
password="${password//:/\\:}"
printf '%s:%s:*:%s:%s\n' "$db_host" "$db_port" "$db_user" "$password" > "$pgpass"
unset password MLFLOW_DB_PASSWORD
export PGPASSFILE="$pgpass"

backend="postgresql://${db_user}@${db_host}:${db_port}/${db_name}"
# basic_auth.ini with the user store pointed at PostgreSQL (no password in it either).
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    "database_uri = "*) printf 'database_uri = %s_auth\n' "$backend" ;;
    *) printf '%s\n' "$line" ;;
  esac
done < "$here/basic_auth.ini" > "$auth_config"
export MLFLOW_AUTH_CONFIG_PATH="$auth_config"

echo "MLflow server on http://${host}:${port} (store ${backend}, artifacts ${MLFLOW_ARTIFACTS})"
"${MLFLOW_BIN:-mlflow}" server \
  --app-name basic-auth \
  --backend-store-uri "$backend" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --serve-artifacts \
  --host "$host" --port "$port"
