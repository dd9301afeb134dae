"""Scenarios: the model file is corrupted under a live, loaded service; the service keeps serving production,
and `selfheal heal` rolls back (a verified checkout of the production version, then the service's reload),
repairing the workspace while requests keep flowing: zero failed requests throughout. And the watcher brings
the service back from a crash that follows right after a recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from selfheal.core.atomic import md5_file
from selfheal.ops.sandbox import run, set_params
from selfheal.service.client import request_reload
from selfheal.versions import vcs
from tests.heal_support import production_of
from tests.servicekit import (
    RECORD,
    free_port,
    make_project,
    start_service,
    stop_all,
    train_model,
    url_of,
    wait_status,
)

pytestmark = pytest.mark.slow


class Load:
    """Clients posting /predict in a loop until stopped; keeps every failure and every answer."""

    def __init__(self, url: str, record: dict, clients: int = 3) -> None:
        self.url, self.record = url, record
        self.failures: list = []
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    resp = session.post(self.url + "/predict", json=self.record, timeout=10)
                    if resp.status_code != 200:
                        self.failures.append((resp.status_code, resp.text[:200]))
                    else:
                        self.versions.append(resp.json()["model_md5"])
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.fixture()
def served(promoted: Path, workdir) -> Iterator[tuple[Path, str, str]]:
    """A private copy of the built project with its model promoted to production, served on a free port."""
    project = workdir(promoted)
    port = free_port()
    url = url_of(port)
    set_params(project, service_recovery={"service_url": url})
    production = production_of(project)
    try:
        start_service(project, port)
        wait_status(url)
        yield project, url, production["md5"]
    finally:
        stop_all(project)


def test_corrupt_model_keeps_serving_then_heal_rolls_back_under_load(served: tuple[Path, str, str]) -> None:
    project, url, production_md5 = served
    features = json.loads((project / "models/model.json").read_text())["features"]
    record = {f["name"]: RECORD.get(f["name"], 1.0) for f in features}
    model = project / "models/model.joblib"
    with Load(url, record) as load:
        data = bytearray(model.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64  # bytes overwritten in place
        model.write_bytes(bytes(data))
        corrupted = md5_file(model)
        result = request_reload(url)  # the service reloads production from the DVC cache, never the workspace file
        assert result["reloaded"] is True and result["model_md5"] == production_md5
        assert requests.get(url + "/health", timeout=5).json()["model_md5"] == production_md5

        out = run(["selfheal", "heal"], project).stdout
        assert f"is md5 {corrupted}, not the" in out and "restore production v0.0.1" in out
        assert model.read_bytes() == vcs.cache_path(production_md5, project).read_bytes()
        entry = json.loads((project / "models/rollback_log.json").read_text())[-1]
        assert (entry["action"], entry["success"], entry["service_reloaded"]) == ("auto_rollback", True, True)
        assert entry["failed_md5"] == corrupted and md5_file(project / entry["failed_cache"]) == corrupted
        health = requests.get(url + "/health", timeout=5).json()
        assert health["model_md5"] == production_md5 and health["last_reload_error"] is None
        assert "heal: healthy" in run(["selfheal", "heal"], project).stdout
    assert load.failures == []
    assert len(load.versions) > 0 and set(load.versions) == {production_md5}


def test_a_crash_right_after_a_recovery_is_recovered_from_the_still_warm_standby(tmp_path: Path) -> None:
    """`recover --watch` with default params: the service is SIGKILLed, and killed again the moment its
    replacement answers. The second replacement is up well within 10 s (generous: the speed itself is measured
    in `python -m benchmarks.run service`), it serves predictions, and no restart was a cold start: the spare
    that forked the first replacement forked the second too (the old spare was used up, so the second crash
    waited for a new one to import, 2-8 s, once over 60 s)."""
    models = tmp_path / "models"
    train_model(models, max_iter=20)
    project = make_project(tmp_path / "project", models)
    url = url_of(free_port())
    selfheal = Path(sys.executable).parent / "selfheal"
    watcher = subprocess.Popen([str(selfheal), "recover", "--watch", "--service-url", url], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first = wait_status(url)["pid"]  # the watcher found no service and started one
        os.kill(first, signal.SIGKILL)
        second = _replacement(url, first, timeout=60)
        os.kill(second, signal.SIGKILL)  # right after the recovery
        third = _replacement(url, second, timeout=10)
        with requests.Session() as session:
            answers = [session.post(url + "/predict", json=RECORD, timeout=10) for _ in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert not psutil.pid_exists(first) and not psutil.pid_exists(second) and psutil.pid_exists(third)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out = watcher.communicate(timeout=30)[0]
        stop_all(project)
    # Three services were started. A kill that lands before the watcher's own poll saw the service healthy is
    # logged as a failed attempt ("came up serving, then exited"), so count attempts, not successes.
    attempts = json.loads((project / "monitoring/recovery_log.json").read_text())
    recoveries = [e for e in attempts if e["success"]]
    assert len(attempts) >= 3 and recoveries, out
    assert all("forked from the warm standby" in e["details"] for e in recoveries), out


def _replacement(url: str, old: int, timeout: float) -> int:
    """The pid of the first healthy service on `url` other than `old` (read from /health, not from selfheal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body = requests.get(url + "/health", timeout=0.5).json()
            if body.get("status") == "ok" and body.get("pid") != old:
                return int(body["pid"])
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"no healthy replacement of pid {old} on {url} within {timeout:g} s")
