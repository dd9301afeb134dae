"""What a person must look at before selfheal acts on it again: one record per issue, shared by every actor.

The watcher that stops restarting a service (a restart storm) records it here; heal then refuses to restart that
service too, instead of undoing the watcher's judgement, until a person runs `selfheal acknowledge service`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfheal.core import audit, workspace
from selfheal.core.clock import now_iso


def raise_for(issue: str, reason: str, path: Path = workspace.ESCALATED) -> None:
    """Record that `issue` needs a person (the latest reason wins)."""
    audit.update(path, lambda records: {**records, issue: {"reason": reason, "since": now_iso()}}, default={})


def pending(issue: str, path: Path = workspace.ESCALATED) -> dict[str, Any] | None:
    """The unacknowledged escalation of `issue`, or None."""
    records = audit.read(path, {})
    found = records.get(issue) if isinstance(records, dict) else None
    return found if isinstance(found, dict) else None


def acknowledge(issue: str | None, path: Path = workspace.ESCALATED) -> list[str]:
    """A person looked: clear `issue` (every issue when None); returns the issues cleared."""
    records = audit.read(path, {})
    records = records if isinstance(records, dict) else {}
    cleared = [i for i in records if issue is None or i == issue]
    audit.update(path, lambda rs: {i: r for i, r in (rs if isinstance(rs, dict) else {}).items() if i not in cleared},
                 default={})
    return cleared
