"""selfheal installed beside a project the two documented ways, with the project's venv activated: as a separate
tool (`uv tool install`), and into the project's own venv. Either way the project's stages run on the project's
interpreter: here its train stage imports a module only the project's venv has."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from selfheal.ops.sandbox import SOURCE, run
from tests import foreign_project as foreign

pytestmark = pytest.mark.slow

UV = str(Path(sys.executable).parent / "uv")
LOCK = str(SOURCE / "requirements.lock")


def _uv(*args: str, **env: str) -> None:
    """uv with this checkout's pins; the packages come from uv's cache (filled by `make venv`) or the registry."""
    proc = subprocess.run([UV, *args, "--quiet", "-c", LOCK, str(SOURCE)], capture_output=True, text=True,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr


def _new_rows(repo: Path, seed: int) -> None:
    """New training data arrives: heal makes a candidate from it with `dvc repro`."""
    extra = repo / "extra.tsv"
    foreign.write_data(extra, 60, seed=seed)
    data = repo / "data/data.tsv"
    data.write_text(data.read_text() + "".join(extra.read_text().splitlines(keepends=True)[1:]))
    extra.unlink()


def test_installed_as_a_tool_or_into_the_project_venv_the_stages_run_on_the_projects_python(
        example: Path, copy_of: Callable[[Path], Path], tmp_path: Path) -> None:
    repo = copy_of(example)
    # the project's venv: selfheal installed into it, and a module of the project's own beside it
    venv = tmp_path / "project-venv"
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    _uv("pip", "install", "--python", str(venv / "bin/python"))
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "project_only.py").write_text("HELLO = 'from the project venv'\n")
    train = repo / "src/train.py"
    train.write_text("import project_only  # only the project's venv has it\n" + train.read_text())
    run(["dvc", "commit", "-q", "-f", "train"], repo)  # the edit is no candidate of its own; new data makes one
    run(["git", "commit", "-qam", "train imports a module of the project's venv"], repo)
    # selfheal as a separate tool, in its own venv, which lacks that module
    tools, bin_dir = tmp_path / "tools", tmp_path / "tool-bin"
    _uv("tool", "install", UV_TOOL_DIR=str(tools), UV_TOOL_BIN_DIR=str(bin_dir))
    assert subprocess.run([str(bin_dir / "selfheal"), "--help"], capture_output=True).returncode == 0
    tool_python = next(tools.glob("selfheal/bin/python"))
    assert subprocess.run([str(tool_python), "-c", "import project_only"], capture_output=True).returncode != 0
    # a user's shell writes bytecode (these fresh venvs have none yet): without it every stage's process would
    # compile pandas and scikit-learn again
    activated = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
                 "PYTHONDONTWRITEBYTECODE": ""}

    run([str(bin_dir / "selfheal"), "init"], repo, extra_env=activated)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["gate"]["max_relative_change"] = 0.5  # new data, not a better model: the gate only has to let it in
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for selfheal, seed in ((bin_dir / "selfheal", 11), (venv / "bin/selfheal", 12)):
        _new_rows(repo, seed)
        healed = run([str(selfheal), "heal"], repo, extra_env=activated, check=False)
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert "data changed since dvc.lock" in healed.stdout and "FAILED" not in healed.stdout, healed.stdout
        assert run(["dvc", "status", "-q"], repo, extra_env=activated, check=False).returncode == 0
    versions = run([str(venv / "bin/selfheal"), "versions"], repo, extra_env=activated).stdout
    assert "v1.0.2" in versions, versions  # two candidates built on the project's python, both promoted
