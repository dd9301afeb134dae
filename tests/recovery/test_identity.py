"""The operator's side of the service: a forged pid file, another project's service on our port, and a service
the operator stopped on purpose. Real service processes and the real `selfheal` command throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from selfheal.core import atomic, workspace
from selfheal.service import procs
from selfheal.service.client import check_health, request_reload
from tests.servicekit import (
    free_port,
    make_project,
    run_cli,
    service_pid,
    start_service,
    stop_all,
    two_models,
    url_of,
    wait_status,
)

pytestmark = pytest.mark.xdist_group("recovery")
FAST = {"kill_grace_seconds": 1.0, "backoff_seconds": 0.05, "health_timeout_seconds": 1.5, "max_recovery_attempts": 1}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_models(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def projects(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two project directories; every process that ran in either is killed afterwards."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    try:
        yield ours, theirs
    finally:
        stop_all(ours)
        stop_all(theirs)


def forge_pid_file(project: Path, proc: psutil.Process, port: int, cmd: list[str]) -> None:
    """A pid file as a hostile writer would make it: a live pid, its real start time, any command."""
    atomic.write_json(project / workspace.PID_FILE, {
        "pid": proc.pid, "create_time": proc.create_time(), "host": "127.0.0.1", "port": port, "state": "serving",
        "cwd": str(project), "cmd": cmd,
    })


def recovery_log(project: Path) -> list[dict]:
    path = project / workspace.RECOVERY_LOG
    return json.loads(path.read_text()) if path.exists() else []


def test_a_forged_pid_file_is_neither_signalled_nor_run(projects: tuple[Path, Path], models: dict[str, Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pid file names an unrelated process (a `sleep` in the project directory) and a command of the
    attacker's: reload and recover never signal it, never run the command, and start the service from params."""
    project = make_project(projects[0], models["a"], FAST)
    monkeypatch.chdir(project)
    port = free_port()
    url = url_of(port)
    sleeper = subprocess.Popen(["sleep", "300"], cwd=project, start_new_session=True)
    try:
        planted = project / "planted"
        forge_pid_file(project, psutil.Process(sleeper.pid), port,
                       [sys.executable, "-c", f"open({str(planted)!r}, 'w').write('ran')"])
        assert "not a selfheal service" in (procs.why_not_ours(procs.read_pid_file()) or "")

        reload = request_reload(url)  # nothing answers: the SIGHUP fallback (which would end a `sleep`)
        assert reload["via"] is None and "no running service of this project" in reload["error"]

        out = run_cli(project, "recover", "--method", "process", "--service-url", url)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"left pid {sleeper.pid} alone: pid {sleeper.pid} is not a selfheal service" in out.stdout
        assert sleeper.poll() is None, "recover signalled the process a forged pid file named"
        assert not planted.exists(), "recover ran the command from the pid file"
        assert check_health(url).healthy and service_pid(project) != sleeper.pid
        started = psutil.Process(service_pid(project)).cmdline()
        assert started == procs.service_argv("127.0.0.1", port)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_pid_file_without_a_start_time_matches_nothing(projects: tuple[Path, Path], models: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Even the project's own live service is not signalled on the word of a pid file without its start time."""
    project = make_project(projects[0], models["a"], FAST)
    monkeypatch.chdir(project)
    port = free_port()
    start_service(project, port)
    wait_status(url_of(port))
    info = procs.read_pid_file()
    assert info is not None and procs.why_not_ours(info) is None and procs.our_service(port) == info
    del info["create_time"]
    atomic.write_json(project / workspace.PID_FILE, info)
    assert "records no start time" in (procs.why_not_ours(info) or "")
    assert procs.our_service(port) is None


def test_another_projects_service_on_our_port_is_left_alone(projects: tuple[Path, Path], models: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Their service answers on our URL and our pid file names it (a copy, start time included): it is reported
    as another project's, never healthy; reload, recover and SIGHUP leave it alone."""
    ours = make_project(projects[0], models["b"], FAST)
    theirs = make_project(projects[1], models["a"], FAST)
    port = free_port()
    url = url_of(port)
    start_service(theirs, port)
    before = wait_status(url)
    loaded, workers = _loaded_at(url), {c.pid for c in psutil.Process(before["pid"]).children()}
    (ours / workspace.STATE_DIR).mkdir()
    (ours / workspace.PID_FILE).write_bytes((theirs / workspace.PID_FILE).read_bytes())
    monkeypatch.chdir(ours)

    health = check_health(url)
    assert health.state == "foreign" and "another project's service" in health.detail
    assert "another project" in (procs.why_not_ours(procs.read_pid_file()) or "")
    reload = request_reload(url)
    assert reload["reloaded"] is False and reload.get("foreign") and reload["via"] is None

    out = run_cli(ours, "recover", "--service-url", url)
    assert out.returncode == 1 and "another project's service" in out.stdout + out.stderr
    after = requests.get(url + "/health", timeout=5).json()
    assert after["pid"] == before["pid"] and after["model_md5"] == before["model_md5"]
    again = _loaded_at(url)  # never reloaded, restarted or signalled: each worker still has its first load
    assert again and set(again) <= workers, (workers, again)  # the same worker processes
    assert all(loaded.get(worker, at) == at for worker, at in again.items()), (loaded, again)


def _loaded_at(url: str) -> dict[int, str]:
    """{worker pid: when it loaded its model}, from the health answers of 20 new connections."""
    answers = [requests.get(url + "/health", timeout=5).json() for _ in range(20)]
    return {a["worker_pid"]: a["model_loaded_at"] for a in answers}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_service_the_operator_stopped_stays_stopped(projects: tuple[Path, Path], models: dict[str, Path],
                                                      sig: signal.Signals) -> None:
    """A clean stop removes the pid file and records the stop; recover reports it and starts nothing."""
    project = make_project(projects[0], models["a"], FAST)
    port = free_port()
    url = url_of(port)
    proc = start_service(project, port)
    wait_status(url)
    os.kill(proc.pid, sig)
    assert proc.wait(timeout=30) == -sig  # it still exits as the signal says
    assert not (project / workspace.PID_FILE).exists()
    stop = json.loads((project / workspace.SERVICE_STOPPED).read_text())
    assert (stop["pid"], stop["port"], stop["signal"]) == (proc.pid, port, sig.name)

    out = run_cli(project, "recover", "--service-url", url)
    assert "stopped by the operator" in out.stdout
    assert check_health(url, root=project).state == "down" and recovery_log(project) == []

    start_service(project, port)  # starting it again ends the operator's stop
    wait_status(url)
    assert not (project / workspace.SERVICE_STOPPED).exists()


def test_heal_reports_another_projects_service_and_leaves_a_stopped_one_stopped(
    promoted: Path, workdir, projects: tuple[Path, Path], models: dict[str, Path]
) -> None:
    """`heal --plan` never calls another project's service healthy, and heal does not restart ours after the
    operator stopped it (SIGTERM)."""
    from selfheal.ops.sandbox import set_params
    from tests.heal_support import selfheal

    repo = workdir(promoted)
    theirs = make_project(projects[1], models["a"], FAST)
    port = free_port()
    url = url_of(port)
    set_params(repo, service_recovery={**FAST, "service_url": url, "warm_standby": False})
    try:
        start_service(theirs, port)
        wait_status(url)
        (repo / workspace.STATE_DIR).mkdir(exist_ok=True)
        (repo / workspace.PID_FILE).write_bytes((theirs / workspace.PID_FILE).read_bytes())
        plan = selfheal("heal", "--plan", cwd=repo).stdout
        assert "service escalate" in plan and "another project's service" in plan, plan
        assert "service healthy" not in plan
        stop_all(theirs)

        (repo / workspace.PID_FILE).unlink()
        ours = start_service(repo, port)
        wait_status(url)
        os.kill(ours.pid, signal.SIGTERM)
        ours.wait(timeout=30)
        out = selfheal("heal", cwd=repo).stdout
        assert "stopped by the operator" in out and "service: done" not in out, out
        assert check_health(url, root=repo).state == "down" and not (repo / workspace.PID_FILE).exists()
    finally:
        stop_all(repo)


def test_a_decoy_that_mentions_the_service_is_not_taken_for_it(projects: tuple[Path, Path]) -> None:
    """A process whose command line merely contains `selfheal.service`, in the project's directory, named in a
    pid file with its real start time and command: not the service, never signalled."""
    project = projects[0]
    (project / ".selfheal").mkdir(parents=True)
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)  # selfheal.service"], cwd=project,
                             start_new_session=True)
    try:
        proc = psutil.Process(decoy.pid)
        forge_pid_file(project, proc, free_port(), proc.cmdline())
        why = procs.why_not_ours(procs.read_pid_file(project / workspace.PID_FILE), project)
        assert why is not None and "is not a selfheal service" in why
    finally:
        decoy.kill()
        decoy.wait()
    for cmd, ours in ((["/v/bin/python", "-m", "selfheal.service", "--port", "1"], True),
                      (["/v/bin/python", "/v/bin/selfheal", "serve", "--port", "1"], True),
                      (["/v/bin/selfheal", "serve"], True),
                      (["/v/bin/python", "-c", "selfheal.service"], False),
                      (["sleep", "300", "selfheal.service"], False)):
        assert procs._runs_the_service(cmd) is ours, cmd


