"""Prometheus metrics for the service, in the text exposition format (version 0.0.4).

Hand-written because the service needs a handful of families and prometheus_client is not a dependency. Request
metrics are updated on the event loop thread only, so plain dicts need no locks; a pure ASGI middleware counts
every request (status and latency per route, unknown paths folded into "other") for a few microseconds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROUTES = ("/predict", "/health", "/metrics", "/schema", "/admin/reload")


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.prediction_rows = 0
        self.unseen_categories: dict[str, int] = defaultdict(int)  # column -> values scored as no known category

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        buckets = self.latency_buckets[route]
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
                break
        else:
            buckets[-1] += 1
        self.latency_sum[route] += seconds

    def render(self, model: dict[str, Any] | None, reloads: dict[str, int], batches: int) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        family("selfheal_http_requests_total", "counter", "HTTP requests by method, route and status code.")
        for (method, route, status), n in sorted(self.requests.items()):
            out.append(f'selfheal_http_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
        family("selfheal_http_request_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.")
        errors: dict[tuple[str, str], int] = defaultdict(int)
        for (_, route, status), n in self.requests.items():
            if status >= 400:
                errors[(route, "client" if status < 500 else "server")] += n
        for (route, kind), n in sorted(errors.items()):
            out.append(f'selfheal_http_request_errors_total{{route="{route}",kind="{kind}"}} {n}')
        family("selfheal_http_request_duration_seconds", "histogram", "Request latency by route.")
        for route, counts in sorted(self.latency_buckets.items()):
            cumulative = 0
            for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=False):
                cumulative += n
                out.append(f'selfheal_http_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {cumulative}')
            out.append(f'selfheal_http_request_duration_seconds_sum{{route="{route}"}} {self.latency_sum[route]:.6f}')
            out.append(f'selfheal_http_request_duration_seconds_count{{route="{route}"}} {cumulative}')
        family("selfheal_predictions_total", "counter", "Records scored.")
        out.append(f"selfheal_predictions_total {self.prediction_rows}")
        family("selfheal_unseen_categories_total", "counter",
               "Values of a categorical column the model never saw in training (scored as no known category).")
        for column, n in sorted(self.unseen_categories.items()):
            out.append(f'selfheal_unseen_categories_total{{column="{_esc(column)}"}} {n}')
        family("selfheal_predict_batches_total", "counter", "Model calls (concurrent requests share one call).")
        out.append(f"selfheal_predict_batches_total {batches}")
        family("selfheal_model_reloads_total", "counter", "Model reloads by result.")
        for result, n in sorted(reloads.items()):
            out.append(f'selfheal_model_reloads_total{{result="{result}"}} {n}')
        family("selfheal_model_loaded", "gauge", "1 when a model is serving.")
        out.append(f"selfheal_model_loaded {1 if model else 0}")
        family("selfheal_model_info", "gauge", "The serving model's version and md5 (value always 1).")
        if model:
            out.append(f'selfheal_model_info{{version="{_esc(model["model_version"])}",md5="{model["model_md5"]}"}} 1')
        return "\n".join(out) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request and records its final status under a bounded set of route labels."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            path = scope["path"]
            route = path if path in ROUTES else "other"
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)
