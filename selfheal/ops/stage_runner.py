"""Warm stage processes: DVC runs every stage as a fresh process, and each would import pandas, scikit-learn,
scipy and MLflow again, about half of a cold `dvc repro`. dvc.yaml runs each stage through this module
(`python -m selfheal.ops.stage_runner stages.<name>`); no stage imports it, so editing it reruns none. The first stage of a run starts, in the background,
one warm interpreter that imports those libraries once; the later stages (and later runs, until it has been idle
for IDLE_S) run in a fork of it instead of importing them again. The stage that starts it runs as before, while
the warm interpreter imports on the other core.

What keeps a fork equal to a fresh `python -m stages.<name>`:
- only third-party libraries are preloaded: selfheal and the stages are imported fresh in every fork, from the
  caller's sys.path, so the code that runs is the code on disk;
- one warm interpreter per Python executable, installed packages (their folder's mtime) and environment, minus
  the variables that change on every run (VOLATILE) and those no preloaded library reads (UNREAD: selfheal's
  own, read by its code imported fresh in the fork; those of pytest, make, DVC's experiment queue and
  multiprocessing), with PATH's repeated entries dropped (the same lookups): a library that reads a variable
  when imported saw the value the stage would have seen;
- the fork takes the caller's argv, working directory, environment, umask and stdin/stdout/stderr (passed as file
  descriptors) and its resource limits; the caller exits with the fork's status, or dies of the same signal; SIGINT, SIGTERM and SIGHUP
  sent to the caller reach the fork, and a caller that dies takes the fork with it (SIGTERM), as does the runner
  between them (then the caller says the stage was lost, exit 1).

Every fork is taken from a single-threaded process, so no lock another thread held is copied into the stage: the
warm interpreter checks that it runs no thread but its own before it forks (else it declines the stage, which then
runs in the caller). Imported as they are, the libraries would start three native threads (OpenBLAS's pools in
numpy and scipy, jemalloc's purger in pyarrow); NATIVE keeps them from starting, in every stage (warm or not, so
a fork computes as a fresh process does), unless the user set those variables. A stage's fork leaves the warm
interpreter's frames (an exception up to `serve`) and runs the stage at the top, so it ends as any Python
program does: its traceback printed, its non-daemon threads joined, its atexit handlers run, its exit status or
signal its own. Only the teardown of the interpreter's modules after that is skipped (the last atexit handler
exits): it frees memory the OS frees anyway, and with these libraries loaded costs most of a second per stage.

A warm interpreter that cannot be reached in WAIT_S, or any other failure before the fork, runs the stage in the
caller, as before. SELFHEAL_PRELOAD=0 turns this off. Linux only (pidfd, SCM_RIGHTS); elsewhere stages run in
the caller. The warm interpreters live in workspace.PRELOAD_DIR (a socket, a lock holding the pid, a log each).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from selfheal.core import workspace

SWITCH = "SELFHEAL_PRELOAD"
IDLE_S = 120.0  # a warm interpreter unused this long exits
WAIT_S = 30.0  # the longest a stage waits to be taken (a warm interpreter accepts between two imports)
# in order of first use along fix_data -> train -> validate -> monitor
LIBRARIES = (
    "pandas", "pyarrow.parquet", "joblib", "threadpoolctl", "sklearn.pipeline", "sklearn.model_selection",
    "sklearn.compose", "sklearn.ensemble", "sklearn.linear_model", "sklearn.impute", "sklearn.preprocessing",
    "sklearn.metrics", "mlflow", "mlflow.sklearn", "mlflow.models", "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "scipy.stats", "datasketches",
)
VOLATILE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", SWITCH, "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"})
UNREAD = ("DVC_", "SELFHEAL_", "PYTEST_", "CELERY_", "_MP_FORK_")
_OWN = ("selfheal", "stages")  # imported fresh in every fork
_SOCKET_PATH_MAX = 108  # sun_path, with its terminating NUL
_NAME_MAX = 40  # "/.<key>.sock.<pid>", the longest name a socket is bound at
_READY = b"R"
_HEADER = struct.Struct("!I")
_SIGNAL = struct.Struct("!i")
_FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP")
NATIVE = {"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"}
_LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE")  # ulimit's


def run(module: str) -> None:
    """Run stage `module` (`stages.train`) as `python -m <module>` would: in a fork of the warm interpreter when
    one answers, else in this process."""
    import runpy

    for name, value in NATIVE.items():
        os.environ.setdefault(name, value)
    if _usable():
        conn = _connect(_key())
        if conn is not None:
            _delegate(conn, module)
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _usable() -> bool:
    off = os.environ.get(SWITCH, "1").strip().lower() in {"0", "false", "no", "off"}
    return not off and sys.platform == "linux" and hasattr(os, "pidfd_open") and _directory() is not None


def _directory() -> Path | None:
    """The user's private folder for warm interpreters, or None when it is not private (then none is used)."""
    path = workspace.PRELOAD_DIR
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    private = path.is_dir() and not path.is_symlink() and st.st_uid == os.getuid() and not st.st_mode & 0o077
    fits = len(os.fsencode(path)) + _NAME_MAX < _SOCKET_PATH_MAX  # a long TMPDIR: no room for a socket's name
    return path if private and fits else None


