"""Opportunistic micro-batching: concurrent requests share one model call.

Why: a scikit-learn pipeline costs about the same to score 1 row as 100 (column selection, encoding and the
estimator's setup dominate; ~6 ms per call on the 2-core reference machine), so scoring requests one by one
wastes most of the CPU under load. Requests queue here; one predictor thread takes everything that is waiting
(up to max_rows) and scores it in one call while the event loop keeps accepting the next requests. An idle
service adds no delay: a lone request is scored at once. Each job keeps the snapshot it was validated against,
so a batch never mixes models and every answer names the model that made it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from selfheal.service.model_holder import Snapshot


@dataclass
class _Job:
    snapshot: Snapshot
    records: list[dict[str, Any]]
    future: asyncio.Future


def _score(jobs: list[_Job]) -> list[Any]:
    """Predictions (a list) or the exception, per job; one failing job never fails its batch neighbours."""
    snapshot = jobs[0].snapshot
    try:
        flat = snapshot.predict([r for job in jobs for r in job.records])
    except Exception:
        if len(jobs) == 1:
            raise
        return [_score_one(job) for job in jobs]
    out, start = [], 0
    for job in jobs:
        out.append(flat[start : start + len(job.records)])
        start += len(job.records)
    return out


def _score_one(job: _Job) -> Any:
    try:
        return job.snapshot.predict(job.records)
    except Exception as exc:
        return exc


class MicroBatcher:
    def __init__(self, max_rows: int, on_batch: Callable[[], object] = lambda: None) -> None:
        self.max_rows = max_rows
        self.on_batch = on_batch  # counts each model call (the service's metrics)
        self._pending: deque[_Job] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    async def predict(self, snapshot: Snapshot, records: list[dict[str, Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run())
        job = _Job(snapshot, records, loop.create_future())
        self._pending.append(job)
        self._wakeup.set()
        return await job.future

    def _take(self) -> list[_Job]:
        """The oldest job plus every waiting job for the same snapshot that fits in max_rows."""
        first = self._pending.popleft()
        jobs, rows, skipped = [first], len(first.records), deque[_Job]()
        while self._pending:
            job = self._pending.popleft()
            if job.snapshot is first.snapshot and rows + len(job.records) <= self.max_rows:
                jobs.append(job)
                rows += len(job.records)
            else:
                skipped.append(job)
        self._pending.extendleft(reversed(skipped))
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                jobs = self._take()
                try:
                    results = await loop.run_in_executor(self._executor, _score, jobs)
                except Exception as exc:
                    results = [exc]
                self.on_batch()
                for job, result in zip(jobs, results, strict=False):
                    if job.future.done():  # the client went away
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
