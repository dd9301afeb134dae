"""Atomic file writes and hashing: a killed writer never leaves a half-written file behind."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
TMP_SUFFIX = ".tmp"
PAUSE_ENV = "SELFHEAL_PAUSE_AT"


def atomic_write(path: str | Path, write: Callable[[Path], object], mode: int | None = None,
                 durable: bool = True) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    `mode` (e.g. 0o600 for files that may name private endpoints) replaces the umask-derived default.
    `durable=False` skips the fsync, for notes that mean nothing after a crash (a lock's holder): still never
    read half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # mkstemp makes 0600 files; give the result the mode a plain open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_UMASK if mode is None else mode)
        write(tmp)
        pause_at(f"write:{path.name}")
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def pause_at(step: str) -> None:
    """Crash tests only: when $SELFHEAL_PAUSE_AT names `step`, say so on stderr and wait to be killed there."""
    if os.environ.get(PAUSE_ENV) == step:
        print(f"paused at {step}", file=sys.stderr, flush=True)
        time.sleep(3600)


def sweep(folders: Iterable[str | Path], min_age_s: float = 3600.0) -> list[Path]:
    """Remove the temporary files killed atomic writes left in `folders`; returns what was removed.

    A temporary file names its writer's pid: one whose writer is gone is a leftover. One without a pid (or
    whose pid is reused) goes only after `min_age_s`, so a write in progress is never swept away.
    """
    removed = []
    for folder in map(Path, folders):
        for tmp in folder.glob(f".*{TMP_SUFFIX}") if folder.is_dir() else ():
            parts = tmp.name.rsplit(".", 3)  # .<name>.<pid>.<random>.tmp
            pid = int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None
            try:
                old = time.time() - tmp.stat().st_mtime > min_age_s
                if old or (pid is not None and pid != os.getpid() and not _running(pid)):
                    tmp.unlink()
                    removed.append(tmp)
            except OSError:
                continue
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str, mode: int | None = None, durable: bool = True) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode, durable)


def write_json(path: str | Path, obj: Any, mode: int | None = None, durable: bool = True) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", mode, durable)


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read JSON; a missing file gives `default` (a corrupt one is an error, never silently replaced)."""
    path = Path(path)
    if not path.exists():
        return default
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 of a file's bytes: the same digest DVC records in dvc.lock for a single-file output. A directory (the
    partitioned parquet of a large fix_data run) hashes its files' bytes in name order."""
    digest = hashlib.md5()
    if Path(path).is_dir():
        for part in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            digest.update(md5_file(part, chunk).encode())
        return digest.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
