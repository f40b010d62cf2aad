"""Fixtures for the mlflow_server area (see tests/conftest.py)."""
