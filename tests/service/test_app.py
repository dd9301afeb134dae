"""The prediction service as a real uvicorn process: health, schema-checked predictions, metrics, reloads."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from selfheal.core import workspace
from selfheal.service.client import check_health
from tests.browser import rendered_dom
from tests.servicekit import (
    RECORD,
    free_port,
    make_project,
    record_production,
    service_pid,
    start_service,
    stop_all,
    two_models,
    url_of,
    use_model,
    wait_status,
)

MAX_BATCH = 50
# one service process serves this whole module; with `--dist loadgroup` xdist keeps the module on one worker
pytestmark = pytest.mark.xdist_group("service")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def local(models: dict[str, Path]) -> dict[str, dict]:
    """What each version is and predicts for RECORD, computed in-process: the answers the service must give."""
    import pandas as pd

    from selfheal.pipeline.artifact import load_model

    out = {}
    # the registered names in the service's project: a is promoted when it is made, b when first used
    for (name, path), version in zip(models.items(), ("v0.0.1", "v0.0.2"), strict=True):
        model = load_model(path / "model.joblib")
        frame = pd.DataFrame([RECORD], columns=model.feature_names)
        out[name] = {"version": version, "md5": model.md5, "prediction": model.pipeline.predict(frame)[0]}
    return out


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    project = make_project(tmp_path_factory.mktemp("svc") / "project", models["a"], {"max_batch_size": MAX_BATCH})
    url = url_of(free_port())
    try:
        start_service(project, int(url.rsplit(":", 1)[1]))
        wait_status(url)
        yield url, project
    finally:
        stop_all(project)


@pytest.fixture()
def serving_a(service: tuple[str, Path], models: dict[str, Path], local: dict) -> tuple[str, Path]:
    """The service, back on version a whatever the previous test did."""
    url, project = service
    use_model(project, models["a"])
    resp = requests.post(url + "/admin/reload", timeout=60)
    assert resp.status_code == 200 and resp.json()["model_version"] == local["a"]["version"], resp.text
    return url, project


def test_health_names_the_model_version_and_hash(serving_a: tuple[str, Path], local: dict) -> None:
    url, project = serving_a
    resp = requests.get(url + "/health", timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["status"], body["model_version"], body["model_md5"]) == ("ok", local["a"]["version"], local["a"]["md5"])
    assert body["pid"] == service_pid(project)
    assert body["project"] == workspace.project_id(project)  # heal and recover check it is their project's


def test_a_service_is_not_healthy_to_another_project(service: tuple[str, Path], tmp_path: Path) -> None:
    url, project = service
    assert check_health(url, root=project).healthy
    elsewhere = check_health(url, root=tmp_path)
    assert elsewhere.state == "foreign" and not elsewhere.healthy
    assert "another project's service" in elsewhere.detail


def test_predict_one_record_and_a_batch(serving_a: tuple[str, Path], local: dict) -> None:
    url, _ = serving_a
    one = requests.post(url + "/predict", json=RECORD, timeout=5).json()
    assert one == {"predictions": [pytest.approx(local["a"]["prediction"])], "model_version": local["a"]["version"],
                   "model_md5": local["a"]["md5"]}
    other = {**RECORD, "ocean": "a category never seen in training", "MedInc": 9}  # ints are numbers too
    batch = requests.post(url + "/predict", json=[RECORD, other, RECORD], timeout=5)
    assert batch.status_code == 200
    preds = batch.json()["predictions"]
    assert len(preds) == 3 and preds[0] == preds[2] == pytest.approx(local["a"]["prediction"])
    assert "warnings" not in one  # known categories: nothing to say
    assert batch.json()["warnings"] == ["field 'ocean': 'a category never seen in training' not seen in training: "
                                        "scored as no known category"]
    counted = requests.get(url + "/metrics", timeout=5).text
    assert 'selfheal_unseen_categories_total{column="ocean"} 1' in counted


BAD = {
    "missing field": (json.dumps({k: v for k, v in RECORD.items() if k != "MedInc"}), "'MedInc': missing field"),
    "unknown field": (json.dumps({**RECORD, "colour": "red"}), "'colour': unknown field"),
    "number as text": (json.dumps({**RECORD, "HouseAge": "20"}), "'HouseAge': Input should be a valid number"),
    "boolean": (json.dumps({**RECORD, "HouseAge": True}), "'HouseAge'"),
    "null": (json.dumps({**RECORD, "Latitude": None}), "'Latitude'"),
    "NaN": (json.dumps({**RECORD, "Latitude": float("nan")}), "'Latitude': Input should be a finite number"),
    "category as number": (json.dumps({**RECORD, "ocean": 3}), "'ocean': Input should be a valid string"),
    "bad record in a batch": (json.dumps([RECORD, {**RECORD, "AveRooms": "x"}]), "record 1: field 'AveRooms'"),
    "not JSON": ("MedInc=3.2", "expected a JSON object"),
    "truncated JSON": ('{"MedInc": 3.2', "Invalid JSON"),
    "empty body": ("", "expected a JSON object"),
    "a number": ("42", "expected a JSON object"),
    "empty batch": ("[]", "at least 1 item"),
    "array of non-records": ("[1, 2]", "record 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_payloads_get_422_with_a_clear_message(service: tuple[str, Path], case: str) -> None:
    body, expected = BAD[case]
    resp = requests.post(service[0] + "/predict", data=body, headers={"Content-Type": "application/json"}, timeout=5)
    assert resp.status_code == 422, resp.text
    assert expected in resp.json()["message"]


def test_too_large_batch_is_refused_with_413(service: tuple[str, Path]) -> None:
    resp = requests.post(service[0] + "/predict", json=[RECORD] * (MAX_BATCH + 1), timeout=5)
    assert resp.status_code == 413
    assert f"exceeds max_batch_size {MAX_BATCH}" in resp.json()["message"]


def test_schema_lists_the_training_columns(service: tuple[str, Path]) -> None:
    body = requests.get(service[0] + "/schema", timeout=5).json()
    assert sorted(body["record"]["properties"]) == sorted(RECORD)
    assert body["record"]["additionalProperties"] is False and body["max_batch_size"] == MAX_BATCH


def test_openapi_describes_predict_from_the_loaded_model(service: tuple[str, Path]) -> None:
    spec = requests.get(service[0] + "/openapi.json", timeout=5).json()
    post = spec["paths"]["/predict"]["post"]
    one, batch = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert sorted(one["properties"]) == sorted(RECORD) and one["additionalProperties"] is False
    assert one["properties"]["MedInc"]["type"] == "number" and one["properties"]["ocean"]["type"] == "string"
    assert batch["type"] == "array" and batch["items"] == one and batch["maxItems"] == MAX_BATCH
    assert post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    for code in ("413", "422"):
        assert post["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    answer = spec["components"]["schemas"]["PredictResponse"]["properties"]
    assert set(answer) == {"predictions", "model_version", "model_md5", "warnings"}
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]  # not JSON
    assert requests.get(service[0] + "/docs", timeout=5).status_code == 200


def test_docs_pages_render_with_no_network(service: tuple[str, Path]) -> None:
    """Swagger UI (/docs) and ReDoc (/redoc) draw every route from assets the service serves itself: a browser
    that can reach nothing but this machine shows the operations, not a blank page."""
    url = service[0]
    spec = requests.get(url + "/openapi.json", timeout=5).json()
    docs = rendered_dom(url + "/docs")
    assert re.findall(r'data-path="([^"]+)"', docs) == list(spec["paths"])
    redoc = rendered_dom(url + "/redoc")
    drawn = set(re.findall(r'data-item-id="operation/([^"]+)"', redoc))
    assert drawn == {op["operationId"] for path in spec["paths"].values() for op in path.values()}


def test_metrics_in_prometheus_format(serving_a: tuple[str, Path], local: dict) -> None:
    url, _ = serving_a
    before = requests.get(url + "/metrics", timeout=5).text
    for _ in range(3):
        requests.post(url + "/predict", json=RECORD, timeout=5)
    requests.post(url + "/predict", json={"nope": 1}, timeout=5)
    text = requests.get(url + "/metrics", timeout=5).text

    def value(text: str, series: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(series + " ")]
        return float(lines[0].split()[-1]) if lines else 0.0

    ok = 'selfheal_http_requests_total{method="POST",route="/predict",status="200"}'
    bad = 'selfheal_http_request_errors_total{kind="client",route="/predict"}'
    assert value(text, ok) - value(before, ok) == 3
    assert value(text, bad) - value(before, bad) == 1
    assert "# TYPE selfheal_http_request_duration_seconds histogram" in text
    assert f'selfheal_model_info{{md5="{local["a"]["md5"]}",version="{local["a"]["version"]}"}} 1.0' in text
    assert "selfheal_model_loaded 1.0" in text  # every worker serves a model


def test_reload_swaps_to_the_new_model(serving_a: tuple[str, Path], models: dict[str, Path], local: dict) -> None:
    url, project = serving_a
    use_model(project, models["b"])
    resp = requests.post(url + "/admin/reload", timeout=60)
    assert resp.status_code == 200
    assert resp.json()["previous_version"] == local["a"]["version"]
    pred = requests.post(url + "/predict", json=RECORD, timeout=5).json()
    assert pred["model_version"] == local["b"]["version"]
    assert pred["predictions"] == [pytest.approx(local["b"]["prediction"])]


def test_production_bytes_that_fail_their_md5_leave_the_old_model_serving(serving_a: tuple[str, Path],
                                                                         models: dict[str, Path], local: dict) -> None:
    """b is promoted, but its bytes are damaged everywhere the service looks (the DVC cache and the workspace):
    the reload is refused, naming the md5, and a keeps serving."""
    from selfheal.versions import vcs

    url, project = serving_a
    record_production(project, models["b"])
    for damaged in (vcs.cache_path(local["b"]["md5"], project), project / "models" / "model.joblib"):
        damaged.write_bytes(b"not a model at all")
    try:
        resp = requests.post(url + "/admin/reload", timeout=60)
        assert resp.status_code == 409 and resp.json()["reloaded"] is False
        assert f"no copy with the recorded md5 {local['b']['md5']}" in resp.json()["error"]
        health = requests.get(url + "/health", timeout=5).json()
        assert health["model_version"] == local["a"]["version"] and local["b"]["md5"] in health["last_reload_error"]
        assert requests.post(url + "/predict", json=RECORD, timeout=5).json()["model_version"] == local["a"]["version"]
    finally:
        vcs.cache_path(local["b"]["md5"], project).write_bytes((models["b"] / "model.joblib").read_bytes())


def test_the_workspace_model_is_a_candidate_never_served(serving_a: tuple[str, Path], models: dict[str, Path],
                                                          local: dict) -> None:
    """Whoever replaces model.joblib can replace model.json beside it, and a pipeline run writes a candidate
    there: the service serves production's bytes (the registry's md5s), so a swapped pair is never unpickled,
    and b serves only once it is promoted."""
    url, project = serving_a
    for name in ("model.joblib", "model.json"):  # a consistent pair, but not production's
        (project / "models" / name).write_bytes((models["b"] / name).read_bytes())
    resp = requests.post(url + "/admin/reload", timeout=60)
    assert resp.status_code == 200 and resp.json()["model_md5"] == local["a"]["md5"]
    pred = requests.post(url + "/predict", json=RECORD, timeout=5).json()
    assert pred["model_version"] == local["a"]["version"] and pred["model_md5"] == local["a"]["md5"]
    expecting_b = requests.post(url + "/admin/reload", json={"expected_md5": local["b"]["md5"]}, timeout=60)
    assert expecting_b.status_code == 409 and "not the expected md5" in expecting_b.json()["error"]
    record_production(project, models["b"])  # promoted: now it is production's and loads
    assert requests.post(url + "/admin/reload", timeout=60).json()["model_md5"] == local["b"]["md5"]


@pytest.mark.parametrize("body", [{"config": {}}, {"config": "yes"}, {"config": 1}, {"config": True, "force": 1},
                                  {"expected_md5": "not-an-md5"}, [], "true"])
def test_admin_reload_validates_its_options(service: tuple[str, Path], body: object) -> None:
    resp = requests.post(service[0] + "/admin/reload", json=body, timeout=30)
    assert resp.status_code == 422, resp.text
    assert resp.json()["message"].startswith("reload options:")


def test_admin_reload_refuses_a_large_body_before_reading_it(service: tuple[str, Path]) -> None:
    resp = requests.post(service[0] + "/admin/reload", data=b" " * 10_000, timeout=30)
    assert resp.status_code == 413 and "request body of 10000 bytes exceeds 4096" in resp.json()["message"]


def test_admin_reload_takes_a_boolean_config(serving_a: tuple[str, Path], local: dict) -> None:
    resp = requests.post(serving_a[0] + "/admin/reload", json={"config": True, "expected_md5": local["a"]["md5"]},
                         timeout=60)
    assert resp.status_code == 200 and resp.json()["max_batch_size"] == MAX_BATCH


class PeakRss:
    """Samples a process's resident memory every few ms while active; `growth` is the peak over the start."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


