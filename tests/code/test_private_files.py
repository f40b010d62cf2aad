"""Patient files in a local data store are owner-only (issue 15, item 14)."""

from __future__ import annotations

import os
import stat

from steps.core import storage


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_local_writes_are_owner_only_files_in_owner_only_new_folders(tmp_path):
    previous = os.umask(0o022)  # the usual default, under which files would be 0644
    try:
        root = tmp_path / "store"
        uri = storage.join(str(root), "raw_data", "quarantine.csv")
        storage.write_bytes(uri, b"encounter_id\n1\n")
        storage.write_json({"rows": 1}, storage.join(str(root), "processed_data", "manifest.json"))
    finally:
        os.umask(previous)
    assert _mode(root / "raw_data" / "quarantine.csv") == 0o600
    assert _mode(root / "processed_data" / "manifest.json") == 0o600
    for folder in (root, root / "raw_data", root / "processed_data"):
        assert _mode(folder) == 0o700
