"""heal on a configured project beyond the gate: data fixes, drift and retrain, service recovery (selfheal.yaml).

The outcomes are checked independently of selfheal's own records: the CSV read back with pandas (no missing
values, no duplicates), the backup's bytes, the rows the retrain command appended, GTO's tags, a real HTTP
service process answering its health URL, and the process table.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from selfheal.core import atomic
from selfheal.ops import sandbox
from selfheal.service import procs
from tests import foreign_project as foreign

DATA = "data/data.csv"


def selfheal(*args: str, cwd: Path, check: bool = True):
    return sandbox.run(["selfheal", *args], cwd, check)


def configure(repo: Path, **sections: object) -> None:
    """`selfheal init`, then the given sections merged into selfheal.yaml."""
    selfheal("init", "--force", cwd=repo)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def add_faulty_batch(repo: Path) -> int:
    """Append 60 new questions with faults: a missing text, a missing label, a number written as text, an outlier
    and three exact copies of earlier rows. Returns the row count of the file."""
    batch = repo / "batch.csv"
    foreign.write_csv(batch, 60, seed=99)
    rows = list(csv.reader(batch.open(newline="")))[1:]
    batch.unlink()
    rows[0][2] = ""  # missing text
    rows[1][0] = ""  # missing label: the row cannot be used
    rows[2][1] = " 7 "  # a number written as text
    rows[3][1] = "9000"  # an outlier
    rows += rows[10:13]  # duplicates
    with (repo / DATA).open("a", newline="") as out:
        csv.writer(out).writerows(rows)
    return len(pd.read_csv(repo / DATA))


def test_a_data_fault_in_a_csv_dep_is_fixed_and_the_candidate_promoted(example_csv: Path,
                                                                        copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example_csv)
    configure(repo, data={"target": "label"}, gate={"max_relative_change": 0.5})
    original = add_faulty_batch(repo)
    faulty = (repo / DATA).read_bytes()

    plan = selfheal("heal", "--plan", cwd=repo).stdout
    assert "fix" in plan and (repo / DATA).read_bytes() == faulty  # the plan changes nothing
    out = selfheal("heal", cwd=repo).stdout

    fixed = pd.read_csv(repo / DATA)
    assert not fixed.isna().any().any() and not fixed.duplicated().any()
    assert len(fixed) == original - 1 - 3  # the unlabelled row and the three copies are gone
    assert fixed["score"].max() < 9000 and pd.api.types.is_numeric_dtype(fixed["score"])
    backups = list((repo / ".selfheal/backups").rglob("data.csv"))
    assert len(backups) == 1 and backups[0].read_bytes() == faulty  # the original, byte for byte
    tags = sandbox.run(["git", "tag", "--list", f"{foreign.ARTIFACT}*"], repo).stdout.split()
    assert f"{foreign.ARTIFACT}@v1.0.1" in tags and f"{foreign.ARTIFACT}#prod#2" in tags, out
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert next(d["md5"] for d in lock["stages"]["prepare"]["deps"] if d["path"] == DATA) == atomic.md5_file(repo / DATA)
    assert "heal: done" in out
    again = selfheal("heal", cwd=repo).stdout
    assert again.rstrip().endswith("heal: healthy")


def test_bad_data_config_is_one_line_naming_file_or_column(example_csv: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example_csv)
    configure(repo, data={"target": "labels"})
    done = selfheal("heal", cwd=repo, check=False)
    assert done.returncode == 1 and "target column 'labels' not found" in done.stdout
    configure(repo, data={"fix": ["data/missing.csv"]})
    done = selfheal("heal", cwd=repo, check=False)
    assert done.returncode == 1 and "data.fix: data/missing.csv: file not found" in done.stdout


@pytest.mark.parametrize(("section", "expected"), [
    ({"data": {"fix": ["data/data.tsv"]}}, "data.fix: 'data/data.tsv' is neither .csv nor .parquet"),
    ({"data": {"quality": {"cap_outliers": "yes"}}}, "data.quality.cap_outliers: Input should be a valid boolean"),
    ({"drift": {"reference": "a.csv", "current": "b.csv", "drift_threshold": 2}}, "drift.drift_threshold: Input "
     "should be less than or equal to 1"),
    ({"service": {"health": "localhost:8080/health"}}, "service.health: String should match pattern"),
    ({"service": {"start": "python serve.py"}}, "service: Value error, service: set health"),
])
def test_bad_section_values_are_one_line_errors(example_csv: Path, copy_of: Callable[[Path], Path], section: dict,
                                                expected: str) -> None:
    repo = copy_of(example_csv)
    configure(repo, **section)
    done = selfheal("heal", cwd=repo, check=False)
    assert done.returncode == 2 and expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_drift_in_the_current_data_runs_the_retrain_command_then_refuses_within_cooldown(
        example_csv: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example_csv)
    configure(repo, data={"target": "label"}, gate={"max_relative_change": 0.5},
              drift={"reference": DATA, "current": "data/current.csv", "columns": ["score"], "drift_threshold": 0.5},
              # the command only folds the batch in (as `init --interactive` may be told): heal reproduces the rest
              retrain={"command": f"{sys.executable} src/fold.py data/current.csv {DATA}", "cooldown_hours": 24})
    foreign.write_csv(repo / "data/current.csv", 200, seed=5)  # same distribution: no drift
    rows = len(pd.read_csv(repo / DATA))
    quiet = selfheal("heal", cwd=repo).stdout
    assert "drift: ok: No retraining needed" in quiet and len(pd.read_csv(repo / DATA)) == rows

    foreign.write_csv(repo / "data/current.csv", 200, seed=6, score_shift=8)  # votes moved: drift
    out = selfheal("heal", cwd=repo).stdout
    assert "drift: retrain: Data drift detected" in out, out
    assert "retrain.command left" in out and "reproducing the pipeline" in out, out
    assert len(pd.read_csv(repo / DATA)) == rows + 200  # the retrain command folded the batch in, kept: promoted
    tags = sandbox.run(["git", "tag", "--list", f"{foreign.ARTIFACT}*"], repo).stdout.split()
    assert f"{foreign.ARTIFACT}@v1.0.1" in tags  # the gate judged the candidate made from the folded data
    assert sandbox.run(["dvc", "status", "--json"], repo).stdout.strip() == "{}"

    shutil.rmtree(repo / ".selfheal")  # a fresh clone (a CI runner) has no records: the registry remembers
    again = selfheal("heal", cwd=repo).stdout
    assert "in cooldown until" in again and len(pd.read_csv(repo / DATA)) == rows + 200, again
    _set(repo, "retrain", "cooldown_hours", 0)
    again = selfheal("heal", cwd=repo).stdout
    assert "v1.0.1 was already trained on this batch" in again, again
    assert len(pd.read_csv(repo / DATA)) == rows + 200  # not folded in twice
    _set(repo, "retrain", "cooldown_hours", 24)
    assert (repo / ".selfheal/drift.json").is_file()

    foreign.write_csv(repo / "data/current.csv", 200, seed=7, score_shift=-8)  # a new drifted batch, within cooldown
    refused = selfheal("heal", cwd=repo).stdout
    assert "in cooldown until" in refused and len(pd.read_csv(repo / DATA)) == rows + 200


def _set(repo: Path, section: str, key: str, value: object) -> None:
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config[section][key] = value
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture()
def served(example: Path, copy_of: Callable[[Path], Path]) -> Iterator[tuple[Path, str]]:
    """A copy of the example project whose selfheal.yaml names its tiny service (src/serve.py) on a free port;
    every process the start command made is killed afterwards."""
    repo = copy_of(example)
    url = f"http://127.0.0.1:{_free_port()}/health"
    configure(repo, service={"health": url, "start": f"{sys.executable} src/serve.py {{port}}",
                             "startup_timeout_seconds": 15})
    yield repo, url
    for proc in psutil.process_iter(["cmdline"]):
        if f"{repo}/src/serve.py" in " ".join(proc.info["cmdline"] or []) or (
                "src/serve.py" in (proc.info["cmdline"] or []) and _cwd(proc) == repo):
            proc.kill()


def _cwd(proc: psutil.Process) -> Path | None:
    try:
        return Path(proc.cwd())
    except psutil.Error:
        return None


def _pid(repo: Path) -> int:
    return int(atomic.read_json(repo / ".selfheal/service.pid")["pid"])


def test_a_killed_foreign_service_is_restarted_by_recover(served: tuple[Path, str]) -> None:
    repo, url = served
    started = selfheal("recover", cwd=repo)  # down and never started: the start command starts it
    assert _healthy(url), started.stdout
    first = _pid(repo)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _healthy(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _healthy(url)

    out = selfheal("recover", cwd=repo).stdout
    assert _healthy(url), out
    second = _pid(repo)
    assert second != first and psutil.Process(second).cmdline()[-2:] == ["src/serve.py", url.split(":")[-1].split("/")[0]]
    log = atomic.read_json(repo / ".selfheal/recovery_log.json")
    assert log[-1]["success"] and log[-1]["state"] == "down"
    assert not (repo / "monitoring").exists()  # nothing written into the project's own folders


def test_heal_restarts_a_hung_foreign_service_it_started(served: tuple[Path, str]) -> None:
    repo, url = served
    selfheal("recover", cwd=repo)
    first = _pid(repo)
    os.kill(first, signal.SIGSTOP)  # accepts connections, never answers
    out = selfheal("heal", cwd=repo).stdout
    assert "service: recover:" in out and _healthy(url), out
    assert _pid(repo) != first and not procs.alive(first)  # the stopped process was ended, not left behind


def test_recover_watch_restarts_a_killed_foreign_service(served: tuple[Path, str]) -> None:
    repo, url = served
    selfheal("recover", cwd=repo)
    first = _pid(repo)
    watcher = subprocess.Popen(["selfheal", "recover", "--watch", "--interval", "0.2"], cwd=repo, env=sandbox.env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (_pid(repo) != first and _healthy(url)):
            time.sleep(0.1)
        assert _pid(repo) != first and _healthy(url)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, _ = watcher.communicate(timeout=10)
    assert watcher.returncode == 0 and "Service recovered (process)" in out, out


def test_init_proposes_the_data_section_and_hints_at_drift_and_service(example_csv: Path,
                                                                        copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example_csv)
    out = selfheal("init", cwd=repo).stdout
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["data"]["fix"] == [DATA] and "drift" not in config and "service" not in config
    assert "set data.target" in out and "drift: and service: not set" in out
    assert "# drift:" in (repo / "selfheal.yaml").read_text()
    # what init cannot find, a person names when asked: no hand edit of the file
    answers = ["", "", "0.5", "", "label", "data/current.csv", "", "python src/fold.py data/current.csv data/data.csv",
               "python src/serve.py {port}", "http://127.0.0.1:8123/health", ""]
    asked = sandbox.run(["selfheal", "init", "--interactive", "--force"], repo, input="\n".join(answers) + "\n")
    assert "drift: and service: not set" not in asked.stdout
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["gate"]["bound"] == 0.5 and config["data"] == {"fix": [DATA], "target": "label"}
    assert config["drift"] == {"reference": DATA, "current": "data/current.csv", "drift_threshold": 0.5,
                               "auto_retrain_enabled": True}
    assert config["retrain"]["command"] == "python src/fold.py data/current.csv data/data.csv"
    assert (config["service"]["start"], config["service"]["health"]) == ("python src/serve.py {port}",
                                                                         "http://127.0.0.1:8123/health")


def test_recover_without_a_service_section_says_what_to_add(example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    configure(repo)
    done = selfheal("recover", cwd=repo, check=False)
    assert done.returncode == 2 or done.returncode == 1
    assert "service.health is not set" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_candidate_that_fails_to_build_restores_production_and_is_retried_only_on_change(
        example: Path, copy_of: Callable[[Path], Path]) -> None:
    """New data arrives while a param breaks `train`: production's outputs are put back, verified; the failure
    is recorded with its inputs and heal is not "healthy" (the later stages are stale); nothing is rebuilt from
    the same inputs; once the param is fixed the candidate is built and judged."""
    from tests.foreign_support import snapshot

    repo = copy_of(example)
    configure(repo)
    production = snapshot(repo, "model.pkl", "eval")
    with (repo / "data/data.tsv").open("a") as out:  # one more row: new data
        out.write((repo / "data/data.tsv").read_text().splitlines()[-1] + "\n")
    foreign.set_params(repo, "train", n_est=0)  # the forest refuses 0 trees: train exits non-zero
    first = selfheal("heal", cwd=repo, check=False)
    assert first.returncode == 1 and "heal: data: FAILED" in first.stdout
    assert snapshot(repo, "model.pkl", "eval") == production  # production's outputs, byte for byte
    failed = yaml.safe_load((repo / ".selfheal/failed_candidate.json").read_text())
    assert failed["attempts"] == 1 and "params.yaml" in failed["inputs"] and "data/data.tsv" in failed["inputs"]
    again = selfheal("heal", cwd=repo, check=False)
    assert again.returncode == 1 and "heal: healthy" not in again.stdout
    assert "failed to build 1 time(s)" in again.stdout
    log = yaml.safe_load((repo / ".selfheal/heal_log.json").read_text())
    assert [e["success"] for e in log if e["action"] == "repro"] == [False]  # not built again from the same inputs
    foreign.set_params(repo, "train", n_est=30)
    fixed = selfheal("heal", cwd=repo, check=False)
    assert "inputs changed since the candidate that failed to build: params.yaml" in fixed.stdout
    assert not (repo / ".selfheal/failed_candidate.json").exists()
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout


def test_a_params_edit_makes_a_candidate_and_is_never_healthy_until_judged(
        example: Path, copy_of: Callable[[Path], Path]) -> None:
    """`dvc status` would show train changed params: heal builds the candidate and judges it, never "healthy"
    over a stale stage."""
    repo = copy_of(example)
    configure(repo)
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout
    foreign.set_params(repo, "train", n_est=40)
    plan = selfheal("heal", "--plan", cwd=repo).stdout
    assert "repro" in plan and "params changed since dvc.lock: params.yaml:train.n_est" in plan
    healed = selfheal("heal", cwd=repo).stdout
    assert "heal: healthy" not in healed and ("Promoted" in healed or "Rolling back" in healed)
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout
    assert sandbox.run(["dvc", "status", "-q"], repo, check=False).returncode == 0


def test_params_that_made_a_rejected_candidate_are_not_built_again(example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    configure(repo)
    foreign.set_params(repo, "featurize", max_features=3)  # featurize's params: the bad candidate's features
    foreign.set_params(repo, "train", n_est=1)  # and one tree: far worse than production
    first = selfheal("heal", cwd=repo, check=False).stdout
    assert "params changed since dvc.lock" in first and "Rolling back to v1.0.0" in first
    again = selfheal("heal", cwd=repo, check=False)  # production serves: reported (exit 0), never "healthy"
    assert again.returncode == 0 and "failed the gate and was rolled back" in again.stdout
    assert "heal: healthy" not in again.stdout
    log = yaml.safe_load((repo / ".selfheal/heal_log.json").read_text())
    assert len([e for e in log if e["action"] == "repro"]) == 1  # not built again from the same params
    foreign.set_params(repo, "train", n_est=30)
    foreign.set_params(repo, "featurize", max_features=200)  # back to what production was built from
    rebuilt = selfheal("heal", cwd=repo).stdout  # featurize is rebuilt; the model is production's again
    assert "text-classification@v1.0.0 is prod" in rebuilt and "Rolling back" not in rebuilt
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout


def test_a_hung_process_on_the_port_that_selfheal_did_not_start_is_named_and_left_alone(
        served: tuple[Path, str]) -> None:
    """Something else listens on the service's port and hangs: one line names it (pid, command), no restart is
    attempted ("address already in use" three times), and it is not signalled."""
    repo, url = served
    port = int(url.split(":")[-1].split("/")[0])
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while procs.port_holder(port) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(other.pid, signal.SIGSTOP)  # accepts connections, never answers
        out = selfheal("recover", cwd=repo, check=False)
        assert out.returncode == 1
        assert f"port {port} is held by pid {other.pid} (" in out.stdout and "http.server" in out.stdout
        assert "a process selfheal did not start: left alone" in out.stdout
        log = atomic.read_json(repo / ".selfheal/recovery_log.json")
        assert len(log) == 1 and not log[0]["success"]  # one attempt, not three futile restarts
        assert procs.alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_a_persons_rollback_sticks_on_a_guarded_project(example: Path, copy_of: Callable[[Path], Path]) -> None:
    """A new version from new data, then a person's `selfheal rollback --version v1.0.0`: `dvc repro` rebuilds the
    replaced model's bytes, heal reports instead of promoting them again, `selfheal promote` brings them back."""
    repo = copy_of(example)
    configure(repo, gate={"max_relative_change": 0.5})  # new data, not a better model: let it in
    data = repo / "data/data.tsv"
    extra = repo / "extra.tsv"
    foreign.write_data(extra, 80, seed=21)
    data.write_text(data.read_text() + "".join(extra.read_text().splitlines(keepends=True)[1:]))
    extra.unlink()
    assert "Promoted" in selfheal("heal", cwd=repo).stdout
    newer = (repo / "model.pkl").read_bytes()
    selfheal("rollback", "--version", "v1.0.0", cwd=repo)
    sandbox.run(["dvc", "repro", "-q"], repo)
    assert (repo / "model.pkl").read_bytes() == newer  # the replaced model, rebuilt from the same inputs
    healed = selfheal("heal", cwd=repo).stdout
    assert "which a person rolled back from" in healed and "Promoted" not in healed
    assert "heal: healthy" not in healed
    production = sandbox.run(["gto", "show", "--json"], repo).stdout
    assert json.loads(production)[foreign.ARTIFACT]["stage"]["prod"] == "v1.0.0"  # GTO's own reading
    assert "Promoted" in selfheal("promote", cwd=repo).stdout
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout
