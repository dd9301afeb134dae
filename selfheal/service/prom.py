"""Prometheus metrics for the service, summed over its worker processes (prometheus_client's multiprocess mode).

Each worker writes its counters to memory-mapped files in `.selfheal/service_metrics/` (PROMETHEUS_MULTIPROC_DIR,
set by the service before prometheus_client is imported, emptied when a service starts); /metrics, answered by
any worker, sums them over every worker, live or replaced, so a counter never runs backwards because another
worker answered the scrape. Without that variable (the app in a test client) the counts are the process's own.
A pure ASGI middleware counts every request (status and latency per route, unknown paths folded into "other").
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = ("/predict", "/health", "/metrics", "/schema", "/admin/reload")
SHARED = "PROMETHEUS_MULTIPROC_DIR"


def share_between_workers(directory: Path, fresh: bool) -> None:
    """Have every process of this service count into `directory` (before prometheus_client is imported);
    `fresh`: a new service starts from zero (the files of a previous one's workers go)."""
    os.environ[SHARED] = str(directory.resolve())
    directory.mkdir(parents=True, exist_ok=True)
    if fresh:
        for old in directory.glob("*.db"):
            old.unlink(missing_ok=True)


def worker_gone(pid: int) -> None:
    """A replaced worker's live gauges stop counting (its counters keep adding to the totals)."""
    if SHARED in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class Metrics:
    """The service's metric families, made in the process that first counts (a worker, never the master: an
    unlabelled gauge made there would count as one more process)."""

    def __init__(self) -> None:
        self._families: _Families | None = None

    @property
    def families(self) -> _Families:
        if self._families is None:
            self._families = _Families()
        return self._families

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.families.requests.labels(method, route, str(status)).inc()
        if status >= 400:
            self.families.errors.labels(route, "client" if status < 500 else "server").inc()
        self.families.latency.labels(route).observe(seconds)

    def scored(self, rows: int, unseen: dict[str, int]) -> None:
        self.families.predictions.inc(rows)
        for column, n in unseen.items():
            self.families.unseen.labels(column).inc(n)

    def batch(self) -> None:
        self.families.batches.inc()

    def reloaded(self, ok: bool, model: dict[str, Any] | None) -> None:
        """A reload's result, and the model this process serves now."""
        f = self.families
        f.reloads.labels("success" if ok else "failure").inc()
        serving = (str(model["model_version"]), str(model["model_md5"])) if model else None
        if serving != f.serving:
            if f.serving is not None:
                f.info.labels(*f.serving).set(0)
            if serving is not None:
                f.info.labels(*serving).set(1)
            f.serving = serving
        f.loaded.set(1 if serving else 0)

    def render(self) -> bytes:
        """The text exposition format (0.0.4), summed over the workers when they share their counts."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if self.families.registry is not None:
            return bytes(generate_latest(self.families.registry))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return bytes(generate_latest(registry))


class _Families:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()
        registry = None if SHARED in os.environ else CollectorRegistry()
        self.registry = registry
        self.requests = Counter("selfheal_http_requests", "HTTP requests by method, route and status code.",
                                ["method", "route", "status"], registry=registry)
        self.errors = Counter("selfheal_http_request_errors", "HTTP requests answered with a 4xx or 5xx status.",
                              ["route", "kind"], registry=registry)
        self.latency = Histogram("selfheal_http_request_duration_seconds", "Request latency by route.", ["route"],
                                 buckets=BUCKETS, registry=registry)
        self.predictions = Counter("selfheal_predictions", "Records scored.", registry=registry)
        self.unseen = Counter("selfheal_unseen_categories", "Values of a categorical column the model never saw in "
                              "training (scored as no known category).", ["column"], registry=registry)
        self.batches = Counter("selfheal_predict_batches", "Model calls (concurrent requests share one call).",
                               registry=registry)
        self.reloads = Counter("selfheal_model_reloads", "Model reloads by result.", ["result"], registry=registry)
        self.loaded = Gauge("selfheal_model_loaded", "1 when every worker serves a model.",
                            multiprocess_mode="livemin", registry=registry)
        self.info = Gauge("selfheal_model_info", "The serving model's version and md5 (1 while a worker serves it).",
                          ["version", "md5"], multiprocess_mode="livemax", registry=registry)
        self.serving: tuple[str, str] | None = None


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request and records its status under a bounded set of route labels, as its
    response starts: a client that has its answer finds the request counted on /metrics (from any worker)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope["path"] if scope["path"] in ROUTES else "other"
        counted = False

        async def capture(message: dict) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                self.metrics.observe(scope["method"], route, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not counted:  # no response started: the server answers 500
                self.metrics.observe(scope["method"], route, 500, time.perf_counter() - started)
