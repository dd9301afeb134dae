"""`selfheal recover --watch`: keep the service healthy until stopped, without restart storms.

Every `interval` seconds one health check, and one at once when the serving process exits (recovery/detect.py:
a crash needs no poll, a hang is confirmed before it counts); on a failure, the same recovery as `selfheal
recover`. The attempt budget is shared over a sliding window: at most max_recovery_attempts attempts within watch_window_minutes.
A fault that finds the budget spent is a restart storm: alert, stop, exit non-zero, so a person looks
before anything restarts again. With warm_standby, a spare process that has already imported everything
forks each replacement (see service/server.py), which turns a ~6 s cold start into a fraction of a second, and
stays warm for the next fault.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable

from selfheal.core import escalation
from selfheal.core.alerts import raise_alert
from selfheal.core.config import ServiceRecoveryParams
from selfheal.core.errors import SelfHealError
from selfheal.recovery.detect import ExitWatch, probe
from selfheal.recovery.ladder import recover
from selfheal.recovery.restarts import Standby, address, standby_for
from selfheal.recovery.target import OWN, Target
from selfheal.recovery.turns import registered_watcher
from selfheal.service.client import Health


def watch(
    sr: ServiceRecoveryParams,
    method: str = "auto",
    service_url: str | None = None,
    interval: float | None = None,
    stop: threading.Event | None = None,
    say: Callable[[str], None] = print,
    target: Target = OWN,
) -> int:
    """Run until `stop` is set (SIGINT/SIGTERM set it when run from the CLI); returns the exit code."""
    if not sr.auto_recovery_enabled:
        raise SelfHealError("service_recovery.auto_recovery_enabled is false: --watch would not act; enable it")
    url = service_url or sr.service_url
    interval = interval or sr.watch_interval_seconds
    stop = stop or threading.Event()
    with registered_watcher(url):  # `selfheal heal` leaves the service to this watcher meanwhile
        use_standby = sr.warm_standby and method in ("auto", "process") and not sr.start_command
        standby = standby_for(url, sr) if use_standby else None
        say(f"Watching {url} every {interval:g} s (method {method}, at most {sr.max_recovery_attempts} attempts "
            f"per {sr.watch_window_minutes:g} min{', warm standby' if standby else ''})")
        try:
            code = _loop(sr, method, url, interval, stop, standby, say, target)
        finally:
            if standby is not None:
                standby.close()
    if code == 0:
        say("Watch stopped")
    return code


def _loop(sr: ServiceRecoveryParams, method: str, url: str, interval: float, stop: threading.Event,
          standby: Standby | None, say: Callable[[str], None], target: Target) -> int:
    """Check, and recover within the sliding window's attempt budget; returns the exit code."""
    window = sr.watch_window_minutes * 60
    attempts: deque[float] = deque()
    exits = ExitWatch(address(url)[1])
    warm = False
    try:
        while not stop.is_set():
            if standby is not None:
                standby.ensure()
                if standby.ready.is_set() and not warm and standby.proc is not None:
                    say(f"Warm standby ready (pid {standby.proc.pid})")
                warm = standby.ready.is_set()
            health = probe(url, sr, target.check)
            if health.healthy:
                exits.follow(health.body.get("pid"))
                exits.wait(interval, stop)  # returns at once when the serving process exits
                continue
            code = _recover(sr, method, url, health, standby, attempts, window, stop, say, target)
            if code is not None:
                return code
    finally:
        exits.close()
    return 0


def _recover(sr: ServiceRecoveryParams, method: str, url: str, health: Health, standby: Standby | None,
             attempts: deque[float], window: float, stop: threading.Event, say: Callable[[str], None],
             target: Target) -> int | None:
    """Recover within the sliding window's budget; the exit code when the watch must end, else None."""
    now = time.monotonic()
    while attempts and now - attempts[0] > window:
        attempts.popleft()
    budget = sr.max_recovery_attempts - len(attempts)
    if budget <= 0:
        reason = (f"{url}: {health.detail}; {len(attempts)} recovery attempts in the last "
                  f"{sr.watch_window_minutes:g} min already: not restarting again, a person should look")
        raise_alert("service_restart_storm", reason, target.alerts, service_url=url, attempts=len(attempts),
                    window_minutes=sr.watch_window_minutes)
        escalation.raise_for("service", f"the watcher stopped restarting it (restart storm): {reason}")
        return 1
    outcome = recover(sr, method, url, standby=standby, max_attempts=budget, health=health,
                      sleep=stop.wait, say=say, actor="watch", target=target)
    attempts.extend(outcome.attempt_times)
    if not outcome.success:
        return 1 if not stop.is_set() else 0
    return None


def watch_until_signalled(sr: ServiceRecoveryParams, method: str, service_url: str | None,
                          interval: float | None, target: Target = OWN) -> int:
    """The CLI's watch: SIGINT or SIGTERM ends the loop cleanly (the spare is told to exit)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return watch(sr, method, service_url, interval, stop, target=target)
