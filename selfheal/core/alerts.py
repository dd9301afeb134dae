"""Alerts: when self-healing gives up, a person must know.

Every alert is a seed-format entry in `monitoring/alerts.json` (timestamp, action "alert", reason = the message,
success = whether it was delivered everywhere it should go, plus `kind` and the caller's details), a line on
stderr, and, when $SELFHEAL_ALERT_WEBHOOK is set, a JSON POST of the same entry to that URL (retried briefly).
Delivery problems are recorded, never raised: an alert must not turn into a second failure.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

from selfheal.core import audit, clock, workspace

WEBHOOK_ENV = "SELFHEAL_ALERT_WEBHOOK"
WEBHOOK_TIMEOUT_SECONDS = 5.0
WEBHOOK_TRIES = 3


def _post(url: str, payload: dict[str, Any]) -> str:
    """POST with retries; returns a short delivery note. The URL's path and query (often a secret) stay out."""
    import requests
    from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    @retry(stop=stop_after_attempt(WEBHOOK_TRIES), wait=wait_exponential(multiplier=0.5, max=2),
           retry=retry_if_exception_type(requests.RequestException), reraise=True)
    def send() -> int:
        resp = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_SECONDS)
        resp.raise_for_status()
        return resp.status_code

    host = urlsplit(url).netloc or "webhook"
    try:
        return f"delivered to {host} (HTTP {send()})"
    except requests.RequestException as exc:
        return f"failed: {host}: {type(exc).__name__}: {str(exc).replace(url, host)[:200]}"


def raise_alert(kind: str, message: str, **details: Any) -> dict[str, Any]:
    """Record (and push) an alert that needs a person; returns the logged entry.

    kind: a short machine-readable name, e.g. "service_recovery_exhausted", "repeated_rollbacks".
    """
    print(f"ALERT [{kind}]: {message}", file=sys.stderr, flush=True)
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    webhook = None
    if url:
        payload = {"timestamp": clock.now_iso(), "action": "alert", "kind": kind, "reason": message, **details}
        webhook = _post(url, payload)
        if webhook.startswith("failed"):
            print(f"ALERT [{kind}]: webhook {webhook}", file=sys.stderr, flush=True)
    delivered = webhook is None or not webhook.startswith("failed")
    return audit.append(workspace.ALERTS_LOG, "alert", message, delivered, kind=kind, **details, webhook=webhook)
