"""Benchmarks: skillearn's multilevel step against a faithful port of the original DARTS code.

Everything here imports only torch and skillearn's engine, search space, skills and data
classes (never Ray, MLflow or Optuna), so it runs on a bare GPU machine.
"""
