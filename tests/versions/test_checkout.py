"""restore_stages: verified bytes or nothing, except an uncached report, which never blocks a restore."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from selfheal.core.errors import SelfHealError
from selfheal.versions.checkout import restore_stages

ROOT = Path(__file__).resolve().parents[2]
DRIFT, REPORT = "metrics/drift.json", "monitoring/drift_report.html"


def _lock(files: dict[str, bytes]) -> dict:
    outs = [{"path": p, "md5": hashlib.md5(data).hexdigest()} for p, data in files.items()]
    return {"monitor": {"cmd": "python -m stages.monitor", "outs": outs}}


@pytest.fixture()
def cwd(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_a_missing_uncached_report_is_left_not_fatal(cwd: Path, capsys: pytest.CaptureFixture) -> None:
    """`dvc exp apply` deletes monitoring/drift_report.html; the undo of a retrain then failed."""
    lock = _lock({DRIFT: b'{"drift_detected": true}', REPORT: b"<html>report</html>"})
    restored = restore_stages(lock, ["monitor"], lambda p: b'{"drift_detected": true}' if p == DRIFT else None, cwd)
    assert restored == {DRIFT: hashlib.md5(b'{"drift_detected": true}').hexdigest()}
    assert (cwd / DRIFT).read_bytes() == b'{"drift_detected": true}' and not (cwd / REPORT).exists()
    assert yaml.safe_load((cwd / "dvc.lock").read_text())["stages"]["monitor"] == lock["monitor"]
    assert f"{REPORT}: no copy with the recorded md5" in capsys.readouterr().out


def test_a_missing_metric_still_blocks_and_changes_nothing(cwd: Path) -> None:
    lock = _lock({DRIFT: b"{}", REPORT: b"<html/>"})
    with pytest.raises(SelfHealError, match=f"{DRIFT}: no copy with the recorded md5"):
        restore_stages(lock, ["monitor"], lambda p: b"<html/>" if p == REPORT else None, cwd)
    assert not (cwd / REPORT).exists() and not (cwd / "dvc.lock").exists()
