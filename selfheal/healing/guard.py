"""Guards around every healing action: one actor at a time (a lock), and a backup before data is changed.

The lock is selfheal.core.locks' OS file lock: a killed heal never blocks the next one, and the one that waits
is told who holds it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from selfheal.core import atomic, locks, workspace
from selfheal.core.errors import SelfHealError


class Busy(SelfHealError):
    """Another heal, rollback, promotion or retrain holds the lock."""

    exit_code = 3


@contextmanager
def exclusive(what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the project's healing lock for `what`; wait up to `wait` seconds, then exit clearly."""
    acquired = False
    try:
        with locks.hold(workspace.HEAL_LOCK, workspace.HEAL_HOLDER, what, wait):
            acquired = True
            yield
    except locks.Held as exc:
        if acquired:  # another lock, taken inside the action
            raise
        raise Busy(
            f"{workspace.HEAL_LOCK}: another selfheal action is running ({locks.describe(exc.holder)}); "
            f"nothing was changed - retry later or pass --wait SECONDS"
        ) from None


def backup(paths: list[str | Path], label: str, root: Path = workspace.BACKUPS, link: bool = False) -> Path:
    """Copy each existing file to <root>/<UTC time>-<label>/<same relative path> (root: .selfheal/backups);
    returns that dir. `link`: hard-link instead (instant on a large file; a copy where links are impossible),
    only for files about to be replaced by an atomic rename, which leaves their old bytes to the backup alone."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = root / f"{stamp}-{label}"
    for path in map(Path, paths):
        if path.is_file():
            target = dest / _relative(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not (link and _linked(path, target)):
                shutil.copy2(path, target)
    return dest


def _linked(path: Path, target: Path) -> bool:
    """Hard-link `path` as `target`; False where the file system cannot (another device, no link support)."""
    try:
        os.link(path, target)
    except OSError:
        return False
    return True


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
