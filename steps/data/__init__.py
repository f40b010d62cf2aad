"""The raw dataset: its contract, ingestion, the splits and the labelled datasets."""
