"""MLflow tag names shared by the writer (tracking.py) and the reader (report.py)."""

PARENT_RUN_TAG = "mlflow.parentRunId"
ROLE_TAG = "skillearn.role"  # "sweep" on the parent run, "trial" on each child run
SWEEP_PATH_TAG = "skillearn.sweep_path"  # the sweep's storage directory: finds it on resume
