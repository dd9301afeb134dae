"""Scenario: the model file is corrupted under a live, loaded service; the service keeps serving production,
and `selfheal heal` rolls back (a verified checkout of the production version, then the service's reload),
repairing the workspace while requests keep flowing: zero failed requests throughout."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from selfheal.core.atomic import md5_file
from selfheal.ops.sandbox import run, set_params
from selfheal.service.client import request_reload
from selfheal.versions import vcs
from tests.servicekit import RECORD, free_port, start_service, stop_all, url_of, wait_status

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
    production = json.loads((project / "models/production.json").read_text())
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
        result = request_reload(url)
        assert result["reloaded"] is False and "md5" in result["error"]
        assert requests.get(url + "/health", timeout=5).json()["model_md5"] == production_md5

        out = run(["selfheal", "heal"], project).stdout
        assert f"(md5 {corrupted}) is neither the validated model" in out and "restore production v0.0.1" in out
        assert model.read_bytes() == vcs.cache_path(production_md5, project).read_bytes()
        entry = json.loads((project / "models/rollback_log.json").read_text())[-1]
        assert (entry["action"], entry["success"], entry["service_reloaded"]) == ("auto_rollback", True, True)
        assert entry["failed_md5"] == corrupted and md5_file(project / entry["failed_cache"]) == corrupted
        health = requests.get(url + "/health", timeout=5).json()
        assert health["model_md5"] == production_md5 and health["last_reload_error"] is None
        assert "heal: healthy" in run(["selfheal", "heal"], project).stdout
    assert load.failures == []
    assert len(load.versions) > 0 and set(load.versions) == {production_md5}
