"""Project commands run in the user's environment: selfheal puts its own interpreter first only for its own
pipeline, whose stages are selfheal's code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.core.project import OURS
from selfheal.ops import sandbox
from selfheal.versions import vcs

OWN_BIN = str(Path(sys.executable).parent)


def _guarded(root: Path) -> Path:
    config = {**OURS, "kind": "dvc", "model": {"artifact": "m", "outs": ["out.txt"], "stages": ["which"]},
              "gate": {"metrics": "m.json", "key": "k"}}
    (root / "selfheal.yaml").write_text(yaml.safe_dump(config))
    return root


def test_our_pipeline_runs_with_this_interpreter_first(tmp_path: Path) -> None:
    assert vcs.env(tmp_path)["PATH"].split(os.pathsep)[0] == OWN_BIN  # no selfheal.yaml: our layout


def test_another_project_runs_in_the_users_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project_bin = tmp_path / "project-venv" / "bin"
    project_bin.mkdir(parents=True)
    (project_bin / "python").write_text("#!/bin/sh\necho project python\n")  # stands in for its interpreter
    (project_bin / "python").chmod(0o755)
    (project_bin / "dvc").symlink_to(Path(OWN_BIN) / "dvc")
    monkeypatch.setenv("PATH", f"{project_bin}{os.pathsep}{os.environ['PATH']}")  # the project's venv, activated
    (tmp_path / "project").mkdir()
    root = _guarded(tmp_path / "project")
    assert vcs.env(root)["PATH"] == os.environ["PATH"]
    # for real: the stage's `python` is the project's, as in the user's shell
    sandbox.run(["git", "init", "-q"], root)
    sandbox.run(["dvc", "init", "-q"], root)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"which": {
        "cmd": "python > out.txt", "outs": ["out.txt"]}}}))
    vcs.dvc("repro", "-q", cwd=root)
    assert (root / "out.txt").read_text() == "project python\n"


def test_dvcs_lock_held_by_a_live_process_is_waited_on(tmp_path: Path) -> None:
    """A `dvc repro` still running after a killed heal holds DVC's lock: selfheal's next DVC call waits for it
    instead of failing with "Unable to acquire lock"."""
    import subprocess
    import time

    root = tmp_path / "repo"
    root.mkdir()
    sandbox.run(["git", "init", "-q"], root)
    sandbox.run(["dvc", "init", "-q"], root)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, zc.lockfile; "
                               "lock = zc.lockfile.LockFile('.dvc/tmp/lock'); print('held', flush=True); "
                               "time.sleep(5)"], cwd=root, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    proc = vcs.dvc("status", cwd=root, check=False)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 4.0 and holder.wait(10) == 0  # past DVC's own 3 s of retries
