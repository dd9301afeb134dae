"""The FastAPI application: /health, /predict, /schema, /metrics and the admin reload (also on SIGHUP).

It runs in every worker process of the service (service/workers.py). A reload through /admin/reload swaps the
model in the worker that took the request, then has every other worker swap too (SIGHUP, each in place) and
answers once all of them serve the new model: each worker notes the model it serves in
`.selfheal/workers/<pid>.json`. /health names the service by its master's pid (what recovery started and
watches) and the answering worker by `worker_pid`; it is 503 while the master is stopped (then nobody would
replace a crashed worker).

Endpoints read the body themselves and validate it from bytes against the model's schema (see schema.py)
instead of declaring a static pydantic body: the schema belongs to the model, and a reload may change it.
/openapi.json (and /docs) is built per request from the loaded model, so it always describes what /predict takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.service.batcher import MicroBatcher
from selfheal.service.client import TOKEN_ENV
from selfheal.service.limits import BodyLimitMiddleware, BodyTooLarge, body_too_large
from selfheal.service.model_holder import ModelHolder
from selfheal.service.prom import Metrics, MetricsMiddleware
from selfheal.service.schema import ErrorBody, PayloadError, PredictResponse

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorBody, "description": "body above the size limit, or more records than max_batch_size"},
    422: {"model": ErrorBody, "description": "not a record or list of records: unknown, missing or mistyped fields, "
                                             "each error naming the record index and field"},
    503: {"model": ErrorBody, "description": "no model loaded"},
}


@dataclass(frozen=True)
class ServiceSettings:
    model_path: Path = workspace.MODEL  # the model output, relative to root, whose production version is served
    root: Path = Path(".")  # the project: its registry names production
    project_path: Path | None = workspace.PROJECT_FILE  # selfheal.yaml: service_recovery, read again on reload
    max_batch_size: int = 1000
    admin_token: str | None = None  # None: admin endpoints answer loopback clients only
    project: str = field(default_factory=workspace.project_id)  # on /health: callers check it is their project
    service_pid: int = field(default_factory=os.getpid)  # the master whose workers run this app
    reload_wait_seconds: float = 30.0  # how long a reload waits for the other workers to swap


SMALL_BODY_BYTES = 4096  # /admin/reload takes two small options; every other route but /predict takes none


class ReloadOptions(BaseModel):
    """POST /admin/reload's body (optional): anything else is a 422, never a guess."""

    model_config = ConfigDict(extra="forbid", strict=True)
    expected_md5: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    config: bool = False


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    return JSONResponse({"detail": errors or message, "message": message}, status_code=status)


