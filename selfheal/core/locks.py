"""Named OS file locks with a note of who holds them, for a clear message to the one that waits.

The lock is an OS file lock (filelock): the kernel drops it when its holder dies, so a killed holder never
blocks the next one. The note beside it (JSON: what, pid, host, since) is only for messages.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from selfheal.core import atomic
from selfheal.core.clock import now_iso
from selfheal.core.errors import SelfHealError


class Held(SelfHealError):
    """The lock is held by someone else; `holder` is their note ({} when unknown)."""

    exit_code = 3

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def me(what: str) -> dict[str, Any]:
    """Who acts: `what` (e.g. "watch", "heal", "recover"), this pid and this host."""
    return {"actor": what, "pid": os.getpid(), "host": socket.gethostname()}


@contextmanager
def hold(lock_path: Path, note_path: Path, what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold `lock_path` for `what`; wait up to `wait` seconds, then raise Held naming the holder."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        holder = holder_of(note_path)
        raise Held(f"{lock_path}: held by {describe(holder)}", holder) from None
    try:
        # who holds it, for the next actor's message: void once the lock is released or its holder died
        atomic.write_json(note_path, {**me(what), "action": what, "since": now_iso()}, durable=False)
        yield
    finally:
        note_path.unlink(missing_ok=True)
        lock.release()


def holder_of(note_path: Path) -> dict[str, Any]:
    try:
        info = atomic.read_json(note_path, {}) or {}
    except ValueError:
        info = {}
    return info if isinstance(info, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    return f"{holder.get('action')} by pid {holder.get('pid')} since {holder.get('since')}"
