"""`selfheal heal` for real: plan without change, the gate, escalation with an alert, concurrency, SIGKILL."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from selfheal.core import audit, workspace
from selfheal.healing import guard
from selfheal.versions import registry, vcs
from tests.heal_support import env, model_md5, production_of, read, run, selfheal

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SKIP = (".dvc/tmp", ".selfheal", ".git/index")


def snapshot(repo: Path) -> dict[str, str]:
    """md5 of every file in the project (what "changes nothing" is checked against)."""
    return {str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(repo.rglob("*"))
            if p.is_file() and not str(p.relative_to(repo)).startswith(SKIP)}


def all_logs_valid(repo: Path) -> None:
    for path in [repo / p for p in (workspace.DATA_FIX_LOG, workspace.ROLLBACK_LOG, workspace.RETRAINING_LOG,
                                    workspace.RECOVERY_LOG, workspace.ALERTS_LOG, workspace.HEAL_LOG)]:
        if path.exists():
            json.loads(path.read_text())


def test_heal_on_a_healthy_pipeline_changes_nothing(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    before = snapshot(repo)
    proc = selfheal("heal", cwd=repo)
    assert "heal: healthy" in proc.stdout and snapshot(repo) == before


def test_plan_prints_decisions_and_changes_nothing(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    before, state = snapshot(repo), sorted((repo / ".selfheal").rglob("*"))
    out = selfheal("heal", "--plan", cwd=repo).stdout
    assert "model   rollback" in out and "restore production v0.0.2" in out
    assert "data    ok" in out and "service skip" in out
    assert snapshot(repo) == before and sorted((repo / ".selfheal").rglob("*")) == state


def test_heal_rolls_a_failed_candidate_back(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    proc = selfheal("heal", cwd=repo)
    v2 = registry.find("v0.0.2", registry.versions())
    assert model_md5(repo) == v2.md5 and read(repo, "metrics/validation.json")["passed"] is True
    assert "Successfully rolled back" in proc.stdout
    entry = audit.entries(workspace.HEAL_LOG)[-1]
    assert entry["action"] == "heal" and entry["success"] and [d["action"] for d in entry["decisions"]] == [
        "ok", "skip", "rollback", "ok", "ok", "skip"]  # monitor: skip the failed candidate, then v0.0.2 is measured
    assert read(repo, "metrics/self_healing.json")["rollback_frequency"]["auto_last_7d"] == 1
    again = selfheal("heal", cwd=repo)  # the params that made the failed candidate are not built again
    assert "failed the gate and was rolled back" in again.stdout and "heal: healthy" not in again.stdout


def test_heal_restores_a_deleted_model_from_production(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    production = production_of(repo)
    (repo / "models/model.joblib").unlink()
    assert "model   restore " in selfheal("heal", "--plan", cwd=repo).stdout
    out = selfheal("heal", cwd=repo).stdout
    assert "models/model.joblib is missing: restore production v0.0.1" in out
    assert model_md5(repo) == production["md5"] and production_of(repo) == production
    (entry,) = audit.entries(workspace.ROLLBACK_LOG)
    assert (entry["action"], entry["success"], entry["version_restored"], entry["failed_md5"]) == (
        "auto_rollback", True, "v0.0.1", None)
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout


class Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def webhook() -> str:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    Hook.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def _recent(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).replace(microsecond=0).isoformat()


def test_repeated_rollbacks_escalate_with_an_alert(bad_candidate: Path, workdir, webhook: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    repo = workdir(bad_candidate)
    monkeypatch.setenv("SELFHEAL_ALERT_WEBHOOK", webhook)
    for h in (3, 2):
        audit.update(workspace.ROLLBACK_LOG, lambda e, h=h: [*e, {"timestamp": _recent(h), "action": "auto_rollback",
                                                                "reason": "earlier", "success": True}], default=[])
    proc = selfheal("heal", cwd=repo, check=False)
    assert proc.returncode == 1
    assert model_md5(repo) == registry.find("v0.0.2", registry.versions()).md5  # the rollback itself still happens
    (alert,) = audit.entries(workspace.ALERTS_LOG)
    assert alert["kind"] == "heal_escalation_model" and "2 automatic rollbacks in 24 h" in alert["reason"]
    assert alert["success"] is True and Hook.received and Hook.received[0]["kind"] == "heal_escalation_model"


def test_unresolved_data_issue_is_not_retried_forever(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    for _ in range(4):
        audit.append(workspace.DATA_FIX_LOG, "auto_fix", "data changed", True)
    with open(repo / "data/raw/housing.csv", "a") as fh:
        fh.write("1,2,3,4,5,6,7,8,9\n")
    lock = (repo / "dvc.lock").read_bytes()
    proc = selfheal("heal", cwd=repo, check=False)
    assert proc.returncode == 1 and "4 times in 24 h" in proc.stderr + proc.stdout
    assert (repo / "dvc.lock").read_bytes() == lock  # no pipeline rerun
    assert audit.entries(workspace.ALERTS_LOG)[0]["kind"] == "heal_escalation_data_quality"


def test_two_heals_at_once(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    with guard.exclusive("test holds the lock"):
        busy = selfheal("heal", cwd=repo, check=False)
    assert busy.returncode == 3 and "another selfheal action is running (test holds the lock by pid" in busy.stderr
    assert (repo / "metrics/validation.json").exists() and not audit.entries(workspace.ROLLBACK_LOG)
    procs = [subprocess.Popen(["selfheal", "heal", "--wait", "120"], cwd=repo, env=env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(audit.entries(workspace.ROLLBACK_LOG)) == 1  # one rolled back, the other found nothing to do
    assert model_md5(repo) == registry.find("v0.0.2", registry.versions()).md5


KILLER = """
import os, signal, sys
n, seen = int(sys.argv[1]), [0]
def hook(event, args):
    if event in ("os.rename", "subprocess.Popen"):  # every file swap and every git/dvc call
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        if n == 0:
            print("SIDE-EFFECT", seen[0], event, file=sys.stderr, flush=True)