def create_app(settings: ServiceSettings) -> FastAPI:
    holder = ModelHolder(settings.root, settings.model_path, settings.max_batch_size)
    metrics = Metrics()
    batcher = MicroBatcher(max_rows=max(settings.max_batch_size, 256), on_batch=metrics.batch)
    started = time.time()

    async def reload(expected_md5: str | None = None, config: bool = False) -> dict[str, Any]:
        """Load off the event loop, then swap; failures leave the old model serving and are reported."""
        previous = holder.current.version if holder.current else None
        try:
            batch = await asyncio.to_thread(_read_batch_size, settings) if config else None
            snapshot = await asyncio.to_thread(holder.reload, expected_md5, batch)
        except SelfHealError as exc:
            holder.last_error = str(exc)
            return {"reloaded": False, "error": str(exc), "serving_version": previous, **_model(holder)}
        finally:
            _note(settings, holder)
            metrics.reloaded(holder.last_error is None, _model(holder) if holder.current else None)
        return {"reloaded": True, "previous_version": previous, "seconds": holder.last_reload_seconds,
                "max_batch_size": snapshot.schema.max_batch_size, **_model(holder)}

    async def reload_every_worker(expected_md5: str | None, config: bool) -> dict[str, Any]:
        """This worker's reload, then every sibling's (SIGHUP: each swaps in place); the answer waits for them."""
        result = await reload(expected_md5, config)
        siblings = _siblings(settings.service_pid)
        result["workers"] = 1 + len(siblings)
        if not result["reloaded"] or not siblings:
            return result
        pending = await asyncio.to_thread(_wait_swapped, settings, siblings, result["model_md5"])
        if pending:
            result.update(reloaded=False, error=f"worker(s) {', '.join(map(str, pending))} did not serve md5 "
                                                f"{result['model_md5']} within {settings.reload_wait_seconds:g} s")
        return result

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        # before the first load, so a reload asked for meanwhile is not lost; not possible outside the main thread
        # (e.g. an in-process test client)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(config=True)))
        result = await reload()
        print(f"selfheal service: {json.dumps(result)}", flush=True)
        on_ready = getattr(app.state, "on_ready", None)
        if on_ready is not None:
            on_ready()
        yield
        await batcher.close()
        forget_worker(os.getpid(), settings.root)

    def body_limit(path: str) -> int:
        snapshot = holder.current
        return snapshot.schema.max_body_bytes if path == "/predict" and snapshot else SMALL_BODY_BYTES

    # /docs and /redoc with Swagger UI's and ReDoc's assets served from here: they render with no network
    app = FastAPIOffline(title="selfheal prediction service", lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, limit=body_limit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.state.holder = holder

    @app.get("/health")
    async def health() -> JSONResponse:
        notes = _notes(settings)
        master = _master_problem(settings.service_pid)
        bare = sorted(n["pid"] for n in notes if n.get("model_md5") is None and n["pid"] != os.getpid())
        status = master or ("no model" if holder.current is None else
                            f"worker(s) {', '.join(map(str, bare))} serve no model" if bare else "ok")
        latest = max(notes, key=lambda n: n.get("at", 0), default=None)  # the service's latest reload attempt
        body = {"status": status, **_model(holder), "project": settings.project, "pid": settings.service_pid,
                "worker_pid": os.getpid(), "uptime_seconds": round(time.time() - started, 1),
                "last_reload_error": latest.get("error") if latest is not None else holder.last_error}
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    def openapi() -> dict[str, Any]:
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        if holder.current is not None:
            spec["paths"]["/predict"]["post"]["requestBody"] = holder.current.schema.openapi_body()
        return spec

    app.openapi = openapi  # type: ignore[method-assign]

    @app.post("/predict", response_model=PredictResponse, responses=PREDICT_RESPONSES)
    async def predict(request: Request) -> JSONResponse:
        """Score one record (a JSON object) or a list of them; the fields are the model's training columns."""
        snapshot = holder.current
        if snapshot is None:
            return _error(503, f"no model loaded: {holder.last_error}")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > snapshot.schema.max_body_bytes:
            return _error(413, f"request body of {length} bytes exceeds {snapshot.schema.max_body_bytes}")
        try:
            records = snapshot.schema.parse(await request.body())
            predictions = await batcher.predict(snapshot, records)
        except PayloadError as exc:
            return _error(exc.status, exc.message, exc.errors)
        except (ValueError, TypeError) as exc:  # the model refused values the schema let through
            return _error(422, f"the model could not score the input: {exc}")
        answer = {"predictions": predictions, "model_version": snapshot.version, "model_md5": snapshot.model.md5}
        unseen = snapshot.schema.unseen(records)
        metrics.scored(len(records), {name: sum(r[name] in values for r in records) for name, values in unseen.items()})
        if unseen:  # scored, as the model's encoder does, and said
            answer["warnings"] = [f"field {name!r}: {', '.join(map(repr, values[:5]))} not seen in training: scored "
                                  "as no known category" for name, values in unseen.items()]
        return JSONResponse(answer)

    @app.get("/schema")
    async def schema() -> JSONResponse:
        if holder.current is None:
            return _error(503, f"no model loaded: {holder.last_error}")
        return JSONResponse({**holder.current.schema.json_schema(), **_model(holder)})

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}})
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(await asyncio.to_thread(metrics.render), media_type="text/plain; version=0.0.4")

    @app.post("/admin/reload")
    async def admin_reload(request: Request) -> JSONResponse:
        if settings.admin_token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.admin_token}".encode()):
                return _error(401, f"admin endpoints need 'Authorization: Bearer <{TOKEN_ENV}>'")
        elif not _loopback(request.client.host if request.client else None):
            return _error(403, f"admin endpoints answer loopback clients only (or set {TOKEN_ENV})")
        try:
            options = ReloadOptions.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                      for e in exc.errors(include_url=False)]
            where = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in errors)
            return _error(422, f"reload options: {where} (expected {{\"expected_md5\": md5?, \"config\": bool?}})",
                          errors)
        result = await reload_every_worker(options.expected_md5, options.config)
        return JSONResponse(result, status_code=200 if result["reloaded"] else 409)

    return app


