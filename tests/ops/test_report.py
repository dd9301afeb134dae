"""`make report`: the workspace against a base revision, in a real git + DVC repo, with a real rollback."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from selfheal.core.errors import SelfHealError
from selfheal.ops.report import verdict
from selfheal.ops.sandbox import commit, run

PNG = b"\x89PNG\r\n\x1a\n"


def _section(text: str, title: str) -> str:
    """The body of a `## title` section."""
    found = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"no section {title!r} in:\n{text}"
    return found.group(1)


def _table_rows(section: str) -> list[list[str]]:
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


@pytest.mark.slow
def test_report_compares_two_revisions_and_names_the_rollback(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(["selfheal", "promote"], project)  # the good model becomes production v0.0.1
    base = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    run(["dvc", "exp", "run", "-S", "train.model=linear"], project)  # a worse model, applied to the workspace
    commit(project, "try a linear model")

    run(["selfheal", "report", "--base", base], project)
    text = (project / "report.md").read_text()
    assert text.startswith("# selfheal report: workspace (HEAD ")
    assert re.search(r"^Verdict: \*\*worse\*\*: fails the validation gate: r2 0\.\d+ below threshold 0\.700", text, re.M)
    params = _table_rows(_section(text, "Params"))
    assert ["params.yaml", "train.model", "hist_gradient_boosting", "linear"] in params
    metrics = {row[1]: row for row in _table_rows(_section(text, "Metrics"))}
    old_r2, new_r2 = float(metrics["r2"][2]), float(metrics["r2"][3])
    assert new_r2 < old_r2
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", _section(text, "Plots"))
    assert images == ["report/predictions.png", "report/drift.png"]  # relative: what CML uploads
    for image in images:
        assert (project / image).read_bytes().startswith(PNG)
    assert (project / "report/dvc_plots/index.html").exists()
    assert "No drift" in _section(text, "Drift")
    fixes = _section(text, "Data fixes")  # what fix_data changed, per column, and the switch for each fix
    assert "missing filled (fix_missing_values)" in fixes and "rows in" in fixes
    assert "No self-healing action was logged." in _section(text, "Self-healing actions")

    run(["selfheal", "rollback"], project)  # the gate failed: back to v0.0.1
    run(["selfheal", "report", "--base", base], project)
    text = (project / "report.md").read_text()
    assert re.search(r"^Verdict: \*\*rolled back\*\* to v0\.0\.1: ", text, re.M), text
    actions = _table_rows(_section(text, "Self-healing actions"))
    assert [(row[1], row[2], row[3]) for row in actions] == [("rollback", "auto_rollback", "ok")]
    assert "version_restored=v0.0.1" in actions[0][5]

    step_summary = project.parent / "step_summary.md"
    step_summary.write_text("earlier steps\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    shown = run(["selfheal", "ci-summary", "--base", base], project).stdout
    assert step_summary.read_text() == "earlier steps\n" + shown
    v1 = next(v for v in json.loads(run(["selfheal", "versions", "--json"], project).stdout) if v["version"] == "v0.0.1")
    assert f"| validation gate | passed: r2 {v1['metric']:.3f}" in shown  # the rollback restored v0.0.1's verdict
    assert "| rollback | auto_rollback | ok |" in shown
    assert "Verdict: **rolled back** to v0.0.1" in shown


def test_report_with_an_unknown_base_is_a_one_line_error(project: Path) -> None:
    proc = run(["selfheal", "report", "--base", "no-such-branch"], project, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --base no-such-branch: not a commit of this git repo")
    assert not (project / "report.md").exists()


@pytest.mark.slow
def test_base_may_be_a_model_version(promoted: Path, workdir) -> None:
    from selfheal.ops.report import resolve_base
    from selfheal.versions import registry

    repo = workdir(promoted)
    tagged = registry.find("v0.0.1", registry.versions()).commit
    assert resolve_base("v0.0.1").sha == resolve_base("model@v0.0.1").sha == tagged
    with pytest.raises(SelfHealError, match=r"--base v0\.0\.9: not a commit .* not a model version \(known: v0\.0\.1\)"):
        resolve_base("v0.0.9")
    run(["selfheal", "report", "--base", "v0.0.1"], repo)  # the README's `make report BASE=v0.0.1`: DVC's diffs too
    assert "model@v0.0.1 @ " in (repo / "report.md").read_text()


def _val(metric: float, passed: bool = True) -> dict:
    return {"metric_name": "r2", "metric": metric, "passed": passed, "reasons": [f"r2 {metric:.3f}"]}


ROLLBACK = {
    "log": "rollback",
    "when": datetime(2026, 1, 1, tzinfo=UTC),
    "action": "auto_rollback",
    "reason": "Model accuracy 0.65 below threshold 0.70",
    "success": True,
    "version_restored": "v0.0.2",
}


@pytest.mark.parametrize(
    ("current", "base", "actions", "expected"),
    [
        (_val(0.80), _val(0.75), [], "**better**: r2 0.8000 vs 0.7500 at main (+0.0500)"),
        (_val(0.74), _val(0.75), [], "**worse**: r2 0.7400 vs 0.7500 at main (-0.0100)"),
        (_val(0.75), _val(0.75), [], "**unchanged**: r2 0.7500 vs 0.7500 at main (+0.0000)"),
        (_val(0.75), None, [], "**new**: r2 0.7500 (no r2 at main)"),
        (_val(0.65, passed=False), _val(0.75), [], "**worse**: fails the validation gate: r2 0.650"),
        (_val(0.75), _val(0.75), [ROLLBACK], "**rolled back** to v0.0.2: Model accuracy 0.65 below threshold 0.70"),
        (_val(0.75), _val(0.75), [{**ROLLBACK, "success": False}], "**unchanged**: r2 0.7500 vs 0.7500 at main (+0.0000)"),
        (None, _val(0.75), [], "**unknown**: no metrics/records/validation.json in the workspace (run `dvc repro`)"),
    ],
)
def test_verdict(current, base, actions, expected) -> None:
    assert verdict(current, base, actions, "main") == expected
