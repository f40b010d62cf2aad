"""The raw dataset's contract."""
