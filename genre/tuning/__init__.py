"""Hyperparameter studies with Optuna: search spaces from YAML, pruned trials as nested MLflow runs."""
