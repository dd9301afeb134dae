"""Self-healing metrics from the audit logs: exact figures from known entries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.core.project import OURS, parse
from selfheal.healing.status import compute, lines, write_status

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(**delta) -> str:
    return (NOW - timedelta(**delta)).isoformat()


LOGS = {
    "data_fix": [
        {"timestamp": at(days=1), "action": "auto_fix", "success": True},
        {"timestamp": at(hours=5), "action": "auto_fix_data", "success": True},
        {"timestamp": at(hours=4), "action": "auto_fix", "success": False},
    ],
    "rollback": [
        {"timestamp": at(days=2), "action": "auto_rollback", "success": True, "duration_s": 0.5},
        {"timestamp": at(days=20), "action": "auto_rollback", "success": True, "duration_s": 1.5},
        {"timestamp": at(days=1), "action": "manual_rollback", "success": True, "duration_s": 1.0},
    ],
    "retrain": [
        {"timestamp": at(hours=10), "outcome": "promoted", "drift_detected_at": at(hours=10, minutes=2)},
        {"timestamp": at(hours=2), "outcome": "rolled_back", "drift_detected_at": at(hours=2, minutes=4)},
    ],
    "recovery": [  # one incident in two attempts (60 s down), one unrecovered incident still open (30 min)
        {"timestamp": at(hours=3), "success": False, "detected_at": at(hours=3, seconds=30)},
        {"timestamp": at(hours=3), "success": True, "detected_at": at(hours=3, seconds=30),
         "recovered_at": at(hours=2, minutes=59, seconds=30)},
        {"timestamp": at(minutes=29), "success": False, "detected_at": at(minutes=30)},
    ],
    "alerts": [{"timestamp": at(minutes=20), "action": "alert", "kind": "service_recovery_exhausted"}],
}


def test_metrics_from_known_logs() -> None:
    m = compute(LOGS, NOW)
    # fixed: 2 data fixes + 2 auto rollbacks + 2 retrains (promoted or safely rolled back) + 1 incident = 7 of 10
    assert m["issues_handled"] == {"data_fix": {"fixed": 2, "total": 3}, "rollback": {"fixed": 2, "total": 2},
                                   "retrain": {"fixed": 2, "total": 2}, "service": {"fixed": 1, "total": 2}}
    assert m["auto_fix_success_rate"] == 77.8
    assert m["rollback_frequency"] == {"auto_last_7d": 1, "all_last_7d": 2, "all_last_30d": 3, "per_week": 0.7}
    assert m["mean_service_recovery_s"] == 60.0
    assert m["mean_rollback_s"] == 1.0
    assert m["mean_time_to_recovery_s"] == pytest.approx((60 + 0.5 + 1.5 + 1.0) / 4, abs=1e-3)
    assert m["drift_response_time_s"] == 180.0
    down = 60 + 30 * 60
    assert m["service_uptime_pct"] == round(100 * (1 - down / (7 * 86400)), 3)
    assert m["service_incidents_7d"] == 2
    assert m["escalations"] == 1


def test_empty_logs_give_no_rates_and_full_uptime() -> None:
    m = compute({}, NOW)
    assert m["auto_fix_success_rate"] is None and m["mean_time_to_recovery_s"] is None
    assert m["service_uptime_pct"] == 100.0
    assert "n/a" in "\n".join(lines(m))


def test_write_status_reads_the_seed_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    audit.append(workspace.DATA_FIX_LOG, "auto_fix", "data changed", True)
    audit.update(workspace.RETRAINING_LOG, lambda d: {"last_retrain_time": None, "history": []}, default={})
    m = write_status(parse(OURS))
    on_disk = json.loads(workspace.SELF_HEALING.read_text())
    assert on_disk == m and m["auto_fix_success_rate"] == 100.0
