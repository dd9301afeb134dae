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


def test_sweep_removes_only_temp_files_whose_writer_is_gone(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".model.joblib.{dead.pid}.abc123.tmp"
    mine = tmp_path / f".model.joblib.{os.getpid()}.def456.tmp"  # a write in progress
    unknown = tmp_path / ".model.joblib.ghi789.tmp"  # an old-style name: only once it is old
    keep = tmp_path / "model.joblib"
    for path in (left, mine, unknown, keep):
        path.write_text("x")
    assert atomic.sweep([tmp_path, tmp_path / "absent"]) == [left]
    assert mine.exists() and unknown.exists() and keep.exists()
    assert set(atomic.sweep([tmp_path], min_age_s=-1)) == {mine, unknown} and keep.exists()  # past the age limit
