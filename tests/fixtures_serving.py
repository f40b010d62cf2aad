"""Fixtures for the serving area (see tests/conftest.py)."""
