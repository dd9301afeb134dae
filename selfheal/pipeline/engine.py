"""Where partitioned work runs: `local` (this process, one partition at a time: flat memory) or `dask` (a real
dask.distributed cluster: a LocalCluster by default, or the scheduler at $SELFHEAL_DASK_SCHEDULER).

The input is one CSV (cut into byte ranges of about `partition_mb` at line boundaries, so a single large file
spreads over workers too), a directory, or a glob of CSV/parquet partitions, on this machine or on S3 (an s3://
path, read with s3fs, the S3 extra DVC's remote uses; credentials and endpoint from the standard AWS environment:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for MinIO and other S3-compatible stores). Each worker
reads only its partition's byte range. CSV byte ranges assume no quoted newlines, like the rest of the pipeline's
CSV handling. Every partition is read as text, exactly as checks.read_csv_checked.
"""

from __future__ import annotations

import glob
import io
import itertools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from selfheal.core.errors import DataError

SCHEDULER_ENV = "SELFHEAL_DASK_SCHEDULER"
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Part:
    """One partition: a whole parquet file, or the rows of a CSV whose first byte lies in [start, end)."""

    path: str
    header: tuple[str, ...] = ()
    start: int = 0
    end: int = -1


S3 = "s3://"


def remote(source: str) -> bool:
    return source.startswith(S3)


def _s3() -> Any:
    """An S3 filesystem configured from the environment (a fresh one: no listing cached from an earlier call)."""
    import fsspec

    return fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)


def _open(path: str) -> Any:
    return _s3().open(path, "rb") if remote(path) else open(path, "rb")


def _s3_files(source: str) -> list[str]:
    fs = _s3()
    try:
        if fs.isdir(source):
            found = [f for f in fs.ls(source, detail=False) if f.endswith((".csv", ".parquet"))]
        else:
            found = [source] if fs.isfile(source) else fs.glob(source)
    except Exception as exc:  # no credentials, no bucket, no endpoint: one line naming the source
        raise DataError(f"{source}: cannot list on S3 ({type(exc).__name__}: {exc})") from None
    return sorted(S3 + f.removeprefix(S3) for f in found)


def _files(source: str) -> list[str]:
    path = Path(source)
    if remote(source):
        files = _s3_files(source)
    elif path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix in (".csv", ".parquet"))
    elif path.is_file():
        files = [source]
    else:
        files = sorted(glob.glob(source))
    if not files:
        raise DataError(f"{source}: no CSV or parquet file found")
    # absolute: a worker of a dask scheduler elsewhere runs in its own working directory
    return files if remote(source) else [str(Path(f).resolve()) for f in files]


def _csv_layout(path: str) -> tuple[list[str], int, int]:
    """A CSV's header (checked as checks.csv_header does), where its first row starts, its size in bytes."""
    from selfheal.pipeline.csvread import delimiter_of, header_of

    with _open(path) as fh:
        header = header_of(fh.read(1 << 16), path, delimiter_of(path))
        fh.seek(0)
        fh.readline()
        return header, fh.tell(), fh.seek(0, os.SEEK_END)


def partitions(source: str, partition_mb: float) -> list[Part]:
    """The partitions of `source`, in file and row order (the order duplicates are counted in)."""
    parts = []
    for path in _files(source):
        if path.endswith(".parquet"):
            parts.append(Part(path))
            continue
        header, first, size = _csv_layout(path)
        step = max(1, int(partition_mb * 1e6))
        bounds = [*list(range(first, size, step)), size]
        parts += [Part(path, tuple(header), a, b) for a, b in itertools.pairwise(bounds)]
    return parts


def _rows(part: Part) -> bytes:
    with _open(part.path) as fh:
        fh.seek(part.start - 1)
        fh.readline()  # to the first line that starts at or after `start`
        pos = fh.tell()
        if pos >= part.end:
            return b""
        data = fh.read(part.end - pos)
        return data if data.endswith(b"\n") else data + fh.readline()


def read_part(part: Part) -> pd.DataFrame:
    """A partition's rows, every CSV column as text (parquet keeps its types; the checks read both)."""
    from selfheal.pipeline.checks import read_parquet_checked
    from selfheal.pipeline.csvread import read_csv_text

    if not part.header:
        if remote(part.path):
            return pd.read_parquet(part.path)
        return read_parquet_checked(part.path, "a partition listed a moment ago")
    data = _rows(part)
    if not data.strip():
        return pd.DataFrame({c: pd.Series([], dtype="str") for c in part.header})
    return read_csv_text(io.BytesIO(data), list(part.header), part.path, with_header=False).to_pandas()


Mapper = Callable[[Callable[[T], R], Sequence[T]], list[R]]


def _local_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]


@contextmanager
def mapper(engine: str, workers: int = 2) -> Iterator[Mapper]:
    """A `map(fn, items) -> results` (in item order) on the chosen engine, for the duration of the block."""
    if engine == "local":
        yield _local_map
        return
    import dask
    from dask.distributed import Client, LocalCluster  # lazy: ~1 s and only for engine: dask

    address = os.environ.get(SCHEDULER_ENV)
    cluster = None
    if not address:
        # workers forked from a single-threaded fork server that has imported distributed, numpy and pandas once:
        # never a fork of this process, whose threads (the cluster's own event loop among them) may hold a lock
        # at the moment of the fork and leave the worker waiting on it for ever; spawned ones import everything
        # again (Windows has no fork server)
        method = "spawn" if sys.platform == "win32" else "forkserver"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
    client = Client(address or cluster)
    try:

        def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            return list(client.gather(client.map(fn, list(items), pure=False)))

        yield run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
