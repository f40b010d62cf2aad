"""Training: the model families, the training data, the Ray Tune search, refit and calibration."""
