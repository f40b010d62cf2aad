"""Orchestration: the monitoring/retraining loop, the replay of future data, the end-to-end run."""
