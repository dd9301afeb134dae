"""The service's process: its pid file, how to start it detached, how to stop it for sure.

Pid file `.selfheal/service.pid` (in the project directory) is JSON: pid, host, port, started_at, create_time
(the process's start time, so a reused pid is never mistaken for the service), state ("starting" until the
model is loaded and the port is bound, then "serving"), cwd, and cmd (its exact command line: recovery starts the
command from params, never the file's).
One service per project directory.

Anyone who can write the file can put any pid and command in it, so nothing is signalled on its word alone:
`why_not_ours` checks that the pid is a live process started at the recorded time (a file without a start time
matches nothing), running the selfheal service with exactly the recorded command line, in this project's
directory. A stop the operator asked for
(SIGTERM or SIGINT) removes the pid file and leaves `.selfheal/service.stopped.json`, so recovery does not undo it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
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
                 project: str | Path = workspace.PROJECT_FILE) -> list[str]:
    """The built-in start command: this interpreter, `-m selfheal.service` (no CLI framework to import).

    Always spelled out in full, so the command a service records equals the one recovery would build.
    """
    return [sys.executable, "-m", "selfheal.service", "--host", host, "--port", str(port), "--model", str(model),
            "--project", str(project)]


def write_pid_file(host: str, port: int, cmd: list[str], state: str, path: Path = workspace.PID_FILE,
                   pid: int | None = None) -> dict[str, Any]:
    """Record the service: this process, or `pid` (a configured project's service, started by recovery)."""
    me = psutil.Process(pid)
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


def _runs_the_service(cmd: list[str]) -> bool:
    """`<python> -m selfheal.service ...` (the built-in command) or `[<python>] <.../selfheal> serve ...`,
    exactly in that shape: a command line that merely mentions selfheal.service is not one."""
    if len(cmd) >= 3 and Path(cmd[0]).name.startswith("python") and cmd[1:3] == ["-m", "selfheal.service"]:
        return True
    start = 1 if cmd and Path(cmd[0]).name.startswith("python") else 0
    return len(cmd) > start + 1 and Path(cmd[start]).name == "selfheal" and cmd[start + 1] == "serve"


def _as_recorded(running: list[str], recorded: Any) -> bool:
    """The process runs exactly the command its record names (the service records its own command line)."""
    return isinstance(recorded, list) and running == recorded


def why_not_ours(info: dict[str, Any] | None, root: str | Path = ".", cmd: list[str] | None = None) -> str | None:
    """None when the pid file names a live selfheal service of the project at `root`; else why it does not.
    With `cmd` (a configured project's start command) the process must run exactly that instead."""
    if info is None:
        return f"no {workspace.PID_FILE}"
    pid, created = info["pid"], info.get("create_time")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return f"{workspace.PID_FILE} records no start time for pid {pid}"
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) > 0.5:
            return f"pid {pid} is another process (started at another time)"
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"pid {pid} has exited"
        running, cwd = proc.cmdline(), proc.cwd()
    except psutil.AccessDenied:
        return f"pid {pid} belongs to another user"
    except psutil.Error:
        return f"pid {pid} is not running"
    if cmd is not None and running != cmd:
        return f"pid {pid} does not run the start command ({shlex.join(running)[:160]})"
    if cmd is None and not (_runs_the_service(running) and _as_recorded(running, info.get("cmd"))):
        return f"pid {pid} is not a selfheal service ({shlex.join(running)[:160]})"
    if Path(cwd).resolve() != Path(root).resolve():
        return f"pid {pid} is a selfheal service of another project ({cwd})"
    return None


def our_service(port: int | None, root: str | Path = ".") -> dict[str, Any] | None:
    """The pid file's record when it names this project's live service (on `port`, if given), else None."""
    info = read_pid_file(Path(root) / workspace.PID_FILE)
    if info is None or (port is not None and info.get("port") != port) or why_not_ours(info, root):
        return None
    return info


def restarter_at_work(note: Path = workspace.RESTART_HOLDER) -> bool:
    """Whether a live restarter (the watcher, `selfheal recover`, heal) holds the restart lock: a SIGTERM then
    is its restart, not the operator's stop."""
    from selfheal.core import locks

    pid = locks.holder_of(note).get("pid")
    return isinstance(pid, int) and pid != os.getpid() and alive(pid)


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on TCP `port` on this machine, or None (free, or a
    process of another user this one cannot see)."""
    try:
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid]
    except psutil.Error:
        return None
    for conn in listening:
        with contextlib.suppress(psutil.Error):
            return conn.pid, shlex.join(psutil.Process(conn.pid).cmdline())[:200]
    return None


def record_stop(info: dict[str, Any], sig: int, path: Path = workspace.SERVICE_STOPPED) -> None:
    """The service was stopped on purpose (SIGTERM/SIGINT): heal and recover leave it stopped."""
    atomic.write_json(path, {"pid": info["pid"], "host": info.get("host"), "port": info.get("port"),
                             "signal": signal.Signals(sig).name, "stopped_at": now_iso()})


def read_stop(port: int | None = None, path: Path = workspace.SERVICE_STOPPED) -> dict[str, Any] | None:
    """The operator's stop of the service on `port` (any port if None), or None."""
    try:
        info = atomic.read_json(path)
    except (ValueError, OSError):
        return None
    if not isinstance(info, dict) or (port is not None and info.get("port") != port):
        return None
    return info


def clear_stop(path: Path = workspace.SERVICE_STOPPED) -> None:
    """A (re)start ends the operator's stop."""
    path.unlink(missing_ok=True)


def stopped_note(stop: dict[str, Any]) -> str:
    return (f"stopped by the operator ({stop.get('signal')} to pid {stop.get('pid')} at {stop.get('stopped_at')}); "
            "not restarting it: start it with `selfheal serve` (make serve)")


def spawn(argv: list[str], cwd: str | Path, log_path: Path = workspace.SERVICE_LOG, stdin: int | IO | None = None,
          stdout: int | None = None) -> subprocess.Popen:
    """Start `argv` detached (own session: it outlives the caller and its terminal); output goes to log_path
    (stdout to the caller instead when `stdout` is subprocess.PIPE: the warm standby's messages)."""
    log_path = Path(cwd) / log_path
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=log if stdout is None else stdout, stderr=log if stdout is not None else subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )


def wait_gone(pid: int, timeout: float, create_time: float | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, create_time):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def terminate(pid: int, grace: float, create_time: float | None = None) -> str:
    """SIGTERM (with SIGCONT, so a stopped process can act on it), then SIGKILL after `grace` seconds. A process
    leading its own group (a service selfheal started) has the whole group continued: its workers, stopped with
    it, must act on the SIGTERM it passes on for it to end in time.

    Returns "gone" (was not running), "terminated" or "killed". Raises RuntimeError if it survives SIGKILL.
    """
    if not alive(pid, create_time):
        return "gone"
    _signal(pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGCONT)
    _signal(pid, signal.SIGCONT)
    if wait_gone(pid, grace, create_time):
        return "terminated"
    _signal(pid, signal.SIGKILL)
    if wait_gone(pid, 10.0, create_time):
        return "killed"
    raise RuntimeError(f"process {pid} survived SIGKILL")


def die_with_parent(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux PR_SET_PDEATHSIG; elsewhere a
    no-op): a worker or forked stage never outlives the process that answers for it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)


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
