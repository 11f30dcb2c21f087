-- PostgreSQL set-up for the skillearn MLflow server (run once as the postgres superuser):
--   psql -v password="'$MLFLOW_DB_PASSWORD'" -f clusters/mlflow/init-db.sql
-- `mlflow` holds runs, metrics and the Optuna studies (skillearn sweep --optuna-storage
-- postgresql://mlflow:...@host/mlflow); `mlflow_auth` holds basic-auth users.
CREATE USER mlflow WITH PASSWORD :password;
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
