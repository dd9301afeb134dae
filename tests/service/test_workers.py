"""The service's worker processes under their supervisor, as real processes under a steady request load: a
killed or hung worker costs at most the requests in flight on it and is replaced, a reload swaps every worker,
and a killed master takes its workers with it (the port is free for its recovery)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from selfheal.core import workspace
from selfheal.service import procs
from tests.servicekit import (
    RECORD,
    free_port,
    make_project,
    service_pid,
    start_service,
    stop_all,
    two_models,
    url_of,
    use_model,
    wait_status,
    workers_of,
)

pytestmark = pytest.mark.xdist_group("workers")


class Load:
    """/predict at about 50 requests a second over one keep-alive connection, each answer noted."""

    def __init__(self, url: str) -> None:
        self.url, self.answers, self.failed = url, 0, 0
        self.md5s: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.wait(0.02):
            try:
                resp = session.post(self.url + "/predict", json=RECORD, timeout=5)
                ok = resp.status_code == 200
                if ok:
                    self.md5s.add(resp.json()["model_md5"])
            except requests.RequestException:
                ok = False
                session = requests.Session()
            self.answers += ok
            self.failed += not ok


def _until(condition, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the time"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, Path]]]:
    root = tmp_path_factory.mktemp("workers")
    models = two_models(root / "models")
    project = make_project(root / "project", models["a"])
    url = url_of(free_port())
    start_service(project, int(url.rsplit(":", 1)[1]))
    wait_status(url)
    _until(lambda: len(list((project / workspace.WORKERS).glob("*.json"))) == 2, 30)  # both loaded the model
    yield url, project, models
    stop_all(project)


def test_two_workers_answer_as_one_service(served: tuple[str, Path, dict[str, Path]]) -> None:
    url, project, _ = served
    master = service_pid(project)
    workers, bodies = set(workers_of(master)), []
    deadline = time.monotonic() + 10

    def client() -> None:  # concurrent new connections: the kernel hands each to whichever worker accepts first
        while {b["worker_pid"] for b in bodies} != workers and time.monotonic() < deadline:
            bodies.append(requests.get(url + "/health", timeout=5).json())

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {b["pid"] for b in bodies} == {master}  # the service is its master, whichever worker answers
    assert {b["worker_pid"] for b in bodies} == workers


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_lost_worker_costs_only_its_requests_in_flight_and_is_replaced(
        served: tuple[str, Path, dict[str, Path]], sig: int) -> None:
    url, project, _ = served
    master = service_pid(project)
    victim = workers_of(master)[0]
    with Load(url) as load:
        time.sleep(0.5)
        os.kill(victim, sig)
        replaced = _until(lambda: victim not in workers_of(master) and len(workers_of(master)) == 2, 10)
        wait_status(url)
        time.sleep(1.0)
    assert replaced < 3.0
    assert load.answers > 20 and load.failed <= 2, (load.answers, load.failed)  # the load ran throughout
    assert service_pid(project) == master  # the supervisor did it: no restart of the service


def test_a_reload_swaps_every_worker_without_a_failed_request(served: tuple[str, Path, dict[str, Path]]) -> None:
    url, project, models = served
    use_model(project, models["b"])
    with Load(url) as load:
        time.sleep(0.3)
        answer = requests.post(url + "/admin/reload", timeout=60).json()
        assert answer["reloaded"] is True and answer["workers"] == 2, answer
        new = answer["model_md5"]
        after = {requests.post(url + "/predict", json=RECORD, timeout=5).json()["model_md5"] for _ in range(40)}
        time.sleep(0.3)
    assert after == {new}  # fresh connections reach both workers: every one serves the new model
    assert load.failed == 0 and len(load.md5s) == 2
    use_model(project, models["a"])
    os.kill(service_pid(project), signal.SIGHUP)  # the master passes SIGHUP on: every worker reloads in place
    _until(lambda: {requests.get(url + "/health", timeout=5).json()["model_md5"] for _ in range(20)} != {new}, 30)


def test_a_killed_master_takes_its_workers_and_frees_the_port(served: tuple[str, Path, dict[str, Path]]) -> None:
    url, project, _ = served
    master = service_pid(project)
    workers = workers_of(master)
    os.kill(master, signal.SIGKILL)
    _until(lambda: not any(procs.alive(w) for w in workers), 5)
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=2)
