#!/usr/bin/env bash
# Run by the postgres container on its first start: the database of MLflow's basic-auth users.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE mlflow_auth OWNER mlflow;"
