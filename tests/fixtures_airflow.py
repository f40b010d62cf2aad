"""Fixtures for the airflow area (see tests/conftest.py)."""
