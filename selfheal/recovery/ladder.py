"""Service auto-recovery (`selfheal recover`): detect, act, verify, log, and give up loudly.

Detection is one health check with a timeout: refused = crash ("down"), no answer in time = hang ("hung",
e.g. a SIGSTOPped process), any non-200 answer = "unhealthy" (503: no model). Methods, as in the guide:
cache (drop and reload the model), config (reload configuration, then the model), process (restart the
process), docker (restart the container), and auto, which escalates cache -> config -> process, starting
where it can help (a dead or hung process cannot reload anything, so those go straight to process).
At most max_recovery_attempts attempts with exponential backoff (tenacity); every attempt is an entry in
monitoring/recovery_log.json naming who acted (actor watch / heal / recover, pid, host); when all fail, an
alert (selfheal.core.alerts) and a non-zero exit. Recoveries take turns on the restart lock (recovery/turns.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from selfheal.core import audit, clock, locks, workspace
from selfheal.core.alerts import raise_alert
from selfheal.core.config import ServiceRecoveryParams
from selfheal.recovery.restarts import (
    AttemptFailed,
    CannotRecover,
    Refaulted,
    Standby,
    address,
    restart_docker,
    restart_process,
)
from selfheal.recovery.target import OWN, Target
from selfheal.recovery.turns import who
from selfheal.service import procs
from selfheal.service.client import Health, check_health, request_reload

ACTION = "service_recovery"


@dataclass
class Outcome:
    success: bool
    state: str  # what was detected: healthy | unhealthy | down | hung
    detail: str
    attempts: int = 0
    seconds_to_recover: float | None = None
    attempt_times: list[float] = field(default_factory=list)  # monotonic, for the supervisor's window
    alert: dict | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.success else 1


def ladder(method: str, state: str) -> list[str]:
    """The steps to try in order; the last one repeats while attempts remain."""
    if method != "auto":
        return [method]
    return ["cache", "config", "process"] if state == "unhealthy" else ["process"]


def _reload(service_url: str, sr: ServiceRecoveryParams, config: bool) -> str:
    result = request_reload(service_url, config=config, timeout=sr.startup_timeout_seconds)
    if result.get("via") != "http" or not result.get("reloaded"):
        raise AttemptFailed(f"reload failed: {result.get('error')}")
    health = check_health(service_url, sr.health_timeout_seconds)
    if not health.healthy:
        raise AttemptFailed(f"reloaded model {result.get('model_version')}, but {health.detail}")
    return f"reloaded model {result.get('model_version')}{' and configuration' if config else ''}"


def _act(step: str, url: str, sr: ServiceRecoveryParams, health: Health, standby: Standby | None,
         target: Target) -> str:
    if target.act is not None:  # a configured project's service: its own steps
        return target.act(step, url, sr, health)
    if health.state == "foreign":  # nothing of ours to reload or restart: never touch another project's service
        raise CannotRecover(health.detail)
    if step in ("cache", "config"):
        return _reload(url, sr, config=step == "config")
    if step == "process":
        return restart_process(url, sr, health, standby)
    return restart_docker(url, sr)


def recover(
    sr: ServiceRecoveryParams,
    method: str = "auto",
    service_url: str | None = None,
    *,
    standby: Standby | None = None,
    max_attempts: int | None = None,
    health: Health | None = None,
    sleep: Callable[[float], object] = time.sleep,
    say: Callable[[str], None] = print,
    actor: str = "recover",
    target: Target = OWN,
) -> Outcome:
    """Bring the service back to healthy, or log why not and raise an alert. Already healthy: nothing to do.

    `actor` (watch, heal or recover) is logged with this pid and host. The attempts run under the restart lock;
    when another restarter held it, or logged a recovery meanwhile, the health is checked again first.
    """
    if method not in target.methods:
        raise ValueError(f"unknown recovery method {method!r}; expected one of {list(target.methods)}")
    url = service_url or sr.service_url
    started = time.monotonic()
    logged = len(audit.entries(target.log))
    health = health or target.check(url, sr.health_timeout_seconds)
    if health.healthy:
        say(f"Health check passed: {url} {health.detail}")
        return Outcome(True, "healthy", health.detail)
    stop = procs.read_stop(address(url)[1]) if health.state == "down" else None
    if stop is not None:
        say(f"Service {url}: {procs.stopped_note(stop)}")
        return Outcome(False, "stopped", procs.stopped_note(stop))
    with ExitStack() as turn:
        other = _take_turn(turn, actor, sr, say)
        since = audit.entries(target.log)[logged:]
        other = other or next((e for e in reversed(since) if e.get("success")), None)
        if other is not None:
            health = target.check(url, sr.health_timeout_seconds)
            if health.healthy:
                note = f"recovered by {who(other)}, not by this {actor}: {health.detail}"
                say(f"Service already recovered: {note}")
                return Outcome(True, "healthy", note)
        return _attempts(sr, method, url, health, standby, max_attempts, sleep, say, actor, started, target)


def _take_turn(turn: ExitStack, actor: str, sr: ServiceRecoveryParams, say: Callable[[str], None]
               ) -> dict | None:
    """Enter the restart lock; returns the holder we waited for (None when it was free)."""
    try:
        turn.enter_context(locks.hold(workspace.RESTART_LOCK, workspace.RESTART_HOLDER, actor))
        return None
    except locks.Held as exc:
        say(f"Another restarter is at work ({who(exc.holder)}); waiting for it")
        wait = sr.startup_timeout_seconds * sr.max_recovery_attempts + sr.kill_grace_seconds
        turn.enter_context(locks.hold(workspace.RESTART_LOCK, workspace.RESTART_HOLDER, actor, wait))
        return exc.holder or {"actor": "another restarter"}


def _attempts(sr: ServiceRecoveryParams, method: str, url: str, health: Health, standby: Standby | None,
              max_attempts: int | None, sleep: Callable[[float], object], say: Callable[[str], None], actor: str,
              started: float, target: Target) -> Outcome:
    """The ladder's attempts with backoff, each logged; an alert when all fail."""
    detected_at = clock.now_iso()
    state, limit = health.state, max_attempts or sr.max_recovery_attempts
    steps = (target.steps or ladder)(method, state)
    say(f"Health check failed: {health.detail}")
    outcome = Outcome(False, state, health.detail)
    by = locks.me(actor)

    def attempt(n: int) -> None:
        step = steps[min(n, len(steps)) - 1]
        current = health if n == 1 else target.check(url, sr.health_timeout_seconds)
        say(f"Attempting auto-recovery ({n}/{limit}): {step}")
        outcome.attempts = n
        outcome.attempt_times.append(time.monotonic())
        try:
            note = current.detail if current.healthy else _act(step, url, sr, current, standby, target)
        except (AttemptFailed, CannotRecover) as exc:
            _log(target.log, url, state, health, step, n, limit, detected_at, False, None, str(exc), by)
            say(f"Recovery attempt {n} failed: {exc}")
            raise
        seconds = round(time.monotonic() - started, 2)
        _log(target.log, url, state, health, step, n, limit, detected_at, True, seconds, note, by)
        outcome.success, outcome.seconds_to_recover, outcome.detail = True, seconds, note
        say(f"Service recovered ({step}) in {seconds} s: {note}")

    def pause(seconds: float) -> None:  # `sleep` may be an Event.wait, which returns a bool
        sleep(seconds)

    backoff = wait_exponential(multiplier=sr.backoff_seconds, min=sr.backoff_seconds, max=60)

    def wait(state: RetryCallState) -> float:  # a restart that worked, then a new fault: try again at once
        failed = state.outcome.exception() if state.outcome is not None else None
        return 0.0 if isinstance(failed, Refaulted) else backoff(state)

    retrying = Retrying(
        stop=stop_after_attempt(limit), retry=retry_if_exception_type(AttemptFailed), sleep=pause, wait=wait,
    )
    try:
        for tries in retrying:
            with tries:
                attempt(tries.retry_state.attempt_number)
    except (RetryError, AttemptFailed, CannotRecover) as exc:
        cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
        outcome.detail = str(cause)
        outcome.alert = raise_alert(
            "service_recovery_exhausted",
            f"{url}: recovery failed after {outcome.attempts} attempt(s) ({method}); last error: {str(cause)[:500]}",
            target.alerts, service_url=url, method=method, state=state, attempts=outcome.attempts,
            detected_at=detected_at,
        )
    return outcome


def _log(log: Path, url: str, state: str, health: Health, step: str, n: int, limit: int, detected_at: str, ok: bool,
         seconds: float | None, note: str, by: dict) -> None:
    audit.append(
        log, ACTION, f"health check: {health.detail}", ok,
        detected_at=detected_at, method=step, attempt=n, max_attempts=limit, service_url=url, state=state,
        recovered_at=clock.now_iso() if ok else None, seconds_to_recover=seconds, details=note, **by,
    )
