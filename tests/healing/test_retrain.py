"""Retraining: the cooldown decision (pure, in the policy), folding the current batch, and a retrain that is not due.

The retrains that really run `dvc repro` are in tests/scenarios/test_heal_scenarios.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.core.config import parse_params
from selfheal.core.errors import DataError
from selfheal.core.project import OURS, parse
from selfheal.healing.observe import last_retrain_time
from selfheal.healing.policy import retrain_decision
from selfheal.healing.retrain import fold_current, retrain

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def verdict(**kw):
    args = dict(drift_detected=True, drift_score=0.82, threshold=0.5, last_retrain=None, now=NOW, cooldown_hours=24)
    return retrain_decision(**{**args, **kw})


def test_drift_above_threshold_without_history_retrains() -> None:
    v = verdict()
    assert v.retrain and "0.82" in v.reason and "conditions met" in v.reason


@pytest.mark.parametrize("score", [0.9, 0.12, 0.0])
def test_no_drift_verdict_does_not_retrain_whatever_the_score(score: float) -> None:
    v = verdict(drift_detected=False, drift_score=score)
    assert not v.retrain and "No retraining needed: no drift detected" in v.reason


def test_the_monitors_verdict_is_not_judged_again() -> None:
    """The decision follows drift_detected; a score below some other threshold does not overrule it."""
    assert verdict(drift_detected=True, drift_score=0.12, threshold=0.5).retrain


def test_cooldown_blocks_until_it_has_passed() -> None:
    v = verdict(last_retrain=NOW - timedelta(hours=23))
    assert not v.retrain and v.next_allowed == NOW + timedelta(hours=1) and "cooldown" in v.reason
    assert verdict(last_retrain=NOW - timedelta(hours=24)).retrain
    assert verdict(last_retrain=NOW - timedelta(hours=3), cooldown_hours=2).retrain


def test_force_skips_the_cooldown_but_not_the_drift_condition() -> None:
    assert verdict(last_retrain=NOW - timedelta(minutes=5), force=True).retrain
    assert not verdict(drift_detected=False, force=True).retrain


def test_disabled_auto_retrain_is_reported_as_config() -> None:
    v = verdict(enabled=False)
    assert not v.retrain and v.blocked_by_config and "auto_retrain_enabled" in v.reason
    assert verdict(enabled=False, force=True).retrain  # an explicit --force is the user's decision


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("a,b,y\n" + "".join(r + "\n" for r in rows))
    return path


def test_fold_appends_only_new_labelled_rows_and_is_idempotent(tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw.csv", ["1,2,3", "4, 5 ,6"])
    current = _csv(tmp_path / "cur.csv", ["1,2,3", "7,8,9", "7,8,9", "10,11,"])
    before = raw.read_bytes()
    assert fold_current(raw, current, "y") == 1
    assert raw.read_bytes() == before + b"7,8,9\n"  # the raw bytes are kept as they were, new rows appended
    assert fold_current(raw, current, "y") == 0
    assert raw.read_bytes() == before + b"7,8,9\n"


def test_fold_reorders_columns_and_refuses_unlabelled_batches(tmp_path: Path) -> None:
    raw = _csv(tmp_path / "raw.csv", ["1,2,3"])
    current = tmp_path / "cur.csv"
    current.write_text("y,b,a\n9,8,7\n")
    assert fold_current(raw, current, "y") == 1 and raw.read_text().endswith("7,8,9\n")
    current.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="no target column 'y'"):
        fold_current(raw, current, "y")


def test_retrain_not_due_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    ours = parse(OURS).with_params(parse_params({}))
    assert retrain(ours, drift_detected=True, drift_score=0.3) is None
    assert "No retraining needed" in capsys.readouterr().out
    recent = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0).isoformat()
    audit.update(workspace.RETRAINING_LOG, lambda d: {"last_retrain_time": recent, "history": []}, default={})
    assert last_retrain_time(workspace.RETRAINING_LOG) is not None
    assert retrain(ours, drift_detected=True, drift_score=0.9) is None
    assert "in cooldown until" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["retraining_log.json", "retraining_log.json.lock"]


def test_fold_compares_rows_by_value_not_text(tmp_path: Path) -> None:
    """After `selfheal fix-data` rewrote raw (41 -> 41.0), the batch's copies of raw rows came back."""
    raw = _csv(tmp_path / "raw.csv", ["41.0,2.5,3.0", "4.0,5.0,6.0", "1.1,1.0,1.2", "0.1234567895,1,2"])
    current = _csv(tmp_path / "cur.csv", ["41,2.50,3", " 4 ,5,6.000000000001", "1.1,1,N/A", "7,8,9", "7.0,8,9",
                                          "0.12345678950001,1,2", "0.1234568,1,2"])
    assert fold_current(raw, current, "y") == 2
    assert raw.read_text().endswith("0.1234567895,1,2\n7,8,9\n0.1234568,1,2\n")
