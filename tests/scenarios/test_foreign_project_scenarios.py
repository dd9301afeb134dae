"""selfheal on a DVC project it did not write: init, then heal / rollback / promote / versions through selfheal.yaml.

Every outcome is checked independently of selfheal's own records: bytes of model.pkl and every file of eval/
against the production version's, GTO's own CLI for the registry, git for what changed in the repository.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from selfheal.ops import sandbox
from tests import foreign_project as foreign
from tests.foreign_support import snapshot

pytestmark = pytest.mark.slow  # each test reproduces a candidate with DVC


def selfheal(*args: str, cwd: Path, check: bool = True):
    return sandbox.run(["selfheal", *args], cwd, check)


def tree(repo: Path) -> set[str]:
    """Every file of the project outside .git/.dvc and selfheal's records."""
    skip = (".git/", ".dvc/", ".selfheal/")
    return {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()
            and not str(p.relative_to(repo)).startswith(skip) and "__pycache__" not in p.parts}


def bad_candidate(repo: Path) -> None:
    """Three features: the forest barely beats chance, so avg_prec.test drops far beyond 5%."""
    foreign.set_params(repo, "featurize", max_features=3)
    sandbox.run(["dvc", "repro", "-q"], repo)


def gto(*args: str, cwd: Path) -> str:
    return sandbox.run(["gto", *args], cwd).stdout


