"""What heal does once the policy decided: build a candidate, fix data files, measure drift, promote, roll back
or restore, recover the service, escalate - for every project kind. A retrain is healing.retrain's.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, workspace
from selfheal.core.clock import now_iso
from selfheal.core.config import Params
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project
from selfheal.healing.observe import inputs
from selfheal.healing.policy import ISSUES, Decision
from selfheal.versions import catalog, vcs


@dataclass
class Result:
    decision: Decision
    ok: bool
    note: str = ""


def reloader(project: Project) -> Any:
    """How promote and rollback tell the service production changed: our service's admin reload, or the
    project's service.reload URL (POSTed); None when there is nothing to tell."""
    if (params := project.params) is not None:
        from selfheal.service.client import reloader as own

        return own(params.service_recovery.service_url)
    if project.service is None or project.service.reload is None:
        return None
    url = project.service.reload

    def post(_md5: str | None) -> bool | str:
        import urllib.request

        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=10) as resp:
                return 200 <= resp.status < 300
        except OSError as exc:
            return f"not reloaded: {exc}"

    return post


def _failed_build(project: Project, cwd: Path, error: str, made_from: dict[str, str]) -> str:
    """After a stage failed: production's version outputs restored (verified), the failure recorded with the
    inputs it was made from, an alert once the same inputs failed `repro.max_failures` times."""
    from selfheal.versions.rollback import rollback

    record = cwd / project.record(workspace.FAILED_CANDIDATE)
    last = audit.read(record, None)
    attempts = (last.get("attempts", 0) if isinstance(last, dict) and last.get("inputs") == made_from else 0) + 1
    atomic.write_json(record, {"timestamp": now_iso(), "error": error, "inputs": made_from, "attempts": attempts})
    prod = catalog.Versions(project, cwd).production()
    note = "no production version to restore"
    if prod is not None:
        entry = rollback(project, version=prod.name, reason=f"the candidate failed to build: {error}",
                         reload=reloader(project), cwd=cwd)
        note = f"{prod.tag}'s outputs restored" if entry else note
    if attempts >= project.repro.max_failures:
        from selfheal.core.alerts import raise_alert

        raise_alert("candidate_build_failed", f"the candidate failed to build {attempts} times from the same inputs: "
                    f"{error}", cwd / project.record(workspace.ALERTS_LOG), attempts=attempts)
    return note


def build(project: Project, cwd: Path, reason: str, command: str | None = None
          ) -> tuple[bool, str]:
    """Make a candidate: `dvc repro` (or the repro / retrain section's command) in the user's environment; a
    failure restores production and is remembered with the inputs it was made from."""
    started = time.perf_counter()
    made_from = inputs(project, cwd)
    command = command or project.repro.command
    argv = project.repro.argv() or ["repro"]
    if command:
        proc = subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, env=vcs.env(cwd))
    else:
        proc = vcs.dvc(*argv, cwd=cwd, check=False)
    shown = command or f"dvc {' '.join(argv)}"
    error = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) if proc.returncode else ""
    audit.append(cwd / project.record(workspace.HEAL_LOG), "repro", reason, proc.returncode == 0, command=shown,
                 error=error or None, inputs=made_from, duration_s=round(time.perf_counter() - started, 1))
    fixed = _fix_stage_report(params, cwd, reason, started, error) if (params := project.params) else True
    if proc.returncode:
        return False, f"{shown} failed: {error}; {_failed_build(project, cwd, error, made_from)}"
    (cwd / project.record(workspace.FAILED_CANDIDATE)).unlink(missing_ok=True)
    return fixed, "candidate reproduced" + ("" if fixed else ", but the data is still invalid")


