"""The watcher's fast detection (recovery/detect.py): a crash seen without a poll, a stopped process called hung
after the quick check, and a slow service never called hung."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from selfheal.core import workspace
from selfheal.core.config import ServiceRecoveryParams
from selfheal.recovery.detect import QUICK_TIMEOUT_S, ExitWatch, probe
from tests.servicekit import free_port, make_project, start_service, stop_all, train_model, url_of, wait_status

pytestmark = pytest.mark.xdist_group("recovery")


def test_the_exit_of_the_followed_process_ends_the_wait_at_once() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    watch, stop = ExitWatch(), threading.Event()
    try:
        watch.follow(proc.pid)
        assert watch.wait(0.2, stop) is False  # alive: the wait runs its course
        threading.Timer(0.3, proc.kill).start()
        assert watch.wait(60, stop) is True  # returns on the exit, not after 60 s
    finally:
        proc.kill()
        proc.wait()
        watch.close()


def test_a_stopped_wait_returns_without_a_followed_process() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    assert ExitWatch().wait(60, stop) is False


@pytest.fixture()
def slow_health(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This project's /health answering 200 after 3x the quick check's timeout (a service slow under load)."""
    monkeypatch.chdir(tmp_path)
    body = json.dumps({"status": "ok", "project": workspace.project_id(), "pid": os.getpid()}).encode()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(3 * QUICK_TIMEOUT_S)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield url_of(server.server_address[1])
    finally:
        server.shutdown()


def test_a_slow_service_is_not_called_hung(slow_health: str) -> None:
    health = probe(slow_health, ServiceRecoveryParams(health_timeout_seconds=5.0))
    assert health.healthy, health.detail


def test_a_slower_answer_than_the_health_timeout_is_a_hang(slow_health: str) -> None:
    health = probe(slow_health, ServiceRecoveryParams(health_timeout_seconds=QUICK_TIMEOUT_S))
    assert health.state == "hung", health.detail


def test_a_stopped_service_is_hung_after_the_quick_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train_model(tmp_path / "models", max_iter=5)
    project = make_project(tmp_path / "project", tmp_path / "models")
    monkeypatch.chdir(project)
    port = free_port()
    url = url_of(port)
    try:
        start_service(project, port)
        pid = wait_status(url)["pid"]
        os.killpg(pid, signal.SIGSTOP)  # the whole service: its master and every worker
        _wait_stopped(pid)
        health = probe(url, ServiceRecoveryParams(health_timeout_seconds=60.0))  # never waits for the full check
        assert health.state == "hung" and f"pid {pid} is stopped" in health.detail, health.detail
        os.killpg(pid, signal.SIGCONT)
        assert probe(url, ServiceRecoveryParams()).healthy
        os.kill(pid, signal.SIGSTOP)  # the master alone: its workers answer 503, nobody would replace them
        _wait_stopped(pid)
        health = probe(url, ServiceRecoveryParams())
        assert health.state == "hung" and f"pid {pid}, the service's master, is stopped" in health.detail
        os.kill(pid, signal.SIGCONT)
        assert probe(url, ServiceRecoveryParams()).healthy
    finally:
        stop_all(project)


def _wait_stopped(pid: int) -> None:
    """kill() only queues SIGSTOP: on a busy machine the process may run on for a moment before the kernel stops it."""
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, f"pid {pid} did not stop within 10 s of SIGSTOP"
        time.sleep(0.01)


def test_an_answer_broken_off_by_a_dying_process_is_down_not_an_error(tmp_path: Path) -> None:
    """The process dies while it sends /health (headers out, body not): the watcher must not crash on it."""

    class Dying(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "219")
            self.end_headers()
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        health = probe(url_of(server.server_address[1]), ServiceRecoveryParams())
    finally:
        server.shutdown()
    assert health.state == "down" and "broke off" in health.detail, health.detail
