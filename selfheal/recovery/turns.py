"""One restarter at a time: `recover --watch` registers itself, and every recovery takes the restart lock.

`selfheal heal` defers to a running watcher (it recovers the service; two restarters would kill each other's
fresh process). Any two recoveries that still meet (`selfheal recover` by hand during a watch) queue on the
restart lock, and the second one first looks again: a service the first brought back is not restarted twice.
The watcher's record carries its process start time, so a stale file (a killed watcher, a reused pid) names
nobody.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from selfheal.core import atomic, locks, workspace
from selfheal.core.clock import now_iso
from selfheal.core.errors import SelfHealError


def running_watcher() -> dict[str, Any] | None:
    """The live watcher of this project on this host, or None: no record, or a stale or forged one. A record
    names a watcher only when its pid is alive, started at the recorded time, runs `selfheal recover --watch`
    and works in this project's directory."""
    try:
        info = atomic.read_json(workspace.WATCHER)
    except (ValueError, OSError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int) or info.get("host") != socket.gethostname():
        return None
    created = info.get("create_time")
    if isinstance(created, bool) or not isinstance(created, int | float):
        return None
    try:
        proc = psutil.Process(info["pid"])
        if abs(proc.create_time() - created) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmd, cwd = proc.cmdline(), proc.cwd()
    except psutil.Error:
        return None
    watching = "recover" in cmd and "--watch" in cmd
    return info if watching and Path(cwd).resolve() == Path.cwd().resolve() else None


@contextmanager
def registered_watcher(service_url: str) -> Iterator[dict[str, Any]]:
    """Record this process as the project's watcher while the body runs; a second live watcher is refused."""
    other = running_watcher()
    if other is not None:
        raise SelfHealError(f"{workspace.WATCHER}: watcher pid {other['pid']} already watches "
                            f"{other.get('service_url')} since {other.get('since')}; stop it first")
    me = psutil.Process()
    info = {**locks.me("watch"), "create_time": me.create_time(), "since": now_iso(), "service_url": service_url}
    atomic.write_json(workspace.WATCHER, info)
    try:
        yield info
    finally:
        current = running_watcher()
        if current is None or current["pid"] == info["pid"]:
            workspace.WATCHER.unlink(missing_ok=True)


def who(holder: dict[str, Any]) -> str:
    """`watch pid 123 on host` for a lock holder's or a log entry's actor fields."""
    return f"{holder.get('actor', '?')} pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