def _key() -> str:
    return key_for(os.environ)


def key_for(environ: Mapping[str, str]) -> str:
    """What a warm interpreter must share with a stage run in `environ` by this interpreter: the interpreter, the
    installed packages and the environment."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    try:
        stamp = os.stat(site).st_mtime_ns
    except OSError:
        stamp = 0
    stage_env = {**NATIVE, **environ}  # as `run` sets it for the stage
    if "PATH" in stage_env:
        stage_env["PATH"] = os.pathsep.join(dict.fromkeys(stage_env["PATH"].split(os.pathsep)))
    env = sorted((k, v) for k, v in stage_env.items() if k not in VOLATILE and not k.startswith(UNREAD))
    blob = json.dumps([sys.executable, sys.prefix, site, stamp, list(sys.flags), env])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _paths(key: str) -> tuple[Path, Path, Path]:
    base = workspace.PRELOAD_DIR / key
    return base.with_suffix(".sock"), base.with_suffix(".lock"), base.with_suffix(".log")


def _connect(key: str) -> socket.socket | None:
    """A connection to the warm interpreter that took the stage; None (after starting one) when there is none."""
    sock_path = _paths(key)[0]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(sock_path))
    except OSError:
        conn.close()
        _start(key)
        return None
    try:
        conn.settimeout(WAIT_S)
        taken = conn.recv(1) == _READY
        conn.settimeout(None)
    except OSError:
        taken = False
    if not taken:
        conn.close()
        return None
    return conn


def _start(key: str) -> None:
    """Start a warm interpreter for this key in the background (it exits at once if another one holds the key)."""
    import subprocess

    log = _paths(key)[2]
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from selfheal.ops.stage_runner import serve; serve(sys.argv[1])"
    try:
        with open(log, "ab") as out:
            subprocess.Popen([sys.executable, "-c", code, key], cwd="/", stdin=subprocess.DEVNULL, stdout=out,
                             stderr=out, start_new_session=True, close_fds=True)
    except OSError:
        pass


def _std_fds() -> list[int]:
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # closed by the caller: the fork gets /dev/null, as a fresh process would get an error
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


def _delegate(conn: socket.socket, module: str) -> NoReturn:
    """Hand the stage to the fork, relay signals to it, and end the way it ended."""
    import resource
    umask = os.umask(0)
    os.umask(umask)
    request = {"module": module, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path,
               "umask": umask, "limits": [[name, *resource.getrlimit(getattr(resource, name))] for name in _LIMITS]}
    payload = json.dumps(request).encode()
    socket.send_fds(conn, [_HEADER.pack(len(payload))], _std_fds())
    conn.sendall(payload)
    for name in _FORWARDED:
        signal.signal(getattr(signal, name), lambda signum, _frame: conn.sendall(_SIGNAL.pack(signum)))
    reply = b""
    while chunk := conn.recv(4096):
        reply += chunk
    if not reply:
        print(f"error: the warm stage process for {module} ended without a status; rerun with {SWITCH}=0",
              file=sys.stderr)
        raise SystemExit(1)
    code = int(json.loads(reply)["exit"])
    if code < 0:  # died of a signal: so does the caller, so DVC and the shell see the same
        if -code not in (signal.SIGKILL, signal.SIGSTOP):  # their action is always the default: no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    raise SystemExit(code)


# ---- the warm interpreter ------------------------------------------------------------------------------------


class _Stage(BaseException):
    """Raised in a stage's own process to leave the warm interpreter's frames for the top of `serve`."""

    def __init__(self, request: dict[str, Any], fds: list[int]) -> None:
        super().__init__(request["module"])
        self.request, self.fds = request, fds


_ENDED: dict[str, int] = {}  # in a stage's own process: how the stage ended ("code", or "signal" to die of)


def _exit_without_teardown() -> None:
    """Registered before any library's handler, so the interpreter runs it last: in a stage's process that has
    ended, leave with the stage's status (or signal) now that only the modules' teardown is left."""
    if not _ENDED:
        return  # the warm interpreter itself
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if "signal" in _ENDED:
        signal.signal(_ENDED["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), _ENDED["signal"])
    os._exit(_ENDED.get("code", 0))


def serve(key: str) -> None:
    """Import LIBRARIES, taking stages between two imports, then take stages until idle for IDLE_S. In a stage's
    own process this returns after running the stage (or raises what it raised), as `python -m` would end."""
    import atexit

    atexit.register(_exit_without_teardown)
    try:
        _serve(key)
        return
    except _Stage as stage:
        request, fds = stage.request, stage.fds
    _become(request, fds)  # outside the handler: the stage's own errors carry no context of ours


def _serve(key: str) -> None:
    import fcntl
    import time

    sock_path, lock_path, log_path = _paths(key)
    lock = open(lock_path, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another warm interpreter holds this key
    own = _key()
    if own != key:
        print(f"preload: this interpreter's key {own} is not {key}; not serving", file=sys.stderr)
        return
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    with contextlib.suppress(OSError):
        os.ftruncate(sys.stderr.fileno(), 0)  # the log: this warm interpreter's lines only
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path.with_name(f".{sock_path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    listener.bind(str(tmp))
    listener.listen(64)
    os.replace(tmp, sock_path)
    mine = sock_path.stat().st_ino
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # every module of selfheal this interpreter and its forks use before a stage's own code is imported, loaded
    # now: the checkout it was started from may be gone by the time another checkout's stage comes
    from selfheal.pipeline import tracking
    from selfheal.service import procs  # noqa: F401 - used by _become in each fork

    tracking.quiet()  # as a stage would before importing MLflow
    pending = list(LIBRARIES)
    last = time.monotonic()
    server = os.getpid()
    try:
        while True:
            ready, _, _ = select.select([listener], [], [], 0 if pending else min(IDLE_S, 5.0))
            _reap()
            if ready:
                conn, _ = listener.accept()
                _fork_runner(conn, listener, lock)
                last = time.monotonic()
            elif pending:
                _preload(pending.pop(0))
            elif time.monotonic() - last > IDLE_S or not _still(sock_path, mine):
                return
    finally:
        if os.getpid() == server:  # not in a stage's process on its way out (_Stage): these are not its own
            if _still(sock_path, mine):
                sock_path.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)  # still held: a newcomer opening it now fails its lock and leaves
            log_path.unlink(missing_ok=True)  # an orderly end; a warm interpreter that crashed leaves its log


def _preload(module: str) -> None:
    import importlib
    import traceback

    try:
        importlib.import_module(module)
    except Exception:  # a library missing here is imported (or reported) by the stage itself
        traceback.print_exc()


def _still(sock_path: Path, inode: int) -> bool:
    try:
        return sock_path.stat().st_ino == inode
    except OSError:
        return False


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _threads() -> int:
    """This process's threads as the OS counts them (native ones included: a library's pool, an allocator's)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0  # unknown: not forkable


