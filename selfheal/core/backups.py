"""Backups before data is changed: each file copied (or hard-linked, when it is about to be replaced by an
atomic rename) to <root>/<UTC time>-<label>/<its path in the project>, and put back atomically. In core, so the
intent journal can undo a killed action from its backup.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from selfheal.core import atomic, workspace


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


def restore_backup(backup_dir: Path, paths: list[str | Path]) -> list[str]:
    """Put backed-up files back atomically (files absent from the backup are left alone); returns those put back."""
    restored = []
    for path in map(Path, paths):
        saved = backup_dir / _relative(path)
        if saved.is_file():
            atomic.write_bytes(path, saved.read_bytes())
            restored.append(str(path))
    return restored