BIG = 48 * 2**20  # far above the limit (4096 * (MAX_BATCH + 1) bytes), small enough to send in about a second


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_large_body_is_refused_while_it_streams_in(service: tuple[str, Path], framing: str) -> None:
    """The body limit holds while reading: 413 as soon as the limit is passed, without buffering the body.
    Chunked bodies have no length to check up front; a Content-Length one is refused before any byte is read."""
    url, project = service
    chunk = b" " * 2**16

    def chunks() -> Iterator[bytes]:
        for _ in range(BIG // len(chunk)):
            yield chunk

    with PeakRss(service_pid(project)) as rss:
        if framing == "chunked":
            resp = requests.post(url + "/predict", data=chunks(), headers={"Content-Type": "application/json"},
                                 timeout=60)
        else:
            resp = requests.post(url + "/predict", data=b" " * BIG, headers={"Content-Type": "application/json"},
                                 timeout=60)
    assert resp.status_code == 413, resp.text
    assert "exceeds" in resp.json()["message"]
    assert rss.growth < 8 * 2**20, f"the service grew by {rss.growth / 2**20:.1f} MB reading a refused body"
    assert requests.post(url + "/predict", json=RECORD, timeout=5).status_code == 200


def test_sighup_reloads(serving_a: tuple[str, Path], models: dict[str, Path], local: dict) -> None:
    url, project = serving_a
    use_model(project, models["b"])
    import os

    os.kill(service_pid(project), signal.SIGHUP)
    deadline = time.monotonic() + 30
    while requests.get(url + "/health", timeout=5).json()["model_version"] != local["b"]["version"]:
        assert time.monotonic() < deadline, "SIGHUP did not reload the model"
        time.sleep(0.1)


def test_requests_in_flight_during_reloads_never_fail(serving_a: tuple[str, Path], models: dict[str, Path],
                                                      local: dict) -> None:
    """4 clients hammer /predict while the model is swapped 6 times: no failure, and every answer is
    consistent (the prediction is the one its reported version makes), so no request saw a half-loaded model."""
    url, project = serving_a
    expected = {local[v]["version"]: local[v]["prediction"] for v in ("a", "b")}
    stop, failures, answers = threading.Event(), [], []

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    resp = session.post(url + "/predict", json=RECORD, timeout=10)
                    body = resp.json()
                    if resp.status_code != 200:
                        failures.append(resp.status_code)
                    else:
                        answers.append((body["model_version"], body["predictions"][0]))
                except requests.RequestException as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for version in "babab" + "a":
            use_model(project, models[version])
            assert requests.post(url + "/admin/reload", timeout=60).json()["reloaded"] is True
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert {v for v, _ in answers} == set(expected)
    assert all(pred == pytest.approx(expected[version]) for version, pred in answers)


def test_admin_reload_is_guarded(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token only loopback clients may reload; with SELFHEAL_ADMIN_TOKEN set, only its bearer."""
    from fastapi.testclient import TestClient

    from selfheal.service.app import ServiceSettings, create_app

    make_project(tmp_path / "p", models["a"])
    settings = ServiceSettings(root=tmp_path / "p", project_path=None)
    with TestClient(create_app(settings)) as client:  # its client address is "testclient", not loopback
        assert client.post("/admin/reload").status_code == 403
    guarded = ServiceSettings(root=settings.root, project_path=None, admin_token="s3cret")
    with TestClient(create_app(guarded)) as client:
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_serving_does_not_import_mlflow_evidently_or_dvc() -> None:
    """The service's modules (the model itself unpickles into scikit-learn only) leave the heavy tools out."""
    code = (
        "import sys; import selfheal.service.server, selfheal.service.app, selfheal.service.__main__;"
        "print(sorted(m for m in ('mlflow', 'evidently', 'dvc', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_null_in_a_column_that_had_no_missing_values_says_why() -> None:
    from selfheal.service.schema import PayloadError, RequestSchema

    schema = RequestSchema.from_features([{"name": "MedInc", "kind": "numeric"},
                                          {"name": "AveBedrms", "kind": "numeric", "nullable": True}], 10)
    assert schema.parse(b'{"MedInc": 3.2, "AveBedrms": null}')[0]["MedInc"] == 3.2
    with pytest.raises(PayloadError) as err:
        schema.parse(b'[{"MedInc": 3.2, "AveBedrms": 1.0}, {"MedInc": null, "AveBedrms": 1.0}]')
    assert str(err.value).startswith("record 1: field 'MedInc': null is not accepted: the model saw no missing "
                                     "values in this column in training")
