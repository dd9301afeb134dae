"""The service's process: its pid file, how to start it detached, how to stop it for sure.

Pid file `.selfheal/service.pid` (in the project directory) is JSON: pid, host, port, started_at, create_time
(the process's start time, so a reused pid is never mistaken for the service), state ("starting" until the
model is loaded and the port is bound, then "serving"), cwd, and cmd: the argv that starts the same service
again, which is what recovery runs. One service per project directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import psutil

from selfheal.core import atomic, workspace
from selfheal.core.clock import now_iso


def service_argv(host: str, port: int, model: str | Path = workspace.MODEL,
                 params: str | Path = workspace.PARAMS) -> list[str]:
    """The built-in start command: this interpreter, `-m selfheal.service` (no CLI framework to import).

    Always spelled out in full, so the command a service records equals the one recovery would build.
    """
    return [sys.executable, "-m", "selfheal.service", "--host", host, "--port", str(port), "--model", str(model),
            "--params", str(params)]


def write_pid_file(host: str, port: int, cmd: list[str], state: str, path: Path = workspace.PID_FILE) -> dict[str, Any]:
    me = psutil.Process()
    info = {"pid": me.pid, "host": host, "port": port, "started_at": now_iso(), "create_time": me.create_time(),
            "state": state, "cwd": os.getcwd(), "cmd": cmd}
    old = read_pid_file(path)
    if old and old.get("pid") == me.pid:
        info["started_at"] = old.get("started_at", info["started_at"])
    atomic.write_json(path, info)
    return info


def read_pid_file(path: Path = workspace.PID_FILE) -> dict[str, Any] | None:
    """The recorded service, or None when there is no (readable) pid file."""
    try:
        info = atomic.read_json(path)
    except (ValueError, OSError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def remove_pid_file(pid: int, path: Path = workspace.PID_FILE) -> None:
    """Remove the pid file if it still names `pid` (a successor's file is left alone)."""
    info = read_pid_file(path)
    if info and info["pid"] == pid:
        path.unlink(missing_ok=True)


def alive(pid: int, create_time: float | None = None) -> bool:
    """True for a running (or stopped) process; a zombie or a different process reusing the pid is not it."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def recorded_alive(info: dict[str, Any] | None) -> bool:
    return info is not None and alive(info["pid"], info.get("create_time"))


def spawn(argv: list[str], cwd: str | Path, log_path: Path = workspace.SERVICE_LOG, stdin: int | IO | None = None) -> subprocess.Popen:
    """Start `argv` detached (own session: it outlives the caller and its terminal); output goes to log_path."""
    log_path = Path(cwd) / log_path
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL if stdin is None else stdin, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )


def wait_gone(pid: int, timeout: float, create_time: float | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, create_time):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, grace: float, create_time: float | None = None) -> str:
    """SIGTERM (with SIGCONT, so a stopped process can act on it), then SIGKILL after `grace` seconds.

    Returns "gone" (was not running), "terminated" or "killed". Raises RuntimeError if it survives SIGKILL.
    """
    if not alive(pid, create_time):
        return "gone"
    for sig in (signal.SIGTERM, signal.SIGCONT):
        _signal(pid, sig)
    if wait_gone(pid, grace, create_time):
        return "terminated"
    _signal(pid, signal.SIGKILL)
    if wait_gone(pid, 10.0, create_time):
        return "killed"
    raise RuntimeError(f"process {pid} survived SIGKILL")


def kill_group(pid: int) -> None:
    """SIGKILL a process and, when it leads its own group (as `spawn` makes it), that whole group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
            return
    except (ProcessLookupError, PermissionError):
        pass
    _signal(pid, signal.SIGKILL)



def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