def _fix_stage_report(params: Params, cwd: Path, reason: str, started: float, error: str) -> bool:
    """Our pipeline's fix_data stage cleaned the data: what it changed goes to the data-fix log (and the
    console); False while the data is still invalid after it."""
    from selfheal.pipeline.fixes import summary_lines

    try:
        dq = atomic.read_json(cwd / workspace.DATA_QUALITY) or {}
    except ValueError:
        dq = {}
    fixes = summary_lines(dq) if dq.get("columns") else []
    for line in fixes:
        print(f"✅ {line}")
    ok = not error and dq.get("valid_after") is True
    audit.append(
        cwd / workspace.DATA_FIX_LOG, "auto_fix", reason, ok, data_path=params.data.raw,
        method="dvc repro (fix_data stage)", problems_before=dq.get("problems_before"),
        problems_after=dq.get("problems_after"), rows_in=dq.get("rows_in"), rows_out=dq.get("rows_out"),
        fixes=fixes, error=error or None, duration_s=round(time.perf_counter() - started, 1))
    return ok


def _fix(project: Project, cwd: Path) -> tuple[bool, str]:
    """Fix every data.fix file that has faults (each backed up first); the next step builds the candidate."""
    from selfheal.healing.filefix import fix_configured
    from selfheal.healing.observe import data_faults

    assert project.data is not None
    faulty, _ = data_faults(project, cwd, remember=False)
    notes = []
    for name in faulty:
        entry = fix_configured(cwd / name, project.data.target, project.data.quality, cwd / project.records_dir)
        if not entry["success"]:
            return False, f"{name}: still invalid after fixing ({entry['problems_after']} problem(s))"
        notes.append(f"{name}: {entry['changes']} change(s), backup {entry['backup']}")
    return True, "; ".join(notes)


def _to_production(project: Project, d: Decision, cwd: Path) -> tuple[bool, str]:
    """Roll back (a failed candidate) or restore (outputs not as pinned) production."""
    from selfheal.versions.rollback import rollback

    prod = catalog.Versions(project, cwd).production() if d.action == "restore" else None
    entry = rollback(project, version=prod.name if prod else None, reason=d.reason,
                     reload=reloader(project), cwd=cwd)
    assert entry is not None  # with a reason a rollback restores or raises
    return True, str(entry.get("version_restored") or entry.get("tag"))


def _recover(project: Project, cwd: Path) -> tuple[bool, str]:
    from selfheal.recovery.configured import ladder
    from selfheal.recovery.ladder import recover
    from selfheal.recovery.turns import running_watcher

    watcher = running_watcher()
    if watcher is not None:  # started since heal looked: two restarters would stop each other's fresh process
        return True, f"the watcher {watcher['pid']} recovers the service (not this heal)"
    sr, target = ladder(project, cwd)
    outcome = recover(sr, "auto", actor="heal", target=target)
    return outcome.success, outcome.detail


def execute(d: Decision, project: Project, cwd: Path = Path(".")) -> Result:
    """Carry out one decision but a retrain (healing.retrain, which itself uses these); a failure is reported
    in the result (heal goes on with the next step)."""
    try:
        if d.action == "fix":
            return Result(d, *_fix(project, cwd))
        if d.action == "repro":
            return Result(d, *build(project, cwd, d.reason))
        if d.action == "run_monitor":
            proc = vcs.dvc("repro", "--single-item", "--force", "monitor", cwd=cwd, check=False)
            if proc.returncode:
                return Result(d, False, "monitor stage failed: " + " ".join((proc.stderr or proc.stdout).split()[-40:]))
            return Result(d, True, "drift measured for the current model")
        if d.action == "promote":
            from selfheal.versions.promote import promote

            return Result(d, True, promote(project, reason=d.reason, reload=reloader(project), cwd=cwd)["tag"])
        if d.action in ("rollback", "restore"):
            return Result(d, *_to_production(project, d, cwd))
        if d.action == "recover":
            return Result(d, *_recover(project, cwd))
        if d.action == "escalate":
            from selfheal.core.alerts import raise_alert

            raise_alert(f"heal_escalation_{ISSUES[d.step]}", d.reason, cwd / project.record(workspace.ALERTS_LOG),
                        issue=ISSUES[d.step], step=d.step)
            return Result(d, False, "escalated: alert raised")
        if d.action == "refuse":
            return Result(d, False, d.reason)
    except SelfHealError as exc:
        return Result(d, False, str(exc))
    raise ValueError(f"heal: unknown action {d.action!r}")
