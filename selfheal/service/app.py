"""The FastAPI application: /health, /predict, /schema, /metrics and the admin reload (also on SIGHUP).

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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.core import workspace
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
    params_path: Path | None = workspace.PARAMS
    max_batch_size: int = 1000
    admin_token: str | None = None  # None: admin endpoints answer loopback clients only
    project: str = field(default_factory=workspace.project_id)  # on /health: callers check it is their project


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
    batcher = MicroBatcher(max_rows=max(settings.max_batch_size, 256))
    metrics = Metrics()
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
        return {"reloaded": True, "previous_version": previous, "seconds": holder.last_reload_seconds,
                "max_batch_size": snapshot.schema.max_batch_size, **_model(holder)}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        result = await reload()
        print(f"selfheal service: {json.dumps(result)}", flush=True)
        loop = asyncio.get_running_loop()
        # not possible outside the main thread (e.g. an in-process test client)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload(config=True)))
        on_ready = getattr(app.state, "on_ready", None)
        if on_ready is not None:
            on_ready()
        yield
        await batcher.close()

    def body_limit(path: str) -> int:
        snapshot = holder.current
        return snapshot.schema.max_body_bytes if path == "/predict" and snapshot else SMALL_BODY_BYTES

    app = FastAPI(title="selfheal prediction service", lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, limit=body_limit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    app.add_exception_handler(BodyTooLarge, body_too_large)
    app.state.holder = holder

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {"status": "ok" if holder.current else "no model", **_model(holder), "project": settings.project,
                "pid": os.getpid(), "uptime_seconds": round(time.time() - started, 1),
                "last_reload_error": holder.last_error}
        return JSONResponse(body, status_code=200 if holder.current else 503)

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
        metrics.prediction_rows += len(records)
        answer = {"predictions": predictions, "model_version": snapshot.version, "model_md5": snapshot.model.md5}
        unseen = snapshot.schema.unseen(records)
        if unseen:  # scored, as the model's encoder does, and said
            for name, values in unseen.items():
                metrics.unseen_categories[name] += sum(r[name] in values for r in records)
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
        text = metrics.render(_model(holder) if holder.current else None, holder.reloads, batcher.batches)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

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
        result = await reload(options.expected_md5, options.config)
        return JSONResponse(result, status_code=200 if result["reloaded"] else 409)

    return app


def _model(holder: ModelHolder) -> dict[str, Any]:
    snap = holder.current
    if snap is None:
        return {"model_version": None, "model_md5": None}
    return {"model_version": snap.version, "model_md5": snap.model.md5, "model_loaded_at": snap.loaded_at}


def _read_batch_size(settings: ServiceSettings) -> int:
    """Configuration reload: the service's knobs from params.yaml (service_recovery.max_batch_size)."""
    if settings.params_path is None or not settings.params_path.exists():
        return settings.max_batch_size
    from selfheal.core.config import load_params

    return load_params(settings.params_path).service_recovery.max_batch_size
