"""The intent journal: an action that changes the project is recorded before it acts and cleared after it logged.

rollback, promote, retrain and fix-data each run inside `intent(...)`. A process killed in between (kill -9, a
lost runner) leaves its record in .selfheal/journal.json; the next selfheal action settles it first: when the
record says what a finished action leaves behind (files and their md5s) and the workspace shows exactly that,
the missing audit entry is written (marked `recovered_from_journal`); otherwise the interruption is logged in
monitoring/heal_log.json and reported, so nobody is told "healthy" over a half-done action, and what the
record names to undo (a retrain's data, from its backup) is put back and logged in the action's own log.
Settling also sweeps the temporary files killed atomic writes left behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, locks, workspace
from selfheal.core.clock import now_iso


def _records() -> list[dict[str, Any]]:
    data = audit.read(workspace.JOURNAL, [])
    return data if isinstance(data, list) else []


@contextmanager
def intent(action: str, log: Path, reason: str, **details: Any) -> Iterator[dict[str, Any]]:
    """Record `action` before the body acts; cleared when the body ends, by return or by an exception (an
    action that fails reports and logs that itself). The body may add `expect` ({path: md5} a finished action
    leaves) and `entry` (the details of the audit entry it is about to write) to the yielded record."""
    import psutil

    record = {"id": uuid.uuid4().hex, **locks.me(action), "create_time": psutil.Process().create_time(),
              "since": now_iso(), "log": str(log), "reason": reason, "details": details, "expect": {}, "entry": None}
    audit.update(workspace.JOURNAL, lambda rs: [*rs, record], default=[])
    try:
        yield record
    finally:
        _drop(record["id"])


def _drop(record_id: str) -> None:
    audit.update(workspace.JOURNAL, lambda rs: [r for r in rs if r.get("id") != record_id], default=[])


def note(record: dict[str, Any], expect: dict[str, str], entry: dict[str, Any]) -> None:
    """Before the last step: what the finished action leaves (`expect`), and the audit entry it will write."""
    record.update(expect=expect, entry=entry)
    audit.update(workspace.JOURNAL, lambda rs: [record if r.get("id") == record["id"] else r for r in rs], default=[])


def _finished(record: dict[str, Any]) -> bool:
    expect = record.get("expect") or {}
    return bool(expect) and record.get("entry") is not None and all(
        Path(path).is_file() and atomic.md5_file(path) == md5 for path, md5 in expect.items())


def _gone(record: dict[str, Any]) -> bool:
    """Its process is no longer running (a record from another host is taken as gone: the lock was ours)."""
    import psutil

    if record.get("host") != locks.me("")["host"]:
        return True
    try:
        return abs(psutil.Process(int(record.get("pid", 0))).create_time() - record.get("create_time", 0)) > 1.0
    except (psutil.Error, ValueError):
        return True


def _undo(undo: dict[str, Any] | None) -> list[str]:
    """Put back what a killed action backed up before it changed data (`undo`: {"backup": dir, "paths": [...]})."""
    if not undo:
        return []
    from selfheal.core.backups import restore_backup

    return restore_backup(Path(undo["backup"]), list(undo.get("paths") or []))


@dataclass
class Settled:
    swept: list[Path] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)  # finished actions whose log entry was missing
    interrupted: list[str] = field(default_factory=list)  # actions killed half-way

    def lines(self) -> list[str]:
        return [*(f"removed {tmp} (left by a killed write)" for tmp in self.swept), *self.completed,
                *self.interrupted]


def settle(data_folders: Iterable[str | Path] = ()) -> Settled:
    """Complete or report what killed actions left. Call it holding the healing lock, before acting."""
    found = Settled(swept=atomic.sweep([*workspace.WRITTEN_DIRS, *data_folders]))
    for record in [r for r in _records() if r.get("pid") != os.getpid() and _gone(r)]:
        what = f"{record['actor']} by pid {record['pid']} on {record['host']} since {record['since']}"
        if _finished(record):
            audit.append(record["log"], record["actor"], record["reason"], True, **record["entry"],
                         recovered_from_journal=True)
            found.completed.append(f"{what} was killed after it finished, before it logged; "
                                   f"logged it now in {record['log']}")
        else:
            undone = _undo(record.get("details", {}).get("undo"))
            audit.append(workspace.HEAL_LOG, f"interrupted_{record['actor']}", record["reason"], False,
                         interrupted=what, undone=undone or None, **record.get("details", {}))
            if undone:  # the action's own log says so too: it ended, undone, not "never happened"
                audit.append(record["log"], record["actor"], record["reason"], False, outcome="interrupted",
                             interrupted=what, undone=undone)
                found.interrupted.append(f"{what} was interrupted before it finished ({record['reason']}); undone: "
                                         f"{', '.join(undone)} put back from its backup; logged in {record['log']}")
            else:
                found.interrupted.append(f"{what} was interrupted before it finished ({record['reason']}); check "
                                         f"the workspace (`git status`, `dvc status`) and run it again")
        _drop(record["id"])
    return found
