"""Monitoring one batch: inputs, scoring, data quality, performance, CBPE, drift and its alerts."""
