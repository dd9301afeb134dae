"""Run the service: `python -m selfheal.service` (what `selfheal serve` and recovery start).

The process is the service's master: it does the imports, binds the port and runs `service_recovery.workers`
worker processes under gunicorn's arbiter (service/workers.py); the pid file names the master, whose workers are
its children. Order matters for recovery: the pid file is written first (state "starting"), the heavy imports
happen before the port is bound (so a starting service refuses connections instead of looking hung), and the
pid file says "serving" once a worker has loaded the model. With `--standby` the process does the imports, then forks a fresh service
for every "go" line on stdin, and exits at end of input (the supervisor went away). That is the warm spare
`selfheal recover --watch` keeps to restart a crashed service in a fraction of a second instead of the ~6 s an
interpreter needs to import scikit-learn on a small machine, again and again without re-importing.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from selfheal.core import workspace
from selfheal.service import procs, prom

# One OpenMP thread per model call: a request scores a few rows, and on 2 cores the thread team's start-up
# costs more than it saves (measured: 42 ms vs 6 ms for a one-row HistGradientBoosting predict). Set before
# scikit-learn loads; an explicit OMP_NUM_THREADS from the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m selfheal.service", description="Serve the production model.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", default=str(workspace.MODEL),
                   help="the model output whose production version is served (model.json beside it)")
    p.add_argument("--project", default=str(workspace.PROJECT_FILE),
                   help="selfheal.yaml (service_recovery.max_batch_size, .workers, .health_timeout_seconds)")
    p.add_argument("--standby", action="store_true", help="import everything, then wait for 'go' on stdin")
    return p


def warm_up() -> None:
    """Import what serving needs, including the scikit-learn modules selfheal's models unpickle into."""
    import pandas  # noqa: F401
    import sklearn.compose
    import sklearn.ensemble
    import sklearn.impute
    import sklearn.linear_model
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401
    import uvicorn
    import uvicorn.loops.auto
    import uvicorn.protocols.http.auto  # noqa: F401

    from selfheal.core import config  # noqa: F401
    from selfheal.service import app, workers  # noqa: F401


def _refuse_if_taken(host: str, port: int) -> None:
    """Never overwrite the pid file of a live service on the same address."""
    info = procs.read_pid_file()
    if info and info["pid"] != os.getpid() and info.get("port") == port and procs.why_not_ours(info) is None:
        raise SystemExit(f"error: a service (pid {info['pid']}) already runs for port {port} ({workspace.PID_FILE})")


BIND_PATIENCE_S = 1.0  # a killed predecessor's workers die with it, but may hold the port for a moment longer


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + BIND_PATIENCE_S
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            break
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise SystemExit(f"error: cannot listen on {host}:{port}: {exc.strerror}") from None
            time.sleep(0.02)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Stopped(Exception):
    """SIGTERM or SIGINT before the arbiter took over the signals (while importing or binding)."""


def _stop_on_signal(sig: int, _frame: Any) -> None:
    raise _Stopped(sig)


def serve(host: str, port: int, model_path: Path, project_path: Path) -> None:
    _refuse_if_taken(host, port)
    import psutil

    cmd = psutil.Process().cmdline()  # exactly what runs: recovery checks a process against it, never trusts it
    procs.clear_stop()
    info = procs.write_pid_file(host, port, cmd, "starting")
    stopped_by = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_on_signal)
    try:
        warm_up()
        from selfheal.core.config import ServiceRecoveryParams
        from selfheal.core.project import service_recovery_of
        from selfheal.service import workers
        from selfheal.service.app import TOKEN_ENV, ServiceSettings, create_app, forget_workers

        knobs = service_recovery_of(project_path) or ServiceRecoveryParams()  # the defaults, as ours without it
        settings = ServiceSettings(
            model_path=model_path, project_path=project_path, max_batch_size=knobs.max_batch_size,
            admin_token=os.environ.get(TOKEN_ENV) or None, service_pid=info["pid"],
        )
        sock = _bind(host, port)
        prom.share_between_workers(workspace.SERVICE_METRICS, fresh=True)  # this service counts from zero
        forget_workers()
        app = create_app(settings)
        app.state.on_ready = lambda: procs.write_pid_file(host, port, cmd, "serving", pid=info["pid"])
        print(f"selfheal service: http://{host}:{port} (pid {info['pid']}, {knobs.workers} worker(s), model "
              f"{model_path})", flush=True)
        # a worker silent for half the health timeout is hung: killed and replaced before the probe gives up
        stopped_by = workers.serve(app, sock, knobs.workers, max(1, round(knobs.health_timeout_seconds / 2)),
                                   on_worker_exit=_worker_gone)
    except _Stopped as exc:
        stopped_by = exc.args[0]
    finally:
        if os.getpid() == info["pid"]:  # not in a worker, whose exit passes through here
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)  # cleanup is short: finish it
            if stopped_by is not None and not procs.restarter_at_work():
                procs.record_stop(info, stopped_by)  # before the pid file goes: never neither of them
            procs.remove_pid_file(info["pid"])
    if stopped_by is not None:
        print(f"selfheal service: stopped by {signal.Signals(stopped_by).name}", flush=True)
        signal.signal(stopped_by, signal.SIG_DFL)
        signal.raise_signal(stopped_by)  # exit as the signal says, for whoever waits on this process


def _worker_gone(pid: int) -> None:
    from selfheal.service.app import forget_worker

    forget_worker(pid)
    prom.worker_gone(pid)


def standby() -> bool:
    """The warm spare: import once, then fork a fresh service for every "go" line; end of input exits.

    Returns True in a forked child (which then serves), False in the spare when its input ends. The spare
    says "ready" once warm and "serving <pid>" per fork on stdout (the supervisor's pipe). A child leaves the
    spare's session and pipes (it outlives the supervisor like any started service, and its output goes to
    the service log, the spare's stderr). The spare loads no model, opens no socket and starts no thread of
    its own (numpy's BLAS pool shuts down at a fork), so a fork is safe and costs milliseconds; kept warm, it
    serves a second crash as fast as the first.
    """
    warm_up()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children: no zombies
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.setsid()
            with open(os.devnull, "rb") as devnull:
                os.dup2(devnull.fileno(), 0)
            os.dup2(2, 1)
            return True
        print(f"serving {pid}", flush=True)
    return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    model, project = Path(args.model), Path(args.project)
    prom.share_between_workers(workspace.SERVICE_METRICS, fresh=False)  # before prometheus_client is imported
    if args.standby and not standby():
        return 0
    serve(args.host, args.port, model, project)
    return 0
