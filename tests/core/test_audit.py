"""The audit trail: seed-format entries, valid JSON at every instant, nothing lost to concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from selfheal.core import audit, clock
from selfheal.core.errors import SelfHealError


def _append_many(path: str, who: int, n: int) -> None:
    for i in range(n):
        audit.append(path, "service_recovery", f"writer {who} entry {i}", True, writer=who)


def test_entries_have_the_seed_format(tmp_path: Path) -> None:
    log = tmp_path / "models" / "rollback_log.json"
    entry = audit.append(log, "auto_rollback", "Model accuracy 0.65 below threshold 0.70", True,
                         version_restored="v0.0.1")
    assert list(entry)[:4] == ["timestamp", "action", "reason", "success"]
    assert json.loads(log.read_text()) == [entry]
    assert clock.parse_time(entry["timestamp"]).tzinfo is not None


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    log = tmp_path / "monitoring" / "recovery_log.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(log), who, 15)) for who in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    entries = audit.entries(log)
    assert len(entries) == 45
    assert {(e["writer"], e["reason"]) for e in entries} == {
        (w, f"writer {w} entry {i}") for w in range(3) for i in range(15)
    }


def test_retraining_log_keeps_its_history_under_a_key(tmp_path: Path) -> None:
    log = tmp_path / "retraining_log.json"
    log.write_text(json.dumps({"last_retrain_time": "2024-11-25T10:30:00", "history": [{"action": "retrain"}]}))
    assert audit.entries(log) == [{"action": "retrain"}]
    # the guide's naive timestamps are read as UTC
    assert clock.parse_time("2024-11-25T10:30:00").utcoffset().total_seconds() == 0


def test_a_corrupt_log_is_a_clear_error_never_overwritten(tmp_path: Path) -> None:
    log = tmp_path / "data_fix_log.json"
    log.write_text("[{")
    with pytest.raises(SelfHealError, match=r"data_fix_log\.json: audit log is not valid JSON"):
        audit.append(log, "data_fix", "x", True)
    assert log.read_text() == "[{"
