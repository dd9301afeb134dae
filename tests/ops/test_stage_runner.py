"""Warm stage processes (selfheal.ops.stage_runner), for real: a probe stage run as
`python -m selfheal.ops.stage_runner stages.probe`, the way dvc.yaml runs a stage, first in its own process (which starts the warm interpreter), then in a fork of it.

Each test has an environment of its own, so a warm interpreter of its own, stopped at the end.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from selfheal.ops import sandbox
from selfheal.ops import stage_runner as runner
from selfheal.service import procs

PROBE = '''
import json, os, resource, sys, time
import psutil
from selfheal.core.errors import run_main
from stages import helper

def main():
    umask = os.umask(0)
    os.umask(umask)
    print(json.dumps({"pid": os.getpid(), "grandparent": psutil.Process(os.getppid()).ppid(), "argv": sys.argv, "cwd": os.getcwd(), "umask": umask,
                      "exp": os.environ.get("DVC_EXP_NAME"),
                      "helper": helper.VALUE, "pandas": "pandas" in sys.modules,
                      "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}), flush=True)
    print("to stderr", file=sys.stderr)
    options = dict(arg.split("=") for arg in sys.argv[1:] if "=" in arg)
    time.sleep(float(options.get("sleep", 0)))
    return int(options.get("exit", 0))

if __name__ == "__main__":
    run_main(main)
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "helper.py").write_text("VALUE = 1\n")
    (tmp_path / "stages" / "probe.py").write_text(PROBE)
    return tmp_path


@pytest.fixture
def environ() -> Iterator[dict[str, str]]:
    env = {**sandbox.env(), "PYTHONPATH": str(sandbox.SOURCE), "STAGE_RUNNER_TEST_KEY": uuid.uuid4().hex}
    env.pop(runner.SWITCH, None)
    yield env
    runner.stop(runner.key_for(env))


def start(project: Path, env: dict[str, str], *args: str, **kw) -> subprocess.Popen:
    """The probe stage started as dvc.yaml starts a stage, through the runner; its output piped."""
    return subprocess.Popen([sys.executable, "-m", "selfheal.ops.stage_runner", "stages.probe", *args], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def probe(project: Path, env: dict[str, str], *args: str, **kw) -> tuple[subprocess.Popen, dict, str]:
    """Run the probe stage to its end: the caller, what the stage saw, its stderr."""
    proc = start(project, env, *args, **kw)
    out, err = proc.communicate(timeout=120)
    return proc, json.loads(out.splitlines()[0]), err


def warm(project: Path, env: dict[str, str], not_pid: int = 0) -> int:
    """Run the probe (which starts the warm interpreter if there is none) and wait until one other than `not_pid`
    holds the key and answers; its pid."""
    probe(project, env)
    sock, lock, _ = runner._paths(runner.key_for(env))
    deadline = time.monotonic() + 60
    while True:
        pid = int(lock.read_text() or 0) if lock.exists() else 0
        if pid and pid != not_pid and sock.exists() and psutil.pid_exists(pid):
            return pid
        assert time.monotonic() < deadline, "no warm interpreter started"
        time.sleep(0.1)


THREADS = ("import importlib, os; from selfheal.ops.stage_runner import LIBRARIES; "
           "[importlib.import_module(m) for m in LIBRARIES]; print(len(os.listdir('/proc/self/task')))")


def test_with_the_stage_environment_the_preloaded_libraries_start_no_thread(environ: dict[str, str]) -> None:
    """What makes every fork single-threaded: with runner.NATIVE set (as every stage has it), importing every
    preloaded library leaves the one thread; without it, OpenBLAS and jemalloc start their own."""
    def threads(env: dict[str, str]) -> int:
        return int(subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True,
                                  check=True).stdout)

    assert threads({**environ, **runner.NATIVE}) == 1
    assert threads({k: v for k, v in environ.items() if k not in runner.NATIVE}) > 1


def test_stages_share_a_warm_interpreter_unless_a_library_could_see_a_difference() -> None:
    """The key: selfheal's and pytest's variables (read by code imported fresh in each fork, or by no library)
    and the per-run ones share an interpreter; a variable a library may read at import does not."""
    base = {"PATH": "/usr/bin", "HOME": "/root"}
    same = {**base, "SELFHEAL_PROJECT": "selfheal.nn.yaml", "PYTEST_XDIST_WORKER": "gw1", "DVC_EXP_NAME": "x",
            "PWD": "/tmp/a", "MAKELEVEL": "2", "CELERY_LOG_LEVEL": "20", "PATH": "/usr/bin:/usr/bin"}
    assert runner.key_for(same) == runner.key_for(base)
    assert runner.key_for({**base, "PATH": "/opt/bin:/usr/bin"}) != runner.key_for(base)
    assert runner.key_for({**base, "OMP_NUM_THREADS": "4"}) != runner.key_for(base)
    assert runner.key_for({**base, **runner.NATIVE}) == runner.key_for(base)  # what every stage runs with


def test_first_stage_runs_itself_and_starts_a_warm_interpreter(project: Path, environ: dict[str, str]) -> None:
    proc, seen, _ = probe(project, environ)
    assert proc.returncode == 0 and seen["pid"] == proc.pid  # ran in the caller
    server = warm(project, environ)
    proc, seen, _ = probe(project, environ)
    assert proc.returncode == 0 and seen["pid"] != proc.pid and seen["grandparent"] == server  # stage <- runner <- warm
    files = runner._paths(runner.key_for(environ))  # socket, lock, log
    assert runner.stop(runner.key_for(environ)) and procs.wait_gone(server, 30)
    assert not any(path.exists() for path in files)


def test_a_forked_stage_is_the_stage_the_caller_started(project: Path, environ: dict[str, str]) -> None:
    server = warm(project, environ)
    # edited code: the fork must run the new one (a different length: a .pyc written in the same second as an
    # edit of the same size is taken as current by any Python, runner or not)
    (project / "stages" / "helper.py").write_text("VALUE = 20\n")
    env = {**environ, "DVC_EXP_NAME": "wiser-newt"}  # set by `dvc exp run`: the variables DVC sets keep the key
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    proc, seen, err = probe(project, env, "exit=3", "x y", umask=0o027,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (123, nofile[1])))
    assert seen["pid"] != proc.pid and seen["grandparent"] == server  # stage <- runner <- warm
    assert seen["argv"] == [str(project / "stages" / "probe.py"), "exit=3", "x y"]
    assert seen["cwd"] == str(project) and seen["umask"] == 0o027 and seen["nofile"] == 123  # ulimit -n 123
    assert seen["exp"] == "wiser-newt"
    assert seen["helper"] == 20 and seen["pandas"]  # fresh project code, preloaded libraries
    assert err.strip() == "to stderr" and proc.returncode == 3


def test_a_warm_interpreter_outlives_the_checkout_that_started_it(tmp_path: Path, environ: dict[str, str]) -> None:
    """Two checkouts with their own copy of selfheal (as a sandbox or a second clone has it) share a warm
    interpreter; the one that started it is deleted; the other's stage still runs in a fork, with its own code."""
    checkouts = []
    for name in ("first", "second"):
        root = tmp_path / name
        shutil.copytree(sandbox.SOURCE / "selfheal", root / "selfheal", ignore=shutil.ignore_patterns("__pycache__"))
        (root / "stages").mkdir()
        (root / "stages" / "__init__.py").write_text("")
        (root / "stages" / "helper.py").write_text(f"VALUE = {len(checkouts) + 1}\n")
        (root / "stages" / "probe.py").write_text(PROBE)
        checkouts.append(root)
    server = warm(checkouts[0], environ)
    deadline = time.monotonic() + 60  # the warm interpreter past its start (preloading scikit-learn): serving
    while not any("sklearn" in m.path for m in psutil.Process(server).memory_maps()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shutil.rmtree(checkouts[0])
    proc, seen, err = probe(checkouts[1], environ)
    assert proc.returncode == 0 and err.strip() == "to stderr", err
    assert seen["grandparent"] == server and seen["helper"] == 2  # in a fork, with the second checkout's code


def test_signals_reach_the_fork_and_a_dead_caller_takes_it_along(project: Path, environ: dict[str, str]) -> None:
    warm(project, environ)
    for sig, code in ((signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)):
        proc = start(project, environ, "sleep=60")
        assert proc.stdout is not None
        forked = json.loads(proc.stdout.readline())["pid"]
        assert forked != proc.pid and psutil.pid_exists(forked)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code  # SIGINT: the stage's own "interrupted" exit, relayed
        assert procs.wait_gone(forked, 30)
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()


def test_a_stage_whose_runner_dies_ends_and_its_caller_says_so(project: Path, environ: dict[str, str]) -> None:
    warm(project, environ)
    proc = start(project, environ, "sleep=60")
    assert proc.stdout is not None
    forked = json.loads(proc.stdout.readline())["pid"]
    os.kill(psutil.Process(forked).ppid(), signal.SIGKILL)  # the runner between the caller and the stage
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "ended without a status" in err
    assert procs.wait_gone(forked, 30)


def test_switched_off_every_stage_runs_in_its_caller(project: Path, environ: dict[str, str]) -> None:
    warm(project, environ)
    proc, seen, _ = probe(project, {**environ, runner.SWITCH: "0"})
    assert seen["pid"] == proc.pid


def test_a_stale_socket_is_replaced(project: Path, environ: dict[str, str]) -> None:
    """A warm interpreter killed outright leaves its socket behind: the next stage runs itself and starts anew."""
    old = warm(project, environ)
    os.kill(old, signal.SIGKILL)
    assert procs.wait_gone(old, 30)
    proc, seen, _ = probe(project, environ)
    assert proc.returncode == 0 and seen["pid"] == proc.pid  # the stale socket refused: ran in the caller
    server = warm(project, environ, not_pid=old)
    proc, seen, _ = probe(project, environ)
    assert seen["pid"] != proc.pid and seen["grandparent"] == server  # stage <- runner <- warm


@pytest.mark.slow
def test_the_pipeline_in_warm_forks_writes_what_fresh_processes_write(tmp_path: Path) -> None:
    """The real `dvc repro`, once with the warm interpreter (train, validate and monitor forked from it) and once
    with every stage a fresh process: every output's md5 in dvc.lock is the same."""
    own = {"STAGE_RUNNER_TEST_KEY": uuid.uuid4().hex, runner.SWITCH: "1"}
    warm_repo, fresh_repo = (sandbox.create(tmp_path / name, sandbox.SOURCE) for name in ("warm", "fresh"))
    try:
        sandbox.run(["dvc", "repro"], warm_repo, extra_env=own)
        sandbox.run(["dvc", "repro"], fresh_repo, extra_env={runner.SWITCH: "0"})
        served = runner._paths(runner.key_for({**sandbox.env(), **own}))[2].read_text()
        assert runner.stop(runner.key_for({**sandbox.env(), **own}))  # the key the stages used
    finally:
        runner.stop(runner.key_for({**sandbox.env(), **own}))
    for stage in ("train", "validate", "monitor"):
        assert f"stages.{stage} in {warm_repo}" in served
    assert outputs(warm_repo) == outputs(fresh_repo)


def outputs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_a_socket_folder_others_can_enter_turns_it_off(project: Path, environ: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "tmp" / f"selfheal-preload-{os.getuid()}"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    env = {**environ, "TMPDIR": str(folder.parent)}
    for _ in range(2):
        proc, seen, _ = probe(project, env)
        assert seen["pid"] == proc.pid  # in its own process both times: no warm interpreter was started
    assert list(folder.iterdir()) == []


def test_a_tmpdir_too_long_for_a_socket_turns_it_off(project: Path, environ: dict[str, str], tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    env = {**environ, "TMPDIR": str(deep)}
    for _ in range(2):
        proc, seen, _ = probe(project, env)
        assert seen["pid"] == proc.pid and proc.returncode == 0
    assert not list(deep.glob("selfheal-preload-*/*"))  # nothing started, nothing to clean up


def test_a_forked_stage_killed_outright_kills_its_caller_the_same_way(project: Path, environ: dict[str, str]) -> None:
    """`kill -9` of the fork: its caller dies of SIGKILL too (as DVC and the shell expect), no traceback."""
    warm(project, environ)
    proc = start(project, environ, "sleep=60")
    assert proc.stdout is not None
    forked = json.loads(proc.stdout.readline())["pid"]
    os.kill(forked, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "Traceback" not in err


ENDING = '''
import atexit, os, sys, threading, time
import psutil
print(psutil.Process(os.getppid()).ppid(), flush=True)
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()
raise RuntimeError("stage failed")
'''


def test_a_forked_stage_ends_as_a_fresh_process_ends(project: Path, environ: dict[str, str]) -> None:
    """A stage that starts a thread, registers an atexit handler and fails: in the fork as in a fresh process,
    the traceback is printed, the thread finishes, the handler runs, and the status is 1."""
    (project / "stages" / "ending.py").write_text(ENDING)
    server = warm(project, environ)

    def end(env: dict[str, str]) -> tuple[list[str], str, int]:
        proc = subprocess.run([sys.executable, "-m", "selfheal.ops.stage_runner", "stages.ending"], cwd=project,
                              env=env, capture_output=True, text=True, timeout=120)
        return proc.stdout.splitlines(), proc.stderr, proc.returncode

    forked, fresh = end(environ), end({**environ, runner.SWITCH: "0"})
    assert forked[0][0] == str(server) and fresh[0][0] != str(server)  # stage <- runner <- warm; its own
    for lines, err, code in (forked, fresh):
        assert lines[1:] == ["thread finished", "atexit ran"] and code == 1
        assert err.rstrip().endswith("RuntimeError: stage failed")
