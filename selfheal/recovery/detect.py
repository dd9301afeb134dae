"""How the watcher notices a fault fast, without ever restarting a merely slow service.

- A crash needs no poll: between health checks the watcher waits on a pidfd (Linux >= 5.3) of the process
  that last answered healthy; it becomes readable the moment that process exits, and the next check runs at
  once. Elsewhere (or for a service in a container, whose pid is not ours to see) the interval's poll remains.
- A hang: a quick health check first (QUICK_TIMEOUT_S). No answer from a process the kernel shows as stopped
  (SIGSTOP) is a hang for sure; any other process must also miss a full health_timeout_seconds check before it
  counts as hung, so a service that is only slow under load is never restarted.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

import psutil

from selfheal.core.config import ServiceRecoveryParams
from selfheal.recovery.restarts import address
from selfheal.service import procs
from selfheal.service.client import Health, check_health

QUICK_TIMEOUT_S = 0.5
_SLICE_S = 0.1  # how often a wait looks at the stop event


class ExitWatch:
    """Follows the serving process (the pid /health reported) and says as soon as it exits."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self._fd: int | None = None
        self._pid: int | None = None

    def follow(self, pid: object) -> None:
        """Watch `pid` from now on, once the pid file verifies it as this project's service on `port` (anything
        else, e.g. a pid from a container's namespace: no watch, the interval's poll remains)."""
        if pid == self._pid and self._fd is not None:
            return
        self.close()
        if not isinstance(pid, int) or isinstance(pid, bool) or not hasattr(os, "pidfd_open"):
            return
        if self.port is not None and (procs.our_service(self.port) or {}).get("pid") != pid:
            return
        try:
            self._fd, self._pid = os.pidfd_open(pid), pid
        except OSError:  # gone already, or not permitted: the next poll will tell
            return

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to `seconds` (less once `stop` is set); True as soon as the followed process has exited."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._fd is None:
                stop.wait(min(left, _SLICE_S))
            elif select.select([self._fd], [], [], min(left, _SLICE_S))[0]:
                self.close()
                return True
        return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._pid = None


def probe(url: str, sr: ServiceRecoveryParams, check: Callable[[str, float], Health] = check_health) -> Health:
    """One health check as the watcher makes it (`check`: a configured project's probe): quick, and a hang
    confirmed before it counts (see above)."""
    quick = min(QUICK_TIMEOUT_S, sr.health_timeout_seconds)
    health = check(url, quick)
    if health.state == "unhealthy" and (pid := _stopped_service(url)) is not None:  # workers answer, master stopped
        return Health("hung", f"{health.detail}; pid {pid}, the service's master, is stopped (hang)",
                      seconds=health.seconds)
    if health.state != "hung" or quick >= sr.health_timeout_seconds:
        return health
    pid = _stopped_service(url)
    if pid is not None:
        return Health("hung", f"no answer from {url}/health within {quick:g} s and pid {pid} is stopped (hang)",
                      seconds=health.seconds)
    return check(url, sr.health_timeout_seconds)


def _stopped_service(url: str) -> int | None:
    """The pid of this project's service on the url's port when the kernel shows it stopped, else None."""
    info = procs.our_service(address(url)[1])
    if info is None:
        return None
    try:
        return info["pid"] if psutil.Process(info["pid"]).status() == psutil.STATUS_STOPPED else None
    except psutil.Error:
        return None
