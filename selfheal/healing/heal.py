"""`selfheal heal`: observe the pipeline's outputs, the audit trail and the service; let the policy decide; act.

Steps run in the policy's order, each decided on fresh observations (a data fix produces a new candidate for the
gate to judge). Observing is cheap - dvc.lock, a few JSON files, git tags, one md5 of the raw data, one health
check - so a heal on a healthy pipeline takes well under the 3 s budget without running `dvc status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, escalation, journal, workspace
from selfheal.core.config import Params
from selfheal.core.project import current
from selfheal.healing.policy import ISSUES, Decision, Observations, plan
from selfheal.healing.retrain import batch_trained_by, last_retrain_time
from selfheal.versions import gate, vcs
from selfheal.versions.catalog import Versions
from selfheal.versions.rollback import held_back, hold_note

STAGES = ("fix_data", "train", "validate", "monitor")
LOGS = {"data_quality": workspace.DATA_FIX_LOG, "model": workspace.ROLLBACK_LOG, "drift": workspace.RETRAINING_LOG,
        "service": workspace.RECOVERY_LOG}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = atomic.read_json(path)
    except ValueError:
        return None  # a damaged metrics file is as good as none: the pipeline rewrites it
    return data if isinstance(data, dict) else None


def _service(params: Params) -> dict[str, Any] | None:
    """None when no service was started in this project (no pid file); else its health (or the operator's stop)."""
    from selfheal.service import procs

    if procs.read_pid_file() is None:
        stop = procs.read_stop()
        return {"state": "stopped", "detail": procs.stopped_note(stop)} if stop else None
    from selfheal.service.client import check_health

    sr = params.service_recovery
    health = check_health(sr.service_url, sr.health_timeout_seconds)
    return {"state": health.state, "detail": health.detail}


def _judged(cwd: Path, versions: Versions) -> dict[str, Any] | None:
    """The validate stage's verdict judged by the gate against production; None when missing or damaged."""
    try:
        return gate.judged(versions)
    except ValueError:
        return None  # a damaged record is as good as none: the pipeline rewrites it


def observe(params: Params, cwd: Path = Path(".")) -> Observations:
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    ran = all(stage in lock for stage in STAGES)
    raw = cwd / params.data.raw
    recorded = vcs.hashes(lock.get("fix_data", {}), "deps").get(params.data.raw)
    model = cwd / workspace.MODEL
    versions = Versions(current(cwd), cwd)
    production = versions.production_record()
    drift = _json(cwd / workspace.DRIFT)
    return Observations(
        now=datetime.now(UTC),
        pipeline_ran=ran,
        raw_changed=ran and (not raw.exists() or atomic.md5_file(raw) != recorded),
        data_quality=_json(cwd / workspace.DATA_QUALITY),
        model_path=str(workspace.MODEL),
        model_md5=atomic.md5_file(model) if model.exists() else None,
        trained_md5=vcs.hashes(lock.get("train", {})).get(str(workspace.MODEL)),
        validation=_judged(cwd, versions),
        production=production,
        registered_md5s=frozenset(filter(None, map(versions.identity, versions.known))),
        held_back={md5: hold_note(hold) for md5, hold in held_back(versions.project, cwd).items()},
        drift=drift,
        drift_path=str(workspace.DRIFT),
        # a report from before drift.json named its model: the model the monitor stage last read (dvc.lock)
        drift_model_md5=(drift or {}).get("model_md5") or vcs.hashes(lock.get("monitor", {}), "deps").get(str(workspace.MODEL)),
        last_retrain=last_retrain_time(cwd / workspace.RETRAINING_LOG),
        batch_trained_by=batch_trained_by(cwd / params.data.current, cwd / workspace.RETRAINING_LOG)
        if (drift or {}).get("drift_detected") else None,
        service=_service(params),
        escalated={issue: str(record.get("reason")) for issue in ("service",)
                   if (record := escalation.pending(issue, cwd / workspace.ESCALATED))},
        logs={issue: audit.entries(cwd / path) for issue, path in LOGS.items()},
    )


@dataclass
class Result:
    decision: Decision
    ok: bool
    note: str = ""


def _run_pipeline(params: Params, reason: str) -> tuple[bool, str]:
    """`dvc repro` (fix_data cleans the changed data, then a candidate is trained and validated); log the fix."""
    from selfheal.pipeline.fixes import summary_lines

    started = time.perf_counter()
    proc = vcs.dvc("repro", check=False)
    dq = _json(workspace.DATA_QUALITY) or {}
    ok = proc.returncode == 0 and dq.get("valid_after") is True
    fixes = summary_lines(dq) if dq.get("columns") else []
    for line in fixes:
        print(f"✅ {line}")
    error = "" if proc.returncode == 0 else "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
    audit.append(
        workspace.DATA_FIX_LOG, "auto_fix", reason, ok, data_path=params.data.raw, method="dvc repro (fix_data stage)",
        problems_before=dq.get("problems_before"), problems_after=dq.get("problems_after"),
        rows_in=dq.get("rows_in"), rows_out=dq.get("rows_out"), fixes=fixes, error=error or None,
        duration_s=round(time.perf_counter() - started, 1),
    )
    if ok:
        return True, "pipeline reproduced, data valid"
    return False, f"dvc repro failed: {error}" if error else f"data still invalid ({dq.get('problems_after')} problem(s))"


def execute(d: Decision, params: Params) -> Result:
    """Carry out one decision; a failure is reported in the result (heal goes on with the next step)."""
    from selfheal.core.errors import SelfHealError
    from selfheal.service.client import reloader

    url = params.service_recovery.service_url
    try:
        if d.action == "run_pipeline":
            ok, note = _run_pipeline(params, d.reason)
            return Result(d, ok, note)
        if d.action == "run_monitor":
            proc = vcs.dvc("repro", "--single-item", "--force", "monitor", check=False)
            if proc.returncode:
                return Result(d, False, "monitor stage failed: " + " ".join((proc.stderr or proc.stdout).split()[-40:]))
            return Result(d, True, "drift measured for the current model")
        if d.action == "promote":
            from selfheal.versions.promote import promote

            return Result(d, True, promote(reason=d.reason, reload=reloader(url))["version"])
        if d.action in ("rollback", "restore"):  # restore: the workspace model itself is the bad one
            from selfheal.versions.rollback import rollback

            entry = rollback(reload=reloader(url), reason=d.reason if d.action == "restore" else None)
            return Result(d, True, (entry or {}).get("version_restored") or "nothing to roll back")
        if d.action == "retrain":
            from selfheal.healing.retrain import retrain

            entry = retrain(params, service_url=url)
            return Result(d, bool(entry and entry["success"]), (entry or {}).get("outcome", "not due"))
        if d.action == "recover":
            from selfheal.recovery.ladder import recover
            from selfheal.recovery.turns import running_watcher

            watcher = running_watcher()
            if watcher is not None:  # two restarters would stop each other's fresh process
                return Result(d, True, f"the watcher {watcher['pid']} recovers the service (not this heal)")
            outcome = recover(params.service_recovery, "auto", url, actor="heal")
            return Result(d, outcome.success, outcome.detail)
        if d.action == "escalate":
            from selfheal.core.alerts import raise_alert

            raise_alert(f"heal_escalation_{ISSUES[d.step]}", d.reason, issue=ISSUES[d.step], step=d.step)
            return Result(d, False, "escalated: alert raised")
    except SelfHealError as exc:
        return Result(d, False, str(exc))
    raise ValueError(f"heal: unknown action {d.action!r}")


def describe(decisions: list[Decision]) -> list[str]:
    return [f"  {i}. {d.step:<9} {d.action:<13} {d.reason}" for i, d in enumerate(decisions, 1)]


def data_folders(params: Params) -> set[str]:
    """The folders of the data files params names: selfheal writes there too (fix-data, retrain's fold)."""
    return {str(Path(path).parent) for path in (params.data.raw, params.data.clean, params.data.current)}


def heal(params: Params, plan_only: bool = False) -> int:
    """Run (or with `plan_only` only print) the healing decisions; 0 when nothing failed or was escalated."""
    started = time.perf_counter()
    if plan_only:
        print("heal plan (nothing is changed; later steps are decided again after earlier ones act):")
        print("\n".join(describe(plan(observe(params), params))))
        return 0
    settled = journal.settle(data_folders(params))
    for line in settled.lines():
        print(f"heal: {line}")
    decisions = plan(observe(params), params)
    results: list[Result] = []
    # a killed action's leftovers were logged and reported: not "healthy"; the steps below redo what is needed
    acted = bool(settled.completed or settled.interrupted)
    steps = list(ISSUES)
    while steps:
        step = steps.pop(0)
        if acted:  # what an earlier step did (new data, new model) changes what this one sees
            decisions = plan(observe(params), params)
        for d in (x for x in decisions if x.step == step):
            print(f"heal: {d.step}: {d.action}: {d.reason}")
            if not d.acts and d.action != "escalate":
                results.append(Result(d, True))
                continue
            result = execute(d, params)
            acted = acted or d.acts
            print(f"heal: {d.step}: {'done' if result.ok else 'FAILED'}: {result.note}")
            results.append(result)
            if d.step == "gate" and d.acts and steps[:1] != ["monitor"]:  # the model changed: measure drift for the one now serving
                steps.insert(0, "monitor")
    failed = [r for r in results if not r.ok]
    if acted or failed:
        from selfheal.healing.status import write_status

        audit.append(
            workspace.HEAL_LOG, "heal", "; ".join(f"{r.decision.step}: {r.decision.action}" for r in results if
                                              r.decision.action != "skip") or "healthy",
            not failed, decisions=[{"step": r.decision.step, "action": r.decision.action, "reason": r.decision.reason,
                                    "ok": r.ok, "note": r.note} for r in results],
            journal=settled.completed + settled.interrupted or None,
            duration_s=round(time.perf_counter() - started, 2),
        )
        write_status()
    reported = any(r.decision.action == "report" for r in results)  # something left as it is: said, not "healthy"
    print(f"heal: {'done' if not failed else 'needs attention'}" if acted or failed else
          "heal: nothing to do, but see the report above" if reported else "heal: healthy")
    return 1 if failed else 0
