"""The service's worker processes under gunicorn's arbiter: a dead worker is forked again from the warm master,
a worker whose event loop stops ticking for `timeout` seconds is killed and replaced, and a SIGTERM stops the
workers gracefully (requests in flight finish).

Why gunicorn with uvicorn-worker's ASGI workers rather than uvicorn's own `--workers`: uvicorn's supervisor
spawns every worker as a fresh interpreter (a replaced worker imports scikit-learn again, seconds on a small
machine, and shares no memory), while gunicorn forks them from a master that has done the imports
(`preload_app`): a replacement serves within a fraction of a second and the libraries' pages stay shared
copy-on-write. Each worker loads production's model itself (the app's lifespan), so a replacement serves what is
in production now, never a stale copy from the master.

selfheal's own rules on top: the master takes the socket the service already bound (a taken port fails at once,
with the service's own message), a worker dies with the master (a killed service frees its port at once, so its
recovery can bind it again), SIGHUP to the master reloads the model in every worker in place (no worker
restart, no failed request; gunicorn's own HUP would restart the workers), and the signal that stopped the
master is handed back so the service can record an operator's stop.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, ClassVar

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.sock import TCP6Socket, TCPSocket
from uvicorn_worker import UvicornWorker

from selfheal.service import procs


class Worker(UvicornWorker):
    """uvicorn-worker's ASGI worker, quiet (no access log, no websockets) and tied to the master's life.

    Its heartbeat comes from a thread of its own while the event loop keeps ticking: a stopped or dead worker
    misses it within `timeout`, while a loop slowed by a busy machine (a model loading on 2 busy cores) is not
    taken for a hang; a loop stuck for LOOP_STALL_FACTOR timeouts stops the heartbeat too."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "auto", "http": "auto", "ws": "none", "access_log": False,
                                               "timeout_graceful_shutdown": 5}
    LOOP_STALL_FACTOR = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_notify = 0.1  # the loop notes its tick on every uvicorn tick
        self._ticked = time.monotonic()

    async def callback_notify(self) -> None:
        self._ticked = time.monotonic()

    def _heartbeat(self) -> None:
        stall = self.LOOP_STALL_FACTOR * 2 * self.timeout  # self.timeout is half the arbiter's
        while self.alive:
            if time.monotonic() - self._ticked < stall:
                self.notify()
            time.sleep(self.timeout / 2)

    def run(self) -> None:
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        super().run()

    def init_signals(self) -> None:
        super().init_signals()
        # a reload asked for while this worker boots: it is loading production anyway (the app's handler, installed
        # once it serves, takes over); SIGHUP's default action would kill it
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def init_process(self) -> None:
        procs.die_with_parent(signal.SIGKILL)
        if os.getppid() != self.ppid:  # the master died before that took effect
            os._exit(1)
        super().init_process()


class _Master(Arbiter):
    """The arbiter, with SIGHUP reloading the workers' model in place and the stopping signal remembered."""

    stopped_by: int | None = None

    def handle_term(self) -> None:
        self.stopped_by = signal.SIGTERM
        super().handle_term()

    def handle_int(self) -> None:
        self.stopped_by = signal.SIGINT
        super().handle_int()

    def handle_hup(self) -> None:
        self.kill_workers(signal.SIGHUP)


class _Application(BaseApplication):
    def __init__(self, app: Any, options: dict[str, Any]) -> None:
        self.application, self.options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def serve(app: Any, sock: socket.socket, workers: int, timeout: int, on_worker_exit: Any = None) -> int | None:
    """Run `app` in `workers` processes on the bound `sock` until the master is stopped; returns the signal that
    stopped it (None: it stopped by itself). In a worker, this never returns: the worker's exit propagates."""
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
    options: dict[str, Any] = {
        "bind": [address], "workers": workers, "worker_class": f"{Worker.__module__}.{Worker.__name__}",
        "timeout": timeout, "graceful_timeout": 5, "keepalive": 5, "preload_app": True,
        "control_socket_disable": True, "loglevel": "warning", "errorlog": "-", "accesslog": None}
    if on_worker_exit is not None:
        options["child_exit"] = lambda _arbiter, worker: on_worker_exit(worker.pid)
    master = _Master(_Application(app, options))
    kind = TCP6Socket if sock.family == socket.AF_INET6 else TCPSocket
    master.LISTENERS = [kind(address, master.cfg, master.log, fd=sock.detach())]
    pid = os.getpid()
    try:
        master.run()
    except SystemExit as exc:
        if os.getpid() != pid or (master.stopped_by is None and exc.code not in (0, None)):
            raise  # a worker's own exit, or the master failed
    return master.stopped_by
