"""Guards around every healing action: one actor at a time (a lock), and a backup before data is changed.

The lock is an OS file lock (filelock): the kernel drops it when its holder dies, so a killed heal never blocks
the next one. A small JSON file beside it says who holds it, for a clear message to the one that waits.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from selfheal.core import atomic, workspace
from selfheal.core.clock import now_iso
from selfheal.core.errors import SelfHealError


class Busy(SelfHealError):
    """Another heal, rollback, promotion or retrain holds the lock."""

    exit_code = 3


@contextmanager
def exclusive(what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the project's healing lock for `what`; wait up to `wait` seconds, then exit clearly."""
    workspace.HEAL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(workspace.HEAL_LOCK))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        holder = _holder()
        raise Busy(
            f"{workspace.HEAL_LOCK}: another selfheal action is running ({holder}); "
            f"nothing was changed - retry later or pass --wait SECONDS"
        ) from None
    try:
        atomic.write_json(workspace.HEAL_HOLDER, {"action": what, "pid": os.getpid(), "since": now_iso()})
        yield
    finally:
        workspace.HEAL_HOLDER.unlink(missing_ok=True)
        lock.release()


def _holder() -> str:
    try:
        info = atomic.read_json(workspace.HEAL_HOLDER, {}) or {}
    except ValueError:
        info = {}
    if not info:
        return "holder unknown"
    return f"{info.get('action')} by pid {info.get('pid')} since {info.get('since')}"


def backup(paths: list[str | Path], label: str) -> Path:
    """Copy each existing file to .selfheal/backups/<UTC time>-<label>/<same relative path>; returns that dir."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = workspace.BACKUPS / f"{stamp}-{label}"
    for path in map(Path, paths):
        if path.is_file():
            target = dest / _relative(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    return dest


def _relative(path: Path) -> Path:
    """A file's place inside a backup: its path in the project, or its absolute path without the root."""
    path = path.absolute()
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return Path(*path.parts[1:])


def restore_backup(backup_dir: Path, paths: list[str | Path]) -> None:
    """Put backed-up files back atomically (files absent from the backup are left alone)."""
    for path in map(Path, paths):
        saved = backup_dir / _relative(path)
        if saved.is_file():
            atomic.write_bytes(path, saved.read_bytes())
