"""The README's DVC commands, as written: the bash blocks that run `dvc`, and a way to run one in a sandbox."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from selfheal.ops import sandbox

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]


def dvc_blocks(readme: Path = ROOT / "README.md") -> list[str]:
    """Every ```bash block of the README with a line that runs dvc."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if re.search(r"^(\S*/)?dvc ", b, re.M)]


def block_with(command: str) -> str:
    (block,) = [b for b in dvc_blocks() if command in b]
    return block


def run_block(block: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a README block in `cwd` as a user's shell would after `make run`: .venv exists, but it is not on PATH
    (only what the block itself activates)."""
    if not (cwd / ".venv").exists():
        (cwd / ".venv").symlink_to(VENV)
    env = {**sandbox.env(), **extra_env}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != VENV / "bin")
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"README block failed ({proc.returncode}):\n{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc
