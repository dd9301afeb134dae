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
