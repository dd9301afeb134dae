"""GitHub Actions glue, read from the pipeline's outputs and the audit logs, so the workflow YAML holds no logic.

`selfheal ci-outputs validation|drift` prints `key=value` lines and appends them to `$GITHUB_OUTPUT`; workflow
conditions then read `steps.<id>.outputs.<key>` (strings: 'true' / 'false'). `selfheal ci-summary` appends
what healed during the run (everything logged since the commit the run checked out) to `$GITHUB_STEP_SUMMARY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError

SOURCES = {"validation": workspace.VALIDATION, "drift": workspace.DRIFT}


def _load(kind: str) -> dict[str, Any]:
    path = SOURCES[kind]
    try:
        data = atomic.read_json(path)
    except ValueError as exc:
        raise SelfHealError(f"{path}: not valid JSON ({exc}); rerun `dvc repro`") from None
    if not isinstance(data, dict):
        raise SelfHealError(f"{path}: not found (run `dvc repro` first)")
    return data


def _need(data: dict[str, Any], path: Path, *keys: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise SelfHealError(f"{path}: key(s) {missing} missing; rerun `dvc repro`")


def _flag(value: Any) -> str:
    return "true" if value else "false"


def step_outputs(kind: str) -> dict[str, str]:
    """The outputs of the validation gate step or of the monitoring step."""
    if kind not in SOURCES:
        raise SelfHealError(f"ci-outputs: unknown kind {kind!r}; expected one of {sorted(SOURCES)}")
    data, path = _load(kind), SOURCES[kind]
    if kind == "validation":
        _need(data, path, "metric_name", "metric", "threshold", "passed")
        return {
            "metric_name": str(data["metric_name"]),
            "metric": f"{data['metric']:.6g}",
            "threshold": f"{data['threshold']:.6g}",
            "passed": _flag(data["passed"]),
            "below_threshold": _flag(not data["metric"] >= data["threshold"]),  # NaN counts as below
        }
    _need(data, path, "drift_detected", "drift_score")
    return {
        "drift_detected": _flag(data["drift_detected"]),
        "drift_score": f"{data['drift_score']:.6g}",
        "threshold": f"{data.get('threshold', '')}",
    }


def write_outputs(values: dict[str, str], github_output: str | None) -> list[str]:
    """Append `key=value` lines to the `$GITHUB_OUTPUT` file when given; return the lines."""
    lines = [f"{key}={value}" for key, value in values.items()]
    if github_output:
        with open(github_output, "a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
    return lines


def job_summary(base_rev: str) -> str:
    """Markdown: the gate, the drift check, the self-healing actions since `base_rev`, and the verdict."""
    from selfheal.ops import report

    base = report.resolve_base(base_rev)
    validation, actions = atomic.read_json(report.VALIDATION), report.healing_actions(base)
    if validation:
        state = "passed" if validation.get("passed") else "FAILED"
        gate = f"{state}: {'; '.join(validation.get('reasons') or [])}"
    else:
        gate = f"no {report.VALIDATION}"
    drift = report.drift_line(atomic.read_json(report.DRIFT), None)
    return "\n\n".join(
        [
            "## selfheal: what healed in this run",
            "| check | result |\n|---|---|\n"
            f"| validation gate | {report.cell(gate)} |\n| drift | {report.cell(drift)} |",
            "### Self-healing actions",
            report.actions_table(actions),
            f"Verdict: {report.verdict(validation, report.record_at(base, report.VALIDATION), actions, base.label)}",
        ]
    ) + "\n"


def append_summary(text: str, step_summary: str | None) -> None:
    """Append to the `$GITHUB_STEP_SUMMARY` file when given (GitHub renders it on the run's page)."""
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text)