sys.addaudithook(hook)
sys.argv = ["selfheal", "heal"]
from selfheal.cli import main
main()
"""


def _heal_killed_at(source: Path, dest: Path, n: int) -> subprocess.CompletedProcess:
    """Copy `source` to `dest` and run a heal there that SIGKILLs itself right before its n-th side effect."""
    import shutil

    shutil.copytree(source, dest, symlinks=True)
    return subprocess.run([sys.executable, "-c", KILLER, str(n)], cwd=dest, capture_output=True, text=True,
                          env={**env(), "PYTHONPATH": str(ROOT)})


def _kill_points(source: Path, tmp_path: Path, count: int) -> list[int]:
    """`count` kill points spread over every side effect of an uninterrupted heal of `source`."""
    total = _heal_killed_at(source, tmp_path / "count", 0).stderr.count("SIDE-EFFECT")
    assert total > count, total
    return sorted({1 + round(i * (total - 1) / (count - 1)) for i in range(count)})


def test_heal_killed_during_a_rollback_leaves_a_good_model_and_valid_logs(bad_candidate: Path,
                                                                          tmp_path: Path) -> None:
    candidate = model_md5(bad_candidate)
    production = registry.find("v0.0.2", registry.versions(bad_candidate)).md5
    for n in _kill_points(bad_candidate, tmp_path, 10):
        repo = tmp_path / f"kill{n}"
        assert _heal_killed_at(bad_candidate, repo, n).returncode == -9
        all_logs_valid(repo)
        assert model_md5(repo) in (candidate, production), n  # a whole model, never a torn file
        assert production_of(repo)["md5"] == production, n
        selfheal("heal", cwd=repo)  # the next heal finishes the job
        assert model_md5(repo) == production and read(repo, "metrics/validation.json")["passed"] is True, n
        assert production_of(repo)["version"] == "v0.0.2"
        all_logs_valid(repo)


def test_heal_killed_during_a_promotion_is_finished_by_the_next_heal(built_project: Path, tmp_path: Path) -> None:
    candidate = model_md5(built_project)
    for n in _kill_points(built_project, tmp_path, 6):
        repo = tmp_path / f"kill{n}"
        assert _heal_killed_at(built_project, repo, n).returncode == -9
        all_logs_valid(repo)
        assert model_md5(repo) == candidate, n
        assert production_of(repo).get("md5") in (None, candidate), n
        selfheal("heal", cwd=repo)
        versions = registry.versions(repo)
        assert [(v.name, v.md5) for v in versions] == [("v0.0.1", candidate)], n
        assert production_of(repo)["version"] == "v0.0.1"
        assert registry.assignments(repo)[-1].version == "v0.0.1"
        assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}, n
        committed = ["dvc.lock", "params.yaml", "metrics/validation.json", "metrics/records/validation.json"]
        assert vcs.git("status", "--porcelain", "--", *committed, cwd=repo) == "", n
        all_logs_valid(repo)


def test_heal_recovers_a_crashed_service(promoted: Path, workdir) -> None:
    import os
    import signal

    from selfheal.ops.sandbox import set_params
    from tests.servicekit import free_port, service_pid, start_service, stop_all, url_of, wait_status

    repo = workdir(promoted)
    port = free_port()
    set_params(repo, service_recovery={"service_url": url_of(port), "backoff_seconds": 0.1,
                                       "warm_standby": False})
    try:
        start_service(repo, port)
        wait_status(url_of(port))
        os.kill(service_pid(repo), signal.SIGKILL)
        assert "service recover" in selfheal("heal", "--plan", cwd=repo).stdout
        proc = selfheal("heal", cwd=repo)
        assert "heal: service: done" in proc.stdout
        assert wait_status(url_of(port), timeout=5)["model_md5"] == production_of(repo)["md5"]
        assert audit.entries(workspace.RECOVERY_LOG)[-1]["success"] is True
    finally:
        stop_all(repo)


def test_seed_config_file_overrides_and_is_validated(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    config = repo / "config/self_healing_config.json"
    seed = json.loads(config.read_text())
    seed["model_validation"]["auto_rollback_enabled"] = False
    config.write_text(json.dumps(seed))
    out = selfheal("heal", "--plan", "--config", str(config), cwd=repo).stdout
    assert "model   report" in out and "auto_rollback_enabled is false" in out
    seed["drift_detection"]["retraining_cooldown_hours"] = "soon"
    seed["model_validation"]["typo_threshold"] = 0.5
    config.write_text(json.dumps(seed))
    bad = selfheal("heal", "--config", str(config), cwd=repo, check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "drift_detection.retraining_cooldown_hours" in bad.stderr and "typo_threshold: unknown key" in bad.stderr
