"""The Model Registry: candidates and their evaluation data, the gated registration, versions."""
