"""Alerts: recorded in monitoring/alerts.json, pushed to a webhook when configured, never raising."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from selfheal.core.alerts import WEBHOOK_ENV, raise_alert
from tests.servicekit import free_port


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    return tmp_path


@pytest.fixture()
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP endpoint on loopback that keeps what it receives."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append({"path": self.path, "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/SECRET-TOKEN", received
    server.shutdown()
    server.server_close()


def alerts(root: Path) -> list[dict]:
    return json.loads((root / "monitoring/alerts.json").read_text())


def test_alert_is_recorded_in_the_seed_format(here: Path, capsys: pytest.CaptureFixture) -> None:
    entry = raise_alert("repeated_rollbacks", "3 rollbacks in 24 h", rollbacks=3)
    raise_alert("service_recovery_exhausted", "service down", attempts=3)
    first, second = alerts(here)
    assert first == entry
    assert {k: first[k] for k in ("action", "reason", "success", "kind", "rollbacks", "webhook")} == {
        "action": "alert", "reason": "3 rollbacks in 24 h", "success": True, "kind": "repeated_rollbacks",
        "rollbacks": 3, "webhook": None,
    }
    assert "timestamp" in first and second["kind"] == "service_recovery_exhausted"
    assert "ALERT [repeated_rollbacks]: 3 rollbacks in 24 h" in capsys.readouterr().err


def test_alert_is_posted_to_the_webhook(here: Path, webhook: tuple[str, list[dict]],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK_ENV, url)
    entry = raise_alert("constant_drift", "drift in 5 runs", runs=5)
    (hit,) = received
    assert hit["path"] == "/hooks/SECRET-TOKEN"
    assert {k: hit["body"][k] for k in ("action", "kind", "reason", "runs")} == {
        "action": "alert", "kind": "constant_drift", "reason": "drift in 5 runs", "runs": 5}
    assert entry["success"] is True and "HTTP 204" in entry["webhook"]
    assert "SECRET" not in json.dumps(alerts(here))  # the webhook's secret path never reaches the log


def test_an_unreachable_webhook_is_recorded_not_raised(here: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{free_port()}/hook")
    entry = raise_alert("service_recovery_exhausted", "service down")
    assert entry["success"] is False and entry["webhook"].startswith("failed")
    assert alerts(here)[-1] == entry


@pytest.mark.parametrize("reachable", [True, False])
def test_a_webhook_with_credentials_is_logged_as_scheme_and_host_only(
        here: Path, webhook: tuple[str, list[dict]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, reachable: bool) -> None:
    url, received = webhook
    port = url.split(":")[2].split("/")[0] if reachable else str(free_port())
    monkeypatch.setenv(WEBHOOK_ENV, f"http://alice:Pa55word@127.0.0.1:{port}/hooks/SECRET-PATH?token=TOKEN-abc#frag")
    entry = raise_alert("service_recovery_exhausted", "service down")
    logged, err = (here / "monitoring/alerts.json").read_text(), capsys.readouterr().err
    assert (len(received) == 1) is reachable and entry["success"] is reachable
    assert f"http://127.0.0.1:{port}" in entry["webhook"]
    for secret in ("alice", "Pa55word", "SECRET-PATH", "TOKEN-abc", "frag"):
        assert secret not in logged and secret not in err
    assert (here / "monitoring/alerts.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("url", ["http://[x/hook", "ftp://host/hook", "not a url", "http://host:99999999/x"])
def test_a_malformed_webhook_is_a_config_error_at_load_and_an_alert_is_still_recorded(
        here: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, url: str) -> None:
    import subprocess
    import sys

    monkeypatch.setenv(WEBHOOK_ENV, url)
    cli = subprocess.run([str(Path(sys.executable).parent / "selfheal"), "status"], cwd=here, capture_output=True,
                         text=True)
    assert cli.returncode == 2 and cli.stderr.startswith("error: $SELFHEAL_ALERT_WEBHOOK: not a valid http(s) URL")
    assert url not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1  # the value may hold a secret
    entry = raise_alert("test_kind", "something broke")  # an alert raised anyway is recorded, never raised
    assert entry["success"] is False and entry["webhook"].startswith("failed: ")
    assert alerts(here)[-1]["reason"] == "something broke" and url not in json.dumps(alerts(here))
