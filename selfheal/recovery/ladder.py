"""Service auto-recovery (`selfheal recover`): detect, act, verify, log, and give up loudly.

Detection is one health check with a timeout: refused = crash ("down"), no answer in time = hang ("hung",
e.g. a SIGSTOPped process), any non-200 answer = "unhealthy" (503: no model). Methods, as in the seed:
cache (drop and reload the model), config (reload configuration, then the model), process (restart the
process), docker (restart the container), and auto, which escalates cache -> config -> process, starting
where it can help (a dead or hung process cannot reload anything, so those go straight to process).
At most max_recovery_attempts attempts with exponential backoff (tenacity); every attempt is an entry in
monitoring/recovery_log.json; when all fail, an alert (selfheal.core.alerts) and a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from selfheal.core import audit, clock, workspace
from selfheal.core.alerts import raise_alert
from selfheal.core.config import ServiceRecoveryParams
from selfheal.recovery.restarts import AttemptFailed, CannotRecover, Standby, address, restart_docker, restart_process
from selfheal.service import procs
from selfheal.service.client import Health, check_health, request_reload

Method = Literal["auto", "cache", "config", "process", "docker"]
METHODS: tuple[str, ...] = ("auto", "cache", "config", "process", "docker")
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


def _act(step: str, url: str, sr: ServiceRecoveryParams, health: Health, standby: Standby | None) -> str:
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
) -> Outcome:
    """Bring the service back to healthy, or log why not and raise an alert. Already healthy: nothing to do."""
    if method not in METHODS:
        raise ValueError(f"unknown recovery method {method!r}; expected one of {list(METHODS)}")
    url = service_url or sr.service_url
    started = time.monotonic()
    health = health or check_health(url, sr.health_timeout_seconds)
    if health.healthy:
        say(f"Health check passed: {url} {health.detail}")
        return Outcome(True, "healthy", health.detail)
    stop = procs.read_stop(address(url)[1]) if health.state == "down" else None
    if stop is not None:
        say(f"Service {url}: {procs.stopped_note(stop)}")
        return Outcome(False, "stopped", procs.stopped_note(stop))
    detected_at = clock.now_iso()
    state, limit = health.state, max_attempts or sr.max_recovery_attempts
    steps = ladder(method, state)
    say(f"Health check failed: {health.detail}")
    outcome = Outcome(False, state, health.detail)

    def attempt(n: int) -> None:
        step = steps[min(n, len(steps)) - 1]
        current = health if n == 1 else check_health(url, sr.health_timeout_seconds)
        say(f"Attempting auto-recovery ({n}/{limit}): {step}")
        outcome.attempts = n
        outcome.attempt_times.append(time.monotonic())
        try:
            note = current.detail if current.healthy else _act(step, url, sr, current, standby)
        except (AttemptFailed, CannotRecover) as exc:
            _log(url, state, health, step, n, limit, detected_at, False, None, str(exc))
            say(f"Recovery attempt {n} failed: {exc}")
            raise
        seconds = round(time.monotonic() - started, 2)
        _log(url, state, health, step, n, limit, detected_at, True, seconds, note)
        outcome.success, outcome.seconds_to_recover, outcome.detail = True, seconds, note
        say(f"Service recovered ({step}) in {seconds} s: {note}")

    def pause(seconds: float) -> None:  # `sleep` may be an Event.wait, which returns a bool
        sleep(seconds)

    retrying = Retrying(
        stop=stop_after_attempt(limit), retry=retry_if_exception_type(AttemptFailed), sleep=pause,
        wait=wait_exponential(multiplier=sr.backoff_seconds, min=sr.backoff_seconds, max=60),
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
            service_url=url, method=method, state=state, attempts=outcome.attempts, detected_at=detected_at,
        )
    return outcome


def _log(url: str, state: str, health: Health, step: str, n: int, limit: int, detected_at: str, ok: bool,
         seconds: float | None, note: str) -> None:
    audit.append(
        workspace.RECOVERY_LOG, ACTION, f"health check: {health.detail}", ok,
        detected_at=detected_at, method=step, attempt=n, max_attempts=limit, service_url=url, state=state,
        recovered_at=clock.now_iso() if ok else None, seconds_to_recover=seconds, details=note,
    )
