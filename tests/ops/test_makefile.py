"""What a newcomer meets first: `make venv` says what it is doing, `make serve` logs where the README says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfheal.core import workspace
from selfheal.service import procs
from tests.servicekit import free_port, make_project, stop_all, train_model, url_of, wait_status

ROOT = Path(__file__).resolve().parents[2]


def test_make_venv_shows_a_line_per_step_and_uv_progress(tmp_path: Path) -> None:
    out = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "venv", f"VENV={tmp_path}/venv"],
                         capture_output=True, text=True, check=True).stdout
    steps = [line for line in out.splitlines() if line.startswith("echo \"==> [")]
    assert len(steps) == 4, out
    installs = [line for line in out.splitlines() if " install " in line or " sync " in line]
    assert installs and not any("--quiet" in line for line in installs), installs


@pytest.mark.xdist_group("service")
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm-to-the-service"])
def test_make_serve_logs_to_the_service_log_and_stops_quietly(tmp_path: Path, stop: str) -> None:
    train_model(tmp_path / "models", max_iter=5, rows=200)
    project = make_project(tmp_path / "project", tmp_path / "models")
    port = free_port()
    # the venv of this checkout (make would otherwise build one in the project); the stamp counts as made
    cmd = ["make", "-f", str(ROOT / "Makefile"), "-o", ".venv/.installed", "serve", f"PORT={port}",
           f"BIN={Path(sys.executable).parent}"]
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_status(url_of(port))
        deadline = time.monotonic() + 10  # the log is written through tee: a moment after the service wrote it
        while '"reloaded": true' not in (project / workspace.SERVICE_LOG).read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = (project / workspace.SERVICE_LOG).read_text()
        assert "selfheal service: " in log and '"reloaded": true' in log
        if stop == "ctrl-c":  # the terminal sends SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:  # an operator or a supervisor stops the service process itself
            os.kill(procs.read_pid_file(project / workspace.PID_FILE)["pid"], signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        stop_all(project)
    assert "stopped by SIG" in out and "make: ***" not in out and "Terminated" not in out, out
    assert stop == "ctrl-c" or proc.returncode == 0, out
