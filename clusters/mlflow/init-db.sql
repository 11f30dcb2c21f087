-- PostgreSQL set-up for the skillearn MLflow server (run once as the postgres superuser; the
-- password is read from the environment by psql itself, never put on a command line):
--   sudo -u postgres --preserve-env=MLFLOW_DB_PASSWORD psql -f clusters/mlflow/init-db.sql
-- `mlflow` holds runs, metrics and the Optuna studies (skillearn sweep --optuna-storage
-- 'postgresql://mlflow:${OPTUNA_DB_PASSWORD}@host/mlflow?options=-csearch_path%3Doptuna');
-- `mlflow_auth` holds basic-auth users. Needs psql >= 15 (\getenv); :'name' quotes the value,
-- so any character is fine in the password.
\getenv db_password MLFLOW_DB_PASSWORD
\if :{?db_password}
\else
  \warn 'set MLFLOW_DB_PASSWORD (and pass it with --preserve-env=MLFLOW_DB_PASSWORD)'
  \quit
\endif
CREATE USER mlflow WITH PASSWORD :'db_password';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
