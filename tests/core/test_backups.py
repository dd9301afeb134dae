"""Backups before data changes: copied (or hard-linked) by their path in the project, and put back atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.core.backups import backup, restore_backup


def test_a_backup_keeps_the_bytes_by_their_project_path_and_puts_them_back(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = Path("data/raw.csv")
    data.parent.mkdir()
    data.write_bytes(b"a,b\n1,2\n")
    saved = backup([data, Path("data/missing.csv")], "retrain", root=tmp_path / "backups")
    assert (saved / "data/raw.csv").read_bytes() == b"a,b\n1,2\n" and saved.name.endswith("-retrain")
    data.write_bytes(b"a,b\n1,2\n3,4\n")  # the change the backup guards against
    assert restore_backup(saved, [data, Path("data/missing.csv")]) == ["data/raw.csv"]  # absent ones left alone
    assert data.read_bytes() == b"a,b\n1,2\n"


def test_a_linked_backup_survives_the_atomic_replacement_of_its_file(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = Path("raw.csv")
    data.write_bytes(b"old")
    saved = backup([data], "fix-data", root=tmp_path / "backups", link=True)
    replacement = Path("raw.csv.new")
    replacement.write_bytes(b"new")
    replacement.replace(data)  # how an atomic write replaces it: the linked backup keeps the old inode
    assert (saved / "raw.csv").read_bytes() == b"old" and data.read_bytes() == b"new"
