"""Model evaluation: metrics, the champion/challenger gate and the model card."""
