"""Alerts: when self-healing gives up, a person must know.

Every alert is a seed-format entry in `monitoring/alerts.json` (timestamp, action "alert", reason = the message,
success = whether it was delivered everywhere it should go, plus `kind` and the caller's details), a line on
stderr, and, when $SELFHEAL_ALERT_WEBHOOK is set, a JSON POST of the same entry to that URL (retried briefly).
Delivery problems are recorded, never raised: an alert must not turn into a second failure.

A webhook URL is a credential (user:password, a secret path, a token in the query), and CI uploads monitoring/:
only its scheme and host are ever written or printed, and alerts.json is created readable by its owner only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selfheal.core import audit, clock, workspace

WEBHOOK_ENV = "SELFHEAL_ALERT_WEBHOOK"
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_TRIES = 3


ALERTS_MODE = 0o600


def redact(url: str) -> str:
    """scheme://host[:port] of a URL: no user, password, path, query or fragment ("webhook" when malformed)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "webhook"
    return f"{parts.scheme}://{parts.hostname}{port}" if parts.scheme and parts.hostname else "webhook"


def check_webhook() -> None:
    """A configuration error, at load, for a $SELFHEAL_ALERT_WEBHOOK that is no http(s) URL (the URL is a
    credential: the message never shows it)."""
    from selfheal.core.errors import ConfigError

    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"${WEBHOOK_ENV}: not a valid http(s) URL (expected http[s]://host[:port]/path; the value "
                          "is not shown, it may hold a secret)")


def _post(url: str, payload: dict[str, Any]) -> str:
    """POST with retries; returns a short delivery note naming only the redacted URL. Exception texts are left
    out: requests puts the path and query in them."""
    import requests
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    @retry(stop=stop_after_attempt(WEBHOOK_TRIES), wait=wait_exponential(multiplier=0.5, max=2),
           retry=retry_if_exception_type(requests.RequestException), reraise=True)
    def send() -> int:
        resp = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
        resp.raise_for_status()
        return resp.status_code

    host = redact(url)
    try:
        return f"delivered to {host} (HTTP {send()})"
    except requests.RequestException as exc:
        status = getattr(exc.response, "status_code", None)
        return f"failed: {host}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")


def raise_alert(kind: str, message: str, log: Path = workspace.ALERTS_LOG, **details: Any) -> dict[str, Any]:
    """Record (and push) an alert that needs a person in `log`; returns the logged entry.

    kind: a short machine-readable name, e.g. "service_recovery_exhausted", "repeated_rollbacks".
    """
    print(f"ALERT [{kind}]: {message}", file=sys.stderr, flush=True)
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    webhook = None
    if url:
        payload = {"timestamp": clock.now_iso(), "action": "alert", "kind": kind, "reason": message, **details}
        try:
            webhook = _post(url, payload)
        except Exception as exc:  # a malformed URL, anything else: the alert is still recorded below
            webhook = f"failed: {redact(url)}: {type(exc).__name__}"
        if webhook.startswith("failed"):
            print(f"ALERT [{kind}]: webhook {webhook}", file=sys.stderr, flush=True)
    delivered = webhook is None or not webhook.startswith("failed")
    entry = audit.entry("alert", message, delivered, kind=kind, **details, webhook=webhook)
    return audit.add(log, entry, mode=ALERTS_MODE)
