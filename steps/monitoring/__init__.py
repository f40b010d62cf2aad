"""Monitoring one batch: inputs, scoring, Evidently reports, CBPE and the decision rule."""
