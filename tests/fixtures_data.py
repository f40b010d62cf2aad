"""Fixtures for the data area (see tests/conftest.py)."""