def _fork_runner(conn: socket.socket, *held: Any) -> None:
    """Fork the runner that takes this stage; the warm interpreter goes straight back to listening. The fork lets
    go of what only the warm interpreter holds (its socket and the lock on its key). A fork of a process with
    other threads could inherit a lock one of them held: then the stage is declined (it runs in its caller)."""
    threads = _threads()
    if threads != 1:
        print(f"preload: {threads} threads here; declining a stage (it runs in its caller)", file=sys.stderr)
        conn.close()
        return
    if os.fork() != 0:
        conn.close()
        return
    for thing in held:
        thing.close()
    try:
        _runner(conn)
    except _Stage:
        raise  # the stage's own process, on its way to the top of serve()
    except BaseException:  # the runner never returns into the warm interpreter's loop
        os._exit(1)
    os._exit(0)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the stage went away")
        data += chunk
    return data


def _runner(conn: socket.socket) -> None:
    """Receive the stage, fork the process that runs it, relay signals to it, and send back how it ended."""
    conn.sendall(_READY)
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        return
    request = json.loads(_recv_exact(conn, _HEADER.unpack(header)[0]))
    pid = os.fork()
    if pid == 0:
        conn.close()
        raise _Stage(request, fds)
    for fd in fds:
        os.close(fd)
    print(f"preload: {request['module']} in {request['cwd']} runs as pid {pid}", file=sys.stderr, flush=True)
    done = os.pidfd_open(pid)
    caller = True
    while True:
        watched: list[Any] = [done, conn] if caller else [done]
        ready, _, _ = select.select(watched, [], [])
        if done in ready:
            break
        data = conn.recv(_SIGNAL.size)
        with contextlib.suppress(ConnectionError):  # a signal number split across reads is read whole
            data += _recv_exact(conn, _SIGNAL.size - len(data)) if data else b""
        if len(data) == _SIGNAL.size:
            os.kill(pid, _SIGNAL.unpack(data)[0])
        else:  # the caller died: so does its stage
            caller = False
            os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    if caller:
        conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """Turn this fork into `python -m <module>` as the caller started it and run it; what it raises (SystemExit,
    an error, KeyboardInterrupt) ends this process as it would end `python -m`."""
    import resource
    import runpy

    from selfheal.service import procs

    runner = os.getppid()
    procs.die_with_parent(signal.SIGTERM)  # the runner gone, nobody can learn how the stage ended
    if os.getppid() != runner:  # the runner died before that took effect: nobody would report this stage
        os._exit(1)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    for name, soft, hard in request["limits"]:
        with contextlib.suppress(ValueError, OSError):  # above this process's hard limit: it keeps its own
            resource.setrlimit(getattr(resource, name), (soft, hard))
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[SWITCH] = "0"  # the stage runs here, not in yet another fork
    sys.argv = request["argv"]
    sys.path[:] = request["path"]
    for name in [m for m in sys.modules if m.partition(".")[0] in _OWN]:
        del sys.modules[name]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in _FORWARDED[1:]:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    if "numpy" in sys.modules:  # a fresh process seeds numpy's global generator from the OS; `random` reseeds itself
        sys.modules["numpy"].random.seed()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as exc:  # what the interpreter makes of it: None 0, an int itself, anything else printed, 1
        _ENDED["code"] = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        raise
    except KeyboardInterrupt:  # an uncaught Ctrl-C: Python dies of SIGINT
        _ENDED["signal"] = signal.SIGINT
        raise
    except BaseException:
        _ENDED["code"] = 1
        raise
    _ENDED["code"] = 0


def stop(key: str | None = None) -> bool:
    """Stop the warm interpreter of `key` (default: this process's); True when one was running."""
    pid = _holder(_paths(key or _key())[1])
    if pid:
        os.kill(pid, signal.SIGTERM)
    return bool(pid)


def _holder(lock_path: Path) -> int:
    """The pid of the warm interpreter holding this lock, 0 when none does."""
    import fcntl

    try:
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return 0  # nobody holds it
            except OSError:
                return int(lock.read().strip() or 0)
    except (OSError, ValueError):
        return 0


if __name__ == "__main__":  # `python -m selfheal.ops.stage_runner stages.train [args]`: dvc.yaml's commands
    if len(sys.argv) < 2:
        print("usage: python -m selfheal.ops.stage_runner stages.<name> [args]", file=sys.stderr)
        raise SystemExit(2)
    sys.argv.pop(0)  # the stage sees [its own path, args...], as under `python -m stages.<name> args`
    run(sys.argv[0])
