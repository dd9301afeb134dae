"""A lean HTTP/1.1 load generator for the service benchmark.

Why hand-rolled: on a 2-core machine the client shares the CPU with the server it measures; a keep-alive
client on raw asyncio streams costs a few tens of microseconds per request, a general-purpose client ten
times more, which would compress the very differences the benchmark is meant to show.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection-level failures
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def failed(self) -> int:
        return self.errors + sum(n for code, n in self.statuses.items() if code != 200)

    def summary(self) -> dict:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else float("nan")

        return {
            "requests": self.ok + self.failed,
            "failed": self.failed,
            "req_per_s": round(self.ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else float("nan"),
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    body = b""
    while True:  # chunked transfer encoding
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def _worker(url: str, body: bytes, deadline: float, result: LoadResult, max_requests: int | None) -> None:
    parts = urlsplit(url)
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reader = writer = None
    while time.perf_counter() < deadline and (max_requests is None or result.ok + result.failed < max_requests):
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            started = time.perf_counter()
            writer.write(request)
            status, _ = await _read_response(reader)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies.append(time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def _load(url: str, body: bytes, concurrency: int, seconds: float, max_requests: int | None) -> LoadResult:
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_worker(url, body, deadline, result, max_requests) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


def run_load(
    url: str, body: bytes, concurrency: int = 8, seconds: float = 10.0, max_requests: int | None = None
) -> LoadResult:
    """POST `body` to `url` from `concurrency` keep-alive connections until `seconds` pass (or max_requests)."""
    return asyncio.run(_load(url, body, concurrency, seconds, max_requests))
