"""The audit trail: the guide's log files, each valid JSON at every instant (atomic rewrite under a file lock).

Entries follow the guide's format: timestamp, action, reason, success, plus the host name and action-specific
details.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfheal.core import atomic
from selfheal.core.clock import now_iso
from selfheal.core.errors import SelfHealError

if TYPE_CHECKING:
    from filelock import FileLock


def _lock(path: Path) -> FileLock:
    from filelock import FileLock  # writing only: reading a log (a healthy heal) needs no lock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=60)


def _read(path: Path, default: Any) -> Any:
    try:
        return atomic.read_json(path, default)
    except ValueError as exc:
        raise SelfHealError(f"{path}: audit log is not valid JSON ({exc}); fix or move it aside") from None


def read(path: str | Path, default: Any = None) -> Any:
    """A log's whole content (a list, or the retraining log's dict); `default` when the file is absent."""
    return _read(Path(path), default)


def update(path: str | Path, change: Callable[[Any], Any], default: Any, mode: int | None = None) -> Any:
    """Read-modify-write a JSON log under its lock; the new content replaces the file atomically (`mode`: see
    atomic.atomic_write)."""
    path = Path(path)
    with _lock(path):
        new = change(_read(path, default))
        atomic.write_json(path, new, mode)
        return new


def entry(action: str, reason: str, success: bool, **details: Any) -> dict[str, Any]:
    """One seed-format entry, stamped now and with the host that acted (several runners may share a repo)."""
    return {"timestamp": now_iso(), "action": action, "reason": reason, "success": success,
            "host": socket.gethostname(), **details}


def add(path: str | Path, new: dict[str, Any], mode: int | None = None) -> dict[str, Any]:
    """Append `new` to a log (`mode`: see atomic.atomic_write) and return it; the retraining log keeps its
    entries under `history`."""
    def change(data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "history": [*data.get("history", []), new]}
        return [*data, new]

    update(path, change, default=[], mode=mode)
    return new


def append(path: str | Path, action: str, reason: str, success: bool, **details: Any) -> dict[str, Any]:
    """Append one seed-format entry to a log and return it."""
    return add(path, entry(action, reason, success, **details))


def entries(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a list-shaped log (the retraining log keeps its list under `history`)."""
    data = _read(Path(path), [])
    if isinstance(data, dict):
        return list(data.get("history", []))
    return list(data)
