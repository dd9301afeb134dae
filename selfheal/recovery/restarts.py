"""The heavy recovery actions: restart the service's process (cold, or by waking a warm standby) or its
Docker container, then wait until it answers healthy. The light ones (cache, config) live in recovery.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from selfheal.core import workspace
from selfheal.core.config import ServiceRecoveryParams
from selfheal.service import procs
from selfheal.service.client import Health, check_health


class AttemptFailed(Exception):
    """This attempt did not bring the service back; a later one may."""


class Refaulted(AttemptFailed):
    """The restarted service came up (its pid file said serving) and died before we saw it healthy: the restart
    worked and a new fault followed, so the next attempt needs no backoff (it still counts against the limit)."""


class CannotRecover(Exception):
    """No attempt can succeed (e.g. no Docker daemon): stop now and say why."""


def address(service_url: str) -> tuple[str, int]:
    parts = urlsplit(service_url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def _ours(argv: list[str]) -> bool:
    return "selfheal.service" in argv


class Forked:
    """A service the warm spare forked: not our child, so its exit is seen through psutil (the spare reaps it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._proc = None

    def poll(self) -> int | None:
        """None while it runs, else its exit code when known (-1 when the spare reaped it first)."""
        if self.returncode is None and (self._proc is None or not _running(self._proc)):
            self.returncode = -1
        return self.returncode


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Standby:
    """A spare service process that has done its imports and forks a fresh service per "go" (service/server.py).

    The spare stays warm after a fork, so a crash right after a recovery is served as fast as the first one.
    A reader thread takes its stdout: "ready" once warm, "serving <pid>" per fork.
    """

    def __init__(self, argv: list[str], cwd: str | Path) -> None:
        self.argv, self.cwd = argv, cwd
        self.proc: subprocess.Popen | None = None
        self.ready = threading.Event()
        self._forked: queue.Queue[int | None] = queue.Queue()

    def ensure(self) -> None:
        """Start a spare unless a live one is waiting."""
        if self.proc is None or self.proc.poll() is not None:
            self.ready.clear()
            self._forked = queue.Queue()
            self.proc = procs.spawn([*self.argv, "--standby"], self.cwd, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE)
            threading.Thread(target=self._read, args=(self.proc, self._forked), daemon=True).start()

    def _read(self, proc: subprocess.Popen, forked: queue.Queue[int | None]) -> None:
        assert proc.stdout is not None  # spawned with stdout=PIPE
        for line in proc.stdout:
            word, _, rest = line.decode(errors="replace").strip().partition(" ")
            if word == "ready":
                self.ready.set()
            elif word == "serving" and rest.isdigit():
                forked.put(int(rest))
        forked.put(None)  # the spare exited

    def activate(self, timeout: float) -> Forked | None:
        """A fresh service forked by the spare (still importing: once it is warm), or None without a spare."""
        proc, forked = self.proc, self._forked
        if proc is None or proc.poll() is not None:
            return None
        assert proc.stdin is not None  # spawned with stdin=PIPE
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        except OSError:
            return None
        try:
            pid = forked.get(timeout=timeout)
        except queue.Empty:
            pid = None
        if pid is None:  # the spare died or never answered: a cold start instead
            self._kill()
            return None
        return Forked(pid)

    def close(self) -> None:
        """End of input tells the spare to exit (its services keep running); a spare still importing is killed."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None  # spawned with stdin=PIPE
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._kill()
        self.proc = None

    def _kill(self) -> None:
        """Kill the spare alone: its forked services left its process group (setsid), so they survive."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            procs.kill_group(proc.pid)
            proc.wait()


def start_argv(service_url: str, sr: ServiceRecoveryParams) -> list[str]:
    """How to start the service: params' start_command, or the built-in. Never the pid file's cmd: anyone who
    can write that file could make recovery run anything."""
    host, port = address(service_url)
    if sr.start_command:
        return shlex.split(sr.start_command.format(host=host, port=port))
    return procs.service_argv(host, port)


def standby_for(service_url: str, sr: ServiceRecoveryParams) -> Standby | None:
    """A standby for the built-in start command; a custom start_command gets none (it cannot be pre-warmed)."""
    argv = start_argv(service_url, sr)
    return Standby(argv, os.getcwd()) if _ours(argv) else None


def _log_tail(cwd: str | Path, lines: int = 5, log: Path = workspace.SERVICE_LOG) -> str:
    path = Path(cwd) / log
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


def wait_healthy(service_url: str, sr: ServiceRecoveryParams, proc: subprocess.Popen | Forked | None,
                 cwd: str | Path, check: Callable[[str, float], Health] = check_health,
                 log: Path = workspace.SERVICE_LOG) -> Health:
    """Poll /health (or `check`) until healthy; fail fast when the started process exits (its `log`'s tail says
    why), or at startup_timeout_seconds."""
    deadline = time.monotonic() + sr.startup_timeout_seconds
    timeout = min(sr.health_timeout_seconds, 1.0)
    while True:
        health = check(service_url, timeout)
        if health.healthy:
            return health
        if health.state == "foreign":
            raise CannotRecover(health.detail)
        if proc is not None and health.state == "unhealthy" and health.body.get("pid") == proc.pid:
            raise AttemptFailed(f"the restarted service is up but {health.detail}")  # its start-up is over
        if proc is not None and proc.poll() is not None:
            info = procs.read_pid_file(Path(cwd) / workspace.PID_FILE) or {}
            if info.get("pid") == proc.pid and info.get("state") == "serving":
                raise Refaulted(f"pid {proc.pid} came up serving, then exited (a new fault)")
            raise AttemptFailed(f"the service exited with code {proc.returncode} while starting: {_log_tail(cwd, log=log)}")
        if time.monotonic() >= deadline:
            raise AttemptFailed(f"not healthy {sr.startup_timeout_seconds:g} s after start ({health.detail})")
        time.sleep(0.05)


@dataclass(frozen=True)
class Records:
    """Where a service's records are and how its health is read: our own service's (the workspace contract's
    pid file and log, /health with this project's identity), or a configured project's (its records folder, the
    configured health URL). `own_pid_file`: the service writes its pid file itself (ours does); else recovery
    records the process it starts, and a process counts as the service only when it runs exactly the command."""

    root: Path = Path(".")
    pid_file: Path = workspace.PID_FILE
    log: Path = workspace.SERVICE_LOG
    check: Callable[[str, float], Health] = check_health
    own_pid_file: bool = True


def restart_process(service_url: str, sr: ServiceRecoveryParams, health: Health, standby: Standby | None,
                    records: Records = Records()) -> str:
    """Stop the recorded service once verified as this project's (SIGTERM, SIGKILL after the grace period),
    start anew from params, wait for health. A pid file naming anything else is left alone, and so is its pid;
    a port held by a process selfheal did not start is named, never restarted into."""
    root = records.root.resolve()
    argv = start_argv(service_url, sr)
    info = procs.read_pid_file(root / records.pid_file)
    recorded = info if info and info.get("port", address(service_url)[1]) == address(service_url)[1] else None
    notes = []
    why = procs.why_not_ours(recorded, root, cmd=None if records.own_pid_file else argv) if recorded else None
    if recorded and why is None:
        pid = recorded["pid"]
        if health.state == "down" and recorded.get("state") == "starting":
            # a service still importing refuses connections: give it its start-up time before replacing it
            try:
                return f"pid {pid} was still starting; {_healthy(service_url, sr, None, records).detail}"
            except AttemptFailed as exc:
                notes.append(f"pid {pid} never came up ({exc})")
        try:
            how = procs.terminate(pid, sr.kill_grace_seconds, recorded["create_time"])
        except RuntimeError as exc:  # e.g. stuck in uninterruptible I/O: the port stays taken
            raise AttemptFailed(str(exc)) from None
        procs.clear_stop(root / workspace.SERVICE_STOPPED)  # recovery's own SIGTERM, not the operator's
        notes.append(f"stopped pid {pid} ({how})")
    elif recorded and procs.alive(recorded["pid"]):
        notes.append(f"left pid {recorded['pid']} alone: {why}")
    host, port = address(service_url)
    holder = procs.port_holder(port)
    if holder is not None:  # restarting would only fail with "address already in use": say whose it is
        raise CannotRecover(f"port {port} is held by pid {holder[0]} ({holder[1]}), a process selfheal did not "
                            "start: left alone; stop it, or point the service's URL at the service selfheal starts")
    proc: subprocess.Popen | Forked | None = None
    if standby is not None and argv == standby.argv:
        proc = standby.activate(sr.startup_timeout_seconds)
    how = "forked from the warm standby"
    if proc is None:
        try:
            proc = procs.spawn(argv, root, log_path=records.log)
        except OSError as exc:
            raise AttemptFailed(f"cannot start {shlex.join(argv)}: {exc}") from None
        how = "started"
        if not records.own_pid_file:
            procs.write_pid_file(host, port, argv, "started", root / records.pid_file, pid=proc.pid)
    healthy = _healthy(service_url, sr, proc, records)
    notes.append(f"{how} pid {proc.pid} ({shlex.join(argv)}); {healthy.detail}" if not records.own_pid_file
                 else f"{how} pid {proc.pid}; {healthy.detail}")
    return "; ".join(notes)


def _healthy(service_url: str, sr: ServiceRecoveryParams, proc: subprocess.Popen | Forked | None,
             records: Records) -> Health:
    return wait_healthy(service_url, sr, proc, records.root, check=records.check, log=records.log)


def restart_docker(service_url: str, sr: ServiceRecoveryParams) -> str:
    """`docker restart <container>`, then wait for health. No daemon: CannotRecover, said plainly."""
    docker = shutil.which("docker")
    name = sr.docker_container
    if docker is None:
        raise CannotRecover(f"docker is not installed (not on PATH); cannot restart container {name!r}")
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=15)
    except subprocess.TimeoutExpired:
        raise CannotRecover(f"the Docker daemon did not answer `docker info` in 15 s; cannot restart {name!r}") from None
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        raise CannotRecover(f"no Docker daemon reachable ({why}); cannot restart container {name!r}")
    grace = str(max(1, round(sr.kill_grace_seconds)))
    done = subprocess.run([docker, "restart", "-t", grace, name], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AttemptFailed(f"docker restart {name} failed: {done.stderr.strip()[:300]}")
    return f"restarted container {name}; {wait_healthy(service_url, sr, None, os.getcwd()).detail}"
