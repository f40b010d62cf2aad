"""Drift monitoring: inputs, scoring, Evidently reports, the decision rule and the loop."""
