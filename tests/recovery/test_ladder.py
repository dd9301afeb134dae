"""`selfheal recover` against real service processes: crash, hang, 503, hopeless restarts, Docker, watch mode."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from selfheal.core import workspace
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
    use_model,
    wait_status,
)

pytestmark = pytest.mark.xdist_group("recovery")
FAST = {"kill_grace_seconds": 1.0, "backoff_seconds": 0.05, "health_timeout_seconds": 1.5}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_models(tmp_path_factory.mktemp("models"))


@pytest.fixture()
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The test's project directory; every process that ran in it is killed afterwards."""
    path = tmp_path / "project"
    path.mkdir()
    try:
        yield path
    finally:
        stop_all(path)


def log(project: Path, name: str = "monitoring/recovery_log.json") -> list[dict]:
    path = project / name
    return json.loads(path.read_text()) if path.exists() else []


def test_crash_and_hang_are_detected_and_recovered(workdir: Path, models: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(workdir, models["a"], FAST)
    monkeypatch.chdir(project)  # request_reload finds the pid file where rollback runs: the project directory
    port = free_port()
    url = url_of(port)
    start_service(project, port, env={"SELFHEAL_ADMIN_TOKEN": "t0ken"})
    wait_status(url)

    healthy = run_cli(project, "recover", "--service-url", url)
    assert healthy.returncode == 0 and "Health check passed" in healthy.stdout
    assert log(project) == []

    # the rollback helper's reload: HTTP is refused without the token, so it falls back to SIGHUP via the pid file
    use_model(project, models["b"])
    result = request_reload(url)
    assert (result["via"], result["pid"]) == ("sighup", service_pid(project))
    deadline = time.monotonic() + 30
    while check_health(url).body.get("model_md5") != json.loads((models["b"] / "model.json").read_text())["md5"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    crashed = service_pid(project)
    os.kill(crashed, signal.SIGKILL)
    out = run_cli(project, "recover", "--method", "process", "--service-url", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert check_health(url).healthy and service_pid(project) != crashed
    (entry,) = log(project)
    assert entry["action"] == "service_recovery" and entry["success"] is True
    assert (entry["method"], entry["attempt"], entry["state"]) == ("process", 1, "down")
    assert entry["detected_at"] <= entry["recovered_at"] and entry["seconds_to_recover"] > 0

    hung = service_pid(project)
    os.killpg(hung, signal.SIGSTOP)  # the whole service: its master and every worker
    out = run_cli(project, "recover", "--service-url", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "hang" in out.stdout
    assert not procs.alive(hung)
    assert check_health(url).healthy and service_pid(project) != hung
    assert [(e["state"], e["method"], e["success"]) for e in log(project)][-1] == ("hung", "process", True)


def test_unhealthy_service_escalates_then_alerts_and_a_reload_fixes_it(workdir: Path, models: dict[str, Path]) -> None:
    """Production's bytes lost (DVC cache and workspace, no remote): 503. auto tries cache, config, then a restart
    (still 503): alert, exit 1. With the bytes back, the first step (cache: reload the model) is enough and the
    process is not restarted."""
    from selfheal.versions import vcs

    project = make_project(workdir, models["a"], FAST)
    md5 = hashlib.md5((models["a"] / "model.joblib").read_bytes()).hexdigest()
    vcs.cache_path(md5, project).unlink()
    (project / "models" / "model.joblib").unlink()
    port = free_port()
    url = url_of(port)
    start_service(project, port)
    wait_status(url, 503)

    out = run_cli(project, "recover", "--service-url", url)
    assert out.returncode == 1
    assert [(e["method"], e["success"]) for e in log(project)] == [("cache", False), ("config", False),
                                                                   ("process", False)]
    (alert,) = log(project, "monitoring/alerts.json")
    assert alert["kind"] == "service_recovery_exhausted" and alert["attempts"] == 3
    assert f"no copy with the recorded md5 {md5}" in alert["reason"]

    restarted = service_pid(project)
    use_model(project, models["a"])  # the bytes are back (a rollback's checkout)
    out = run_cli(project, "recover", "--service-url", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [(e["method"], e["success"]) for e in log(project)][-1] == ("cache", True)
    assert service_pid(project) == restarted and check_health(url, root=project).healthy


def test_recovery_that_cannot_succeed_stops_after_the_limit_with_an_alert(workdir: Path, models: dict) -> None:
    project = make_project(workdir, models["a"], {**FAST, "start_command": "false"})
    url = url_of(free_port())
    out = run_cli(project, "recover", "--method", "process", "--service-url", url)
    assert out.returncode == 1
    entries = log(project)
    assert [(e["attempt"], e["success"]) for e in entries] == [(1, False), (2, False), (3, False)]
    assert all("exited with code 1" in e["details"] for e in entries)
    (alert,) = log(project, "monitoring/alerts.json")
    assert alert["kind"] == "service_recovery_exhausted" and alert["success"] is True
    assert "ALERT [service_recovery_exhausted]" in out.stderr


def test_docker_method_says_plainly_when_it_cannot_work(workdir: Path, models: dict[str, Path]) -> None:
    project = make_project(workdir, models["a"], FAST)
    url = url_of(free_port())
    out = run_cli(project, "recover", "--method", "docker", "--container", "no-such-container", "--service-url", url)
    assert out.returncode == 1
    said = out.stdout + out.stderr
    # here: no daemon (or no docker at all); on a machine with a daemon: the container does not exist
    assert any(s in said for s in ("no Docker daemon reachable", "docker is not installed", "no-such-container"))
    assert log(project)[-1]["method"] == "docker" and log(project)[-1]["success"] is False


@pytest.mark.timeout(900)
def test_watch_keeps_the_service_up_and_stops_on_a_restart_storm(workdir: Path, models: dict[str, Path]) -> None:
    """Budget 3 attempts per window: the watcher starts the absent service and brings it back after each crash
    until the budget is spent; the next crash is a restart storm: alert and exit 1, the warm standby is told
    to go away. (A slow machine may need a second attempt for one start: the budget, not a count, decides.)"""
    sr = {**FAST, "max_recovery_attempts": 3, "watch_interval_seconds": 0.2, "health_timeout_seconds": 5.0}
    project = make_project(workdir, models["a"], sr)
    url = url_of(free_port())
    selfheal = Path(sys.executable).parent / "selfheal"
    watcher = subprocess.Popen([str(selfheal), "recover", "--watch", "--service-url", url], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def successes() -> int:
        return sum(e["success"] for e in log(project))

    def wait_recovered(count: int) -> None:
        """Until the watcher has logged `count` successful recoveries (or exited): only then is it watching again."""
        deadline = time.monotonic() + 120  # generous: a loaded CI machine is slow; speed is measured in bench
        while successes() < count and watcher.poll() is None:
            assert time.monotonic() < deadline, log(project)
            time.sleep(0.1)

    try:
        wait_recovered(1)  # the watcher found no service and started one
        first = service_pid(project)
        crashes = 0
        while watcher.poll() is None and crashes < 5:  # crash it, each time once recovered, until the budget is spent
            before = successes()
            os.kill(service_pid(project), signal.SIGKILL)
            crashes += 1
            wait_recovered(before + 1)
            if crashes == 1 and watcher.poll() is None:
                assert check_health(url, root=project).healthy and service_pid(project) != first
        out, err = watcher.communicate(timeout=60)
    except AssertionError:
        procs.kill_group(watcher.pid)
        out, err = watcher.communicate(timeout=10)
        service_log = (project / workspace.SERVICE_LOG).read_text(errors="replace")[-3000:]
        raise AssertionError(f"watcher said:\n{out}\n{err}\nservice log tail:\n{service_log}") from None
    finally:
        if watcher.poll() is None:
            procs.kill_group(watcher.pid)
    entries = log(project)
    assert len(entries) == 3, json.dumps(entries)  # the budget, never more
    assert sum(e["success"] for e in entries) >= 2, json.dumps(entries)
    assert watcher.returncode == 1, out + err
    assert [a["kind"] for a in log(project, "monitoring/alerts.json")] == ["service_restart_storm"]
    assert "forked from the warm standby" in out
    time.sleep(1)
    serving = procs.read_pid_file(project / workspace.PID_FILE)  # an activated spare keeps --standby in its argv
    spares = [p for p in psutil.process_iter(["cmdline", "cwd"]) if p.pid != (serving or {}).get("pid")
              and "--standby" in (p.info["cmdline"] or []) and p.info["cwd"] == str(project.resolve())]
    assert spares == []


@pytest.mark.timeout(600)
def test_one_restarter_at_a_time_and_the_log_says_who(workdir: Path, models: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher runs; the service crashes and `selfheal recover` runs by hand during the watcher's (cold, no
    standby) restart: exactly one of them restarts, the other says who did. Then heal finds the service down
    and leaves it to the watcher instead of starting a second process."""
    from selfheal.core.project import open_project
    from selfheal.healing.actions import execute
    from selfheal.healing.policy import Decision

    sr = {**FAST, "watch_interval_seconds": 0.2, "health_timeout_seconds": 5.0, "warm_standby": False,
          "max_recovery_attempts": 5}
    project = make_project(workdir, models["a"], sr)
    url = url_of(free_port())
    selfheal = Path(sys.executable).parent / "selfheal"
    watcher = subprocess.Popen([str(selfheal), "recover", "--watch", "--service-url", url], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def wait_entries(count: int) -> list[dict]:
        deadline = time.monotonic() + 120
        while len(log(project)) < count or not check_health(url, root=project).healthy:
            assert watcher.poll() is None and time.monotonic() < deadline, log(project)
            time.sleep(0.1)
        return log(project)

    try:
        (first,) = wait_entries(1)
        marker = json.loads((project / workspace.WATCHER).read_text())
        assert marker["pid"] == watcher.pid
        assert (first["actor"], first["pid"], first["host"]) == ("watch", watcher.pid, socket.gethostname())

        os.kill(service_pid(project), signal.SIGKILL)
        while check_health(url, root=project).state != "down":
            time.sleep(0.05)
        by_hand = run_cli(project, "recover", "--service-url", url)
        assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
        entries = wait_entries(2)
        time.sleep(1)  # a second restarter would have logged by now
        assert len(log(project)) == 2, log(project)
        restarted = entries[1]
        assert restarted["success"] and restarted["actor"] in ("watch", "recover")
        if restarted["actor"] == "watch":  # the usual order: the watcher saw the crash first
            assert "Service already recovered: recovered by watch pid" in by_hand.stdout, by_hand.stdout

        monkeypatch.chdir(project)
        serving = service_pid(project)
        os.kill(serving, signal.SIGKILL)
        result = execute(Decision("service", "recover", "service down"), open_project(project), project)
        assert result.ok and result.note == f"the watcher {watcher.pid} recovers the service (not this heal)"
        entries = wait_entries(3)
        assert [e["actor"] for e in entries[2:]] == ["watch"] and service_pid(project) != serving
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGTERM)
            watcher.communicate(timeout=60)
    assert watcher.returncode == 0 and not (project / workspace.WATCHER).exists()
    assert all(e["actor"] != "heal" for e in log(project))