def _note(settings: ServiceSettings, holder: ModelHolder) -> None:
    """Note the model this worker serves, for a sibling waiting on a reload (not needed outside a worker)."""
    if settings.service_pid == os.getpid():
        return
    md5 = holder.current.model.md5 if holder.current else None
    atomic.write_json(settings.root / workspace.WORKERS / f"{os.getpid()}.json",
                      {"pid": os.getpid(), "model_md5": md5, "at": time.time(), "error": holder.last_error})


def _notes(settings: ServiceSettings) -> list[dict[str, Any]]:
    """Every worker's note of the model it serves ([] outside a worker): a service is healthy only when each
    of its workers serves a model, whichever one answers."""
    if settings.service_pid == os.getpid():
        return []
    import psutil

    notes = [atomic.read_json(p, {}) for p in (settings.root / workspace.WORKERS).glob("*.json")]
    return [n for n in notes if isinstance(n, dict) and isinstance(n.get("pid"), int) and psutil.pid_exists(n["pid"])]


def forget_workers(root: Path = Path(".")) -> None:
    """A new service starts: no worker has noted anything yet (a killed service's notes go)."""
    for note in (root / workspace.WORKERS).glob("*.json"):
        note.unlink(missing_ok=True)


def forget_worker(pid: int, root: Path = Path(".")) -> None:
    """A worker is gone (its own shutdown, or the master reaped it): its note goes."""
    (root / workspace.WORKERS / f"{pid}.json").unlink(missing_ok=True)


def _siblings(master: int) -> list[int]:
    """The other live workers of this worker's master ([] outside a worker)."""
    import psutil

    if master == os.getpid():
        return []
    try:
        children = psutil.Process(master).children()
    except psutil.Error:
        return []
    return [c.pid for c in children if c.pid != os.getpid() and c.is_running()]


def _wait_swapped(settings: ServiceSettings, pids: list[int], md5: str) -> list[int]:
    """Ask every worker in `pids` to reload (SIGHUP: each swaps in place) and wait until each notes `md5`
    (loaded since it was asked) or has gone; returns the laggards."""
    import psutil

    since, deadline = time.time(), time.monotonic() + settings.reload_wait_seconds
    pending, asked = list(pids), float("-inf")
    while pending and time.monotonic() < deadline:
        if time.monotonic() - asked > 1.0:  # asked again: a worker still booting ignored the first ask
            asked = time.monotonic()
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)
        time.sleep(0.01)
        for pid in list(pending):
            note = atomic.read_json(settings.root / workspace.WORKERS / f"{pid}.json", {}) or {}
            if (note.get("model_md5") == md5 and note.get("at", 0) >= since) or not psutil.pid_exists(pid):
                pending.remove(pid)
    return pending


def _master_problem(master: int) -> str | None:
    """Why the service's master cannot supervise its workers (stopped, or gone), else None."""
    import psutil

    if master == os.getpid():
        return None
    try:
        if psutil.Process(master).status() == psutil.STATUS_STOPPED:
            return f"the service's master (pid {master}) is stopped: a crashed worker would not be replaced"
    except psutil.Error:
        return f"the service's master (pid {master}) is gone"
    return None


def _model(holder: ModelHolder) -> dict[str, Any]:
    snap = holder.current
    if snap is None:
        return {"model_version": None, "model_md5": None}
    return {"model_version": snap.version, "model_md5": snap.model.md5, "model_loaded_at": snap.loaded_at}


def _read_batch_size(settings: ServiceSettings) -> int:
    """Configuration reload: the service's knobs from selfheal.yaml (service_recovery.max_batch_size)."""
    from selfheal.core.project import service_recovery_of

    knobs = service_recovery_of(settings.project_path) if settings.project_path is not None else None
    return settings.max_batch_size if knobs is None else knobs.max_batch_size
