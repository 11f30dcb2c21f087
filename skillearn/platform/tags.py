"""MLflow tag names shared by the writer (tracking.py) and the reader (report.py)."""

PARENT_RUN_TAG = "mlflow.parentRunId"
ROLE_TAG = "skillearn.role"  # "sweep" on the parent run, "trial" on each child run
SWEEP_PATH_TAG = "skillearn.sweep_path"  # the sweep's storage directory: finds it on resume
# sha256 of the sweep's storage directory (hex): runs are found again by this, never by a filter
# string holding user text (a quote in a path or name would break it)
SWEEP_KEY_TAG = "skillearn.sweep_key"
# MLflow 3's UI opens an experiment without this tag in its GenAI mode (traces, prompts);
# skillearn's experiments train models, so they are marked for the model-training mode.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
