"""Helpers for the service and recovery tests: small real models, a project directory, real service processes.

Every process a test starts runs with the test's project directory as its cwd; `stop_all` kills every process
whose cwd is that directory (services restarted by recovery and warm standbys included), so nothing outlives
its test.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests
import yaml

from selfheal.core import workspace
from selfheal.ops import sandbox
from selfheal.service import procs

ROOT = Path(__file__).resolve().parents[1]
RECORD = {"MedInc": 3.2, "HouseAge": 20.0, "AveRooms": 5.0, "AveBedrms": 1.0, "Population": 1000.0,
          "AveOccup": 3.0, "Latitude": 34.0, "Longitude": -118.0, "ocean": "south"}


def workers_of(master: int) -> list[int]:
    """The service master's live worker processes (one exiting while asked is not one)."""
    return [c.pid for c in psutil.Process(master).children() if procs.alive(c.pid)]


def train_model(dest: Path, max_iter: int, rows: int = 500, seed: int = 0) -> str:
    """A real HistGradientBoosting pipeline (selfheal.pipeline.training) on synthetic housing rows plus one categorical
    column; written as dest/model.joblib + dest/model.json. Returns its md5."""
    from selfheal.core.config import HGBParams, Params, TrainParams
    from selfheal.pipeline.artifact import save_model
    from selfheal.pipeline.synth import make_housing
    from selfheal.pipeline.training import train

    df = make_housing(rows, seed)
    df.insert(0, "ocean", (df["Latitude"] > 36).map({True: "north", False: "south"}))
    params = Params(train=TrainParams(hist_gradient_boosting=HGBParams(max_iter=max_iter)))
    pipeline, meta, _, _ = train(df, params)
    return save_model(pipeline, meta, dest / "model.joblib")


def two_models(root: Path) -> dict[str, Path]:
    """Two real model versions, "a" and "b" (different iterations: different bytes and predictions)."""
    for name, iters in (("a", 20), ("b", 60)):
        train_model(root / name, iters)
    return {"a": root / "a", "b": root / "b"}


def make_project(path: Path, models: Path, service_recovery: dict | None = None) -> Path:
    """A project directory: a git repo with params.yaml, a selfheal.yaml of our layout (with service_recovery
    overrides) and models/ copied from `models`, promoted to production in the registry (the service serves
    only production)."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "params.yaml", path / "params.yaml")
    sandbox.set_params(path, service_recovery=service_recovery or {})
    shutil.copytree(models, path / "models", dirs_exist_ok=True)
    record_production(path, models)
    return path


def record_production(project: Path, source: Path) -> None:
    """Promote the model in `source` as `selfheal promote` records it: its bytes in the DVC cache, a commit whose
    dvc.lock pins them, a version tag and a production assignment (the registry's own functions)."""
    from selfheal.versions import registry, vcs

    if not (project / ".git").is_dir():
        sandbox.run(["git", "init", "-q", "-b", "main"], project)
    outs = []
    for name in ("model.joblib", "model.json"):
        data = (source / name).read_bytes()
        md5 = hashlib.md5(data).hexdigest()
        cached = vcs.cache_path(md5, project)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(data)
        outs.append({"path": f"models/{name}", "md5": md5, "size": len(data), "hash": "md5"})
    lock = {"schema": "2.0", "stages": {"train": {"cmd": "python -m stages.train", "outs": outs}}}
    (project / workspace.DVC_LOCK).write_text(yaml.safe_dump(lock, sort_keys=False))
    sandbox.run(["git", "add", str(workspace.DVC_LOCK)], project)
    sandbox.run(["git", "commit", "-q", "--allow-empty", "-m", f"model {outs[0]['md5'][:12]}"], project)
    known = registry.versions(project)
    md5 = outs[0]["md5"]
    version = next((v for v in known if v.md5 == md5), None) or registry.register(
        registry.next_version(known), vcs.head(project) or "", {"md5": md5}, project)
    assert version is not None
    registry.assign_production(version, "test", project)


def use_model(project: Path, source: Path) -> None:
    """Make a trained model production and put it in the project's workspace, as a rollback does."""
    record_production(project, source)
    for name in ("model.joblib", "model.json"):
        shutil.copyfile(source / name, project / "models" / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def start_service(project: Path, port: int, env: dict | None = None) -> subprocess.Popen:
    """Start the service as recovery would (detached, logging to .selfheal/service.log)."""
    import os

    argv = procs.service_argv("127.0.0.1", port)
    if env:
        return subprocess.Popen(argv, cwd=project, env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return procs.spawn(argv, project)


def wait_status(url: str, status: int = 200, timeout: float = 90.0) -> dict:
    """Poll /health until it answers `status`; returns the body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resp = requests.get(url + "/health", timeout=1)
            if resp.status_code == status:
                return resp.json()
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url}/health did not answer {status} within {timeout} s")


def service_pid(project: Path) -> int:
    info = procs.read_pid_file(project / workspace.PID_FILE)
    assert info is not None, "no pid file"
    return info["pid"]


def run_cli(project: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the `selfheal` command as a user would, in `project`."""
    selfheal = Path(sys.executable).parent / "selfheal"
    return subprocess.run([str(selfheal), *args], cwd=project, capture_output=True, text=True, timeout=timeout)


def stop_all(project: Path) -> None:
    """Kill every process running in `project` (the services and standbys a test caused)."""
    sandbox.kill_all_in(project)
