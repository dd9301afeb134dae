"""Atomic writes: a failed writer leaves the previous file intact and no temporary files behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from selfheal.core import atomic


def test_a_failing_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "metrics" / "m.json"
    atomic.write_json(target, {"r2": 0.8})

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text('{"r2": 0.')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, half_then_crash)
    assert json.loads(target.read_text()) == {"r2": 0.8}
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


def test_md5_is_the_plain_file_digest_dvc_records(tmp_path: Path) -> None:
    data = b"a,b\n1,2\r\n" * 1000  # DVC 3 hashes bytes as they are, line endings included
    path = atomic.write_bytes(tmp_path / "f.csv", data)
    assert atomic.md5_file(path, chunk=7) == hashlib.md5(data).hexdigest()


def test_read_json_default_only_for_a_missing_file(tmp_path: Path) -> None:
    assert atomic.read_json(tmp_path / "absent.json", []) == []
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError):
        atomic.read_json(tmp_path / "bad.json", [])
