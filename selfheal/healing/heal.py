"""`selfheal heal`: observe the project, let the pure policy decide, act - one body for every project kind.

Steps run in the policy's order, each decided on fresh observations (a data fix makes a new candidate for the
gate to judge, a new model needs its drift measured). A refusal or escalation of one issue does not stop the
steps after it: a failed data build still leaves the service to be recovered.
"""

from __future__ import annotations

import time
from pathlib import Path

from selfheal.core import audit, journal, workspace
from selfheal.core.project import Project
from selfheal.healing.actions import Result, execute
from selfheal.healing.observe import observe, settings
from selfheal.healing.policy import ISSUES, Decision, plan


def data_folders(project: Project) -> set[str]:
    """The folders of the data files selfheal writes (fix-data, retrain's fold): what a killed action may have
    left half-done there is settled before acting."""
    if (params := project.params) is not None:
        return {str(Path(path).parent) for path in (params.data.raw, params.data.clean, params.data.current)}
    return {str(Path(path).parent) for path in (project.data.fix if project.data else [])}


def _retrain(d: Decision, project: Project, cwd: Path) -> Result:
    from selfheal.healing.retrain import retrain

    entry = retrain(project, cwd=cwd)
    return Result(d, bool(entry and entry["success"]), (entry or {}).get("outcome", "not due"))


def describe(decisions: list[Decision]) -> list[str]:
    return [f"  {i}. {d.step:<7} {d.action:<11} {d.reason}" for i, d in enumerate(decisions, 1)]


# a step acted on may need to act again on what it made (fixed data is then built), at most this many times
MAX_ACTS_PER_STEP = 2


def heal(project: Project, plan_only: bool = False, cwd: Path = Path(".")) -> int:
    """Run (or with `plan_only` only print) the healing decisions; 0 when nothing failed or was escalated."""
    started = time.perf_counter()
    rules = settings(project)
    if plan_only:
        print("heal plan (nothing is changed; later steps are decided again after earlier ones act):")
        print("\n".join(describe(plan(observe(project, cwd, remember=False), rules))))
        return 0
    settled = journal.settle(data_folders(project))
    for line in settled.lines():
        print(f"heal: {line}")
    decisions = plan(observe(project, cwd), rules)
    results: list[Result] = []
    said: set[Decision] = set()
    # a killed action's leftovers were logged and reported: not "healthy"; the steps below redo what is needed
    acted = bool(settled.completed or settled.interrupted)
    stale = False  # something acted since `decisions` were made
    steps, acts = list(ISSUES), dict.fromkeys(ISSUES, 0)
    while steps:
        step = steps.pop(0)
        if stale:  # what an earlier step did (new data, new model) changes what this one sees
            decisions, stale = plan(observe(project, cwd), rules), False
        for d in (x for x in decisions if x.step == step):
            if d not in said:
                print(f"heal: {d.step}: {d.action}: {d.reason}")
                said.add(d)
            if not d.acts and d.action not in ("escalate", "refuse"):
                results.append(Result(d, True))
                continue
            result = _retrain(d, project, cwd) if d.action == "retrain" else execute(d, project, cwd)
            acted, stale = acted or d.acts, stale or d.acts
            print(f"heal: {d.step}: {'done' if result.ok else 'FAILED'}: {result.note}")
            results.append(result)
            if not (d.acts and result.ok):
                continue
            acts[step] += 1
            if step == "data" and acts[step] < MAX_ACTS_PER_STEP and steps[:1] != ["data"]:
                steps.insert(0, "data")  # fixed data is built next
            if step == "model" and steps[:1] != ["monitor"]:
                steps.insert(0, "monitor")  # the model changed: measure drift for the one now serving
    failed = [r for r in results if not r.ok]
    if acted or failed:
        from selfheal.healing.status import write_status

        audit.append(
            cwd / project.record(workspace.HEAL_LOG), "heal",
            "; ".join(f"{r.decision.step}: {r.decision.action}" for r in results if r.decision.action not in ("ok", "skip"))
            or "healthy", not failed,
            decisions=[{"step": r.decision.step, "action": r.decision.action, "reason": r.decision.reason,
                        "ok": r.ok, "note": r.note} for r in results],
            journal=settled.completed + settled.interrupted or None,
            duration_s=round(time.perf_counter() - started, 2),
        )
        write_status(project, cwd)
    reported = any(r.decision.action == "report" for r in results)  # something left as it is: said, not "healthy"
    print(f"heal: {'done' if not failed else 'needs attention'}" if acted or failed else
          "heal: nothing to do, but see the report above" if reported else "heal: healthy")
    return 1 if failed else 0
