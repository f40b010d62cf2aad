"""Project-wide plumbing: configuration, storage, tracking helpers."""