def test_a_forged_watcher_record_names_no_watcher(projects: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from selfheal.recovery.turns import running_watcher

    project = projects[0]
    (project / ".selfheal").mkdir(parents=True)
    monkeypatch.chdir(project)
    record = {"pid": 1, "host": socket.gethostname(), "actor": "watch"}
    atomic.write_json(workspace.WATCHER, record)  # no start time: pid 1 is alive, but names nobody
    assert running_watcher() is None
    atomic.write_json(workspace.WATCHER, {**record, "create_time": psutil.Process(1).create_time()})
    assert running_watcher() is None  # the right start time, but pid 1 is no `selfheal recover --watch` here


def test_a_restarters_sigterm_is_not_taken_for_the_operators_stop(projects: tuple[Path, Path],
                                                                   models: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """While a restarter holds the restart lock, the service it stops records no operator's stop (so a concurrent
    `selfheal recover` does not report one); without it, SIGTERM is the operator's and is recorded."""
    from selfheal.core import locks

    project = make_project(projects[0], models["a"], FAST)
    monkeypatch.chdir(project)
    for restarting in (True, False):
        port = free_port()
        start_service(project, port)
        wait_status(url_of(port))
        pid = service_pid(project)
        if restarting:
            with locks.hold(workspace.RESTART_LOCK, workspace.RESTART_HOLDER, "watch"):
                procs.terminate(pid, 10.0)
        else:
            procs.terminate(pid, 10.0)
        assert (project / workspace.SERVICE_STOPPED).exists() is not restarting, restarting
