"""Talking to a running service from other processes: health checks (recovery, heal) and reloads (rollback).

Light on purpose (requests only, imported when a request is made): recovery and rollback import this without
the web stack or the model libraries.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from selfheal.core import workspace
from selfheal.service import procs

State = Literal["healthy", "unhealthy", "down", "hung", "foreign"]
TOKEN_ENV = "SELFHEAL_ADMIN_TOKEN"  # the same variable the service reads


@dataclass(frozen=True)
class Health:
    """healthy: 200; unhealthy: answered but not 200 (503: no model); down: refused; hung: no answer in time;
    foreign: something answers that is not this project's service (another project's, or not selfheal)."""

    state: State
    detail: str
    status_code: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


def probe(url: str, timeout: float = 2.0, project: str | None = None) -> Health:
    """One GET of a health URL with a hard timeout (a stopped, SIGSTOPped process accepts the connection but
    never answers): 200 healthy, another code unhealthy, refused down, no answer in time hung. With `project`, the
    answer counts only if its JSON names that project (selfheal's own service does: workspace.project_id); anything
    else answering there is `foreign`. The standard library's client: a healthy heal does not import requests."""
    import http.client
    import json
    import urllib.error
    import urllib.request

    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            code, reason, raw = resp.status, resp.reason, resp.read()
    except urllib.error.HTTPError as exc:
        code, reason, raw = exc.code, exc.reason, exc.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        seconds = time.perf_counter() - started
        if isinstance(why, TimeoutError):
            return Health("hung", f"no answer from {url} within {timeout:g} s (hang)", seconds=seconds)
        if isinstance(exc, http.client.HTTPException) or isinstance(why, ConnectionResetError):
            return Health("down", f"{url} broke off its answer (crash): {_reason(why)}", seconds=seconds)
        return Health("down", f"{url} not reachable (crash or not started): {_reason(why)}", seconds=seconds)
    seconds = time.perf_counter() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    if project is not None and body.get("project") != project:
        whose = f"project {body['project']}" if body.get("project") else "no selfheal project identity"
        return Health("foreign", f"{url} answers as another project's service ({whose}; this project is "
                      f"{project}): not ours, left alone", code, body, seconds)
    if code == 200 and body.get("status", "ok") == "ok":
        detail = f"healthy, model {body.get('model_version')}" if project is not None else f"{url} answered 200"
        return Health("healthy", detail, 200, body, seconds)
    why = body.get("last_reload_error") or body.get("status") or reason
    return Health("unhealthy", f"{url} answered {code}: {why}", code, body, seconds)


def check_health(service_url: str, timeout: float = 2.0, root: str | Path = ".") -> Health:
    """`probe` of selfheal's own service: its /health, answering as the project at `root`."""
    return probe(service_url.rstrip("/") + "/health", timeout, workspace.project_id(root))


def _reason(exc: object) -> str:
    text = str(exc)
    for known in ("Connection refused", "Connection reset", "No route to host", "Name or service not known"):
        if known in text:
            return known
    return text.splitlines()[0][:200] if text else type(exc).__name__


def request_reload(
    service_url: str, token: str | None = None, expected_md5: str | None = None, config: bool = False,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Ask the running service to load the model file again (and swap atomically).

    POST /admin/reload (a bearer token from `token` or $SELFHEAL_ADMIN_TOKEN if set) once /health said the
    service is this project's; if it cannot be reached or refuses the caller, SIGHUP to the pid in
    `.selfheal/service.pid` once that pid is verified as this project's service. Never raises for a service that
    is not running; never reloads another project's. Returns {"reloaded": bool | None, "via": "http"|"sighup"|None,
    ...}: reloaded is None when a signal was sent (its outcome shows on /health).
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {k: v for k, v in {"expected_md5": expected_md5, "config": config or None}.items() if v is not None}
    health = check_health(service_url, min(timeout, 5.0))
    if health.state == "foreign":
        return {"reloaded": False, "via": None, "foreign": True, "error": health.detail}
    http_error = health.detail
    if health.state in ("healthy", "unhealthy"):
        import requests

        try:
            resp = requests.post(service_url.rstrip("/") + "/admin/reload", json=body, headers=headers,
                                 timeout=timeout)
            if resp.status_code in (200, 409):
                return {**resp.json(), "via": "http"}
            http_error = f"/admin/reload answered {resp.status_code}: {resp.text[:200]}"
        except requests.RequestException as exc:
            http_error = f"{service_url} not reachable: {_reason(exc)}"
    info = procs.our_service(urlsplit(service_url).port)
    if info is not None and info.get("state") == "serving":  # before that, SIGHUP's default action ends it
        os.kill(info["pid"], signal.SIGHUP)
        return {"reloaded": None, "via": "sighup", "pid": info["pid"], "error": http_error}
    return {"reloaded": False, "via": None, "error": f"{http_error}; no running service of this project in "
                                                     f"{workspace.PID_FILE}"}


def reload_service(service_url: str | None, md5: str | None = None) -> bool | str | None:
    """Ask a running prediction service to swap to the restored model (True/False; None: signalled, see /health).

    No service running is normal (False); a service that refuses is reported, never undoing the rollback."""
    if not service_url:
        return False
    try:
        result = request_reload(service_url, expected_md5=md5)
    except Exception as exc:  # a failed reload must not turn a finished rollback into an error
        return f"not reloaded: {type(exc).__name__}: {exc}"
    if result.get("reloaded") is False and (result.get("via") or result.get("foreign")):
        return f"not reloaded: {result.get('error') or result}"
    return result.get("reloaded")


def reloader(service_url: str | None) -> Callable[[str | None], bool | str | None]:
    """What promote and rollback call once production's bytes changed: reload the service at `service_url`."""
    return lambda md5: reload_service(service_url, md5)