def test_init_writes_a_config_that_guards_the_project_unchanged(example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    out = selfheal("init", cwd=repo).stdout
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"] == {"artifact": "text-classification", "outs": ["model.pkl"], "stages": ["train", "evaluate"]}
    assert config["gate"]["metrics"] == "eval/metrics.json" and config["gate"]["key"] == "avg_prec.test"
    assert config["gate"]["direction"] == "max" and config["records"] == ".selfheal"
    assert "found GTO versions: v1.0.0; stages: prod" in out and "still to choose: gate.bound" in out
    production = snapshot(repo, "model.pkl", "eval")
    healed = selfheal("heal", cwd=repo)
    assert "heal: healthy" in healed.stdout
    (repo / "model.pkl").write_bytes(b"overwritten by hand")  # production's own file damaged: restored
    assert "restore" in selfheal("heal", cwd=repo).stdout
    assert snapshot(repo, "model.pkl", "eval") == production
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout
    versions = selfheal("versions", cwd=repo).stdout
    assert "text-classification@v1.0.0" in versions and "<- prod" in versions
    again = selfheal("init", cwd=repo, check=False)
    assert again.returncode == 1 and "--force" in again.stderr


def test_a_failing_candidate_is_rolled_back_byte_identical_and_heal_writes_only_its_records(
        example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    production = snapshot(repo, "model.pkl", "eval")
    selfheal("init", cwd=repo)
    bad_candidate(repo)
    assert snapshot(repo, "model.pkl", "eval") != production
    (repo / "eval" / "stray.txt").write_text("not part of any version\n")
    before = tree(repo)

    plan = selfheal("heal", "--plan", cwd=repo).stdout
    assert "rollback" in plan and "avg_prec.test" in plan
    selfheal("heal", cwd=repo)

    assert snapshot(repo, "model.pkl", "eval") == production  # stray.txt removed, every file md5-equal
    assert tree(repo) == before - {"eval/stray.txt"}
    changed = sandbox.run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout.split("\n")
    assert {line[3:] for line in changed if line} == {"dvc.lock", "params.yaml", "selfheal.yaml"}
    assert sandbox.run(["git", "tag", "--list"], repo).stdout.split() == [
        "text-classification#prod#1", "text-classification@v1.0.0"]
    log = json.loads((repo / ".selfheal/rollback_log.json").read_text())
    assert log[-1]["version_restored"] == "v1.0.0" and log[-1]["restored"] == ["eval", "model.pkl"]
    status = json.loads(selfheal("status", "--json", cwd=repo).stdout)
    assert status["issues_handled"]["rollback"] == {"fixed": 1, "total": 1}
    assert (repo / ".selfheal/self_healing.json").exists() and not (repo / "metrics").exists()
    assert "changed outs" not in sandbox.run(["dvc", "status", "train", "evaluate"], repo).stdout


def test_promotion_and_rollbacks_are_gto_assignments(example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    v1 = snapshot(repo, "model.pkl", "eval")
    selfheal("init", cwd=repo)
    foreign.set_params(repo, "train", n_est=40)  # a candidate as good as production: promoted
    sandbox.run(["dvc", "repro", "-q"], repo)
    v2 = snapshot(repo, "model.pkl", "eval")
    out = selfheal("heal", cwd=repo).stdout
    assert "Promoted text-classification@v1.0.1 to prod" in out
    assert "v1.0.1" in gto("show", "text-classification#prod", "--plain", cwd=repo)

    bad_candidate(repo)
    selfheal("heal", cwd=repo)
    assert snapshot(repo, "model.pkl", "eval") == v2

    shutil.rmtree(repo / ".dvc" / "cache")  # the old version comes back from the DVC remote
    selfheal("rollback", "--version", "v1.0.0", cwd=repo)
    assert snapshot(repo, "model.pkl", "eval") == v1
    history = gto("history", "text-classification", "--plain", cwd=repo)
    assignments = [line for line in history.splitlines() if "assignment" in line]
    assert len(assignments) == 3 and "text-classification#prod#3" in history
    assert "v1.0.0" in assignments[0] and "v1.0.1" in next(a for a in assignments if "#prod#2" in a)


def test_a_directory_model_with_an_error_to_minimise(example_min_dir: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example_min_dir)
    production = snapshot(repo, "model", "eval")
    selfheal("init", cwd=repo)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"]["outs"] == ["model"] and config["gate"]["key"] == "error.test"
    assert config["gate"]["direction"] == "min"
    bad_candidate(repo)
    (repo / "model" / "extra.pkl").write_bytes(b"left over")
    plan = selfheal("heal", "--plan", cwd=repo).stdout
    assert "rollback" in plan and "error.test" in plan and "worse than production" in plan
    selfheal("heal", cwd=repo)
    assert snapshot(repo, "model", "eval") == production
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout


class _Reloads(BaseHTTPRequestHandler):
    """A prediction service's reload endpoint: counts the POSTs it gets."""

    posts: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        _Reloads.posts.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_retrain_makes_a_candidate_gates_it_reloads_the_service_and_keeps_its_cooldown(
        example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    selfheal("init", cwd=repo)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Reloads)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["retrain"] = {"command": "python -c \"import yaml; p = yaml.safe_load(open('params.yaml')); "
                         "p['train']['n_est'] = 40; yaml.safe_dump(p, open('params.yaml', 'w'))\" && dvc repro -q",
                         "cooldown_hours": 24}
    config["service"] = {"reload": f"http://127.0.0.1:{server.server_port}/reload"}
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config))
    try:
        assert "Retraining completed successfully" in selfheal("retrain", cwd=repo).stdout
    finally:
        server.shutdown()
    assert "v1.0.1" in gto("show", "text-classification#prod", "--plain", cwd=repo)
    assert _Reloads.posts == ["/reload"]
    assert "cooldown" in selfheal("retrain", cwd=repo).stdout


def test_promote_runs_the_gate_and_force_records_who_overrode_it(example: Path, copy_of: Callable[[Path], Path]) -> None:
    """`selfheal promote` refuses a candidate far worse than production, as heal would; `--force` promotes it
    and the heal log names what was overridden and by whom."""
    repo = copy_of(example)
    selfheal("init", cwd=repo)
    bad_candidate(repo)
    refused = selfheal("promote", cwd=repo, check=False)
    assert refused.returncode == 2 and "failed the gate" in refused.stderr and "worse than production" in refused.stderr
    assert "v1.0.0" in gto("show", "text-classification#prod", "--plain", cwd=repo)
    forced = selfheal("promote", "--force", cwd=repo)
    assert "--force: promoting past the gate" in forced.stdout
    assert "v1.0.1" in gto("show", "text-classification#prod", "--plain", cwd=repo)
    (entry,) = json.loads((repo / ".selfheal/heal_log.json").read_text())
    assert entry["action"] == "promote" and "--force" in entry["reason"]
    assert "worse than production" in entry["forced_past_gate"][0] and entry["forced_by"].startswith("selfheal sandbox@")
