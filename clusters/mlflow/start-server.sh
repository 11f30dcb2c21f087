#!/usr/bin/env bash
# Start the skillearn MLflow tracking server: PostgreSQL backend store, object-store artifacts
# (S3 or GCS, proxied by the server so clients need no bucket credentials), basic auth.
#
#   export MLFLOW_DB_PASSWORD=...            # PostgreSQL password of user mlflow
#   export MLFLOW_AUTH_ADMIN_PASSWORD=...    # admin password, used on the first start only
#   export MLFLOW_ARTIFACTS=s3://YOUR-BUCKET/mlflow   # or gs://YOUR-BUCKET/mlflow
#   clusters/mlflow/start-server.sh          # or: docker compose -f clusters/mlflow/compose.yaml up
#
# Optional: MLFLOW_DB_HOST (default 127.0.0.1), MLFLOW_DB_NAME (mlflow), MLFLOW_HOST (127.0.0.1:
# reachable from this machine only; use the private address your Ray nodes see, never a public
# one without TLS in front), MLFLOW_PORT (5000).
# Passwords are read from the environment and never printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD to the PostgreSQL password of user mlflow}"
: "${MLFLOW_ARTIFACTS:?set MLFLOW_ARTIFACTS to s3://BUCKET/PREFIX or gs://BUCKET/PREFIX}"
db_host="${MLFLOW_DB_HOST:-127.0.0.1}"
db_name="${MLFLOW_DB_NAME:-mlflow}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"

backend="postgresql://mlflow:${MLFLOW_DB_PASSWORD}@${db_host}:5432/${db_name}"
# basic_auth.ini with the user store pointed at PostgreSQL, in a private file (it holds the
# database password) that is removed when the server stops.
umask 077
auth_config="$(mktemp --suffix=.ini)"
trap 'rm -f "$auth_config"' EXIT
sed "s#^database_uri = .*#database_uri = ${backend}_auth#" "$here/basic_auth.ini" > "$auth_config"
export MLFLOW_AUTH_CONFIG_PATH="$auth_config"

echo "MLflow server on http://${host}:${port} (store postgresql://mlflow:***@${db_host}:5432/${db_name}, artifacts ${MLFLOW_ARTIFACTS})"
mlflow server \
  --app-name basic-auth \
  --backend-store-uri "$backend" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --serve-artifacts \
  --host "$host" --port "$port"
