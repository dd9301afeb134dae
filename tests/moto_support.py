"""A real S3-compatible server for tests marked `remote`: moto_server (from the lock file) on a loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """Start moto_server, wait until it answers, yield its endpoint URL; stop it afterwards."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_dir / "moto.log", "w")  # noqa: SIM115 - closed below, after the server stops
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(endpoint, timeout=10)
                break
            except requests.RequestException:  # not listening yet, or still loading (slow first answer)
                assert server.poll() is None and time.monotonic() < deadline, (log_dir / "moto.log").read_text()
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in CREDENTIALS.items()
                                                         if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
