"""`selfheal heal` / `retrain` / `status` for a configured project (selfheal.yaml): the gate on any DVC pipeline.

One pass, the first thing to do first, then look again: (data) a `data.fix` file with faults is fixed in place
(backup first, atomic write, logged; the fixes of our own pipeline), and when a watched data file differs from
what dvc.lock recorded, the repro section makes a candidate; (model) a candidate whose model outputs differ from
production is judged on the configured metric - promoted when it passes, rolled back to production (every
output md5-verified) when it does not; a model output missing or altered in the workspace is restored; (drift)
the configured current data is compared with the reference (the profile drift of our monitor, Evidently's
tests) and the pure policy decides a retrain (the retrain section, its cooldown), which the gate then judges;
(service) a health URL that does not answer 200 is recovered by the ladder of `selfheal recover`.
Everything selfheal writes goes to the records directory.
Observing reads dvc.lock, the metrics file, the GTO tags and one md5 per file of the version stages' outputs (a
directory through its manifest in the DVC cache) and per data file: a data file is
read (pandas) only when its bytes differ from the last ones checked clean, and drift is measured only when the
reference or current bytes differ from the last measurement, so a heal on a healthy project stays fast.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, clock, escalation, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, at_key
from selfheal.healing.policy import Decision
from selfheal.versions import catalog, checkout, gate, vcs


def _data_changed(project: Project, lock: dict[str, Any], cwd: Path) -> list[str]:
    """Configured data files whose bytes differ from what dvc.lock recorded (or that are missing)."""
    if project.data is None:
        return []
    recorded: dict[str, str] = {}
    for entry in lock.values():
        recorded.update(vcs.hashes(entry, "deps"))
    return [d for d in project.data.watched if d in recorded and (not (cwd / d).is_file()
                                                                   or atomic.md5_file(cwd / d) != recorded[d])]


def _data_faults(project: Project, cwd: Path, remember: bool) -> tuple[list[str], list[str]]:
    """(files with something to fix, files with faults left unfixed because auto_fix_enabled is false). A file
    whose bytes were checked clean before is not read again; `remember` records the clean ones."""
    if project.data is None or not project.data.fix:
        return [], []
    from selfheal.healing.filefix import planned

    record = cwd / project.record(workspace.DATA_CHECKED)
    checked = audit.read(record, {})
    faulty, left = [], []
    for name in project.data.fix:
        path = cwd / name
        if not path.is_file():
            raise SelfHealError(f"selfheal.yaml: data.fix: {name}: file not found")
        md5 = atomic.md5_file(path)
        if checked.get(name) == md5:
            continue
        report = planned(path, project.data.target, project.data.quality)
        if report["changes"]:
            faulty.append(f"{name} ({report['changes']} change(s) to make)")
        elif report["problems_before"]:
            left.append(f"{name}: {'; '.join(report['open_problems'])[:200]}")
        else:
            checked[name] = md5
    if remember:
        atomic.write_json(record, checked)
    return faulty, left


def _altered(hashes: dict[str, str], cwd: Path) -> list[str]:
    """A candidate's model outputs missing from the workspace, or files whose bytes are not what dvc.lock pins
    (the gate then judges it; a rollback puts every file of production's directories back anyway)."""
    return [path for path, md5 in hashes.items()
            if (not (cwd / path).is_dir() if md5.endswith(".dir") else checkout.differs(path, md5, cwd))]


def _not_as_pinned(project: Project, lock: dict[str, Any], cwd: Path) -> list[str]:
    """Production's version outputs (the model, and e.g. the evaluation's `eval/` directory) that are not the
    bytes dvc.lock pins: a directory is checked file by file against its manifest in the cache."""
    return [path for stage in project.model.stages for path, md5 in vcs.hashes(lock.get(stage) or {}).items()
            if md5 and checkout.differs(path, md5, cwd)]


def decide(project: Project, cwd: Path = Path("."), remember: bool = False) -> list[Decision]:
    """What heal does now, and why: the steps that find nothing to do, ending with the first that acts (or a
    refusal). Nothing in the project is changed; `remember` keeps what was measured (clean data, drift)."""
    found: list[Decision] = []
    for observe in (_data_step, _model_step, _drift_step, _service_step):
        step = observe(project, cwd, remember)
        if step is None:
            continue
        found.append(step)
        if step.acts or step.action == "refuse":
            break
    return found


def _data_step(project: Project, cwd: Path, remember: bool) -> Decision | None:
    failed = _failed_step(project, cwd)
    if failed is not None:
        return failed
    edited = _params_changed(_upstream(vcs.read_lock(cwd / workspace.DVC_LOCK), project.model.stages), cwd)
    if edited:  # the stages that read them are stale: a candidate is built (and judged), never "healthy"
        rejected = audit.read(cwd / project.record(workspace.REJECTED_PARAMS), None)
        if isinstance(rejected, dict) and all(rejected.get(f) == md5 for f, md5 in _files_of(edited, cwd).items()):
            return Decision("data", "report", f"params changed since dvc.lock ({', '.join(edited)}), but the candidate "
                            "built from exactly these params failed the gate and was rolled back; production serves. "
                            "Change them back (or again), or `selfheal promote --force` after `dvc repro`")
        return Decision("data", "repro", f"params changed since dvc.lock: {', '.join(edited)}")
    if project.data is None:
        return None
    try:
        faulty, left = _data_faults(project, cwd, remember)
    except SelfHealError as exc:  # a missing file, an unknown target column, data no fix can get past
        return Decision("data", "refuse", str(exc))
    if faulty:
        return Decision("data", "fix", f"data faults in {', '.join(faulty)}")
    changed = _data_changed(project, vcs.read_lock(cwd / "dvc.lock"), cwd)
    if changed:
        return Decision("data", "repro", f"data changed since dvc.lock: {', '.join(changed)}")
    if left:
        return Decision("data", "report", f"faults left (data.quality.auto_fix_enabled is false): {'; '.join(left)}")
    return Decision("data", "ok", f"{', '.join(project.data.watched) or 'data'} as dvc.lock recorded")


def _upstream(lock: dict[str, Any], stages: list[str]) -> dict[str, Any]:
    """The lock entries of `stages` and of every stage whose outputs they read, transitively: what makes this
    project's model (another model's stages in the same pipeline are not its business)."""
    outs = {stage: set(vcs.hashes(entry)) for stage, entry in lock.items()}
    chosen, todo = set(), [s for s in stages if s in lock]
    while todo:
        stage = todo.pop()
        if stage in chosen:
            continue
        chosen.add(stage)
        for dep in vcs.hashes(lock[stage], "deps"):
            todo += [s for s, made in outs.items() if workspace.inside(dep, made)]
    return {s: lock[s] for s in lock if s in chosen}


def _params_changed(lock: dict[str, Any], cwd: Path) -> list[str]:
    """`file:key` of every param a stage of `lock` recorded whose value the params file no longer has (what
    `dvc status` reports as changed params), read without DVC."""
    from selfheal.core.config import parse_yaml

    changed: list[str] = []
    files: dict[str, Any] = {}
    for entry in lock.values():
        for name, recorded in (entry.get("params") or {}).items():
            if name not in files:
                path = cwd / name
                files[name] = parse_yaml(path.read_text(encoding="utf-8")) if path.is_file() else None
            for key, value in (recorded or {}).items():
                if at_key(files[name], key) != value:
                    changed.append(f"{name}:{key}")
    return list(dict.fromkeys(changed))


def _files_of(edited: list[str], cwd: Path) -> dict[str, str]:
    """{params file: md5} of the files the `file:key` entries of `_params_changed` name."""
    return {f: atomic.md5_file(cwd / f) for f in {e.split(":", 1)[0] for e in edited}}


def _failed_step(project: Project, cwd: Path) -> Decision | None:
    """After a candidate failed to build, the stages after the failed one are stale: never "ok" until a build
    succeeds. Built again once an input or the code changed; refused (not healthy) until then."""
    failed = audit.read(cwd / project.record(workspace.FAILED_CANDIDATE), None)
    if not isinstance(failed, dict):
        return None
    moved = [p for p, md5 in _inputs(project, cwd).items() if (failed.get("inputs") or {}).get(p) != md5]
    if moved:
        return Decision("data", "repro", f"inputs changed since the candidate that failed to build: {', '.join(moved)}")
    return Decision("data", "refuse", f"the candidate made from the current inputs failed to build "
                    f"{failed.get('attempts')} time(s) ({failed.get('error')}); production's outputs were restored "
                    "and still serve; heal builds again when an input or the code changes")


def _model_step(project: Project, cwd: Path, remember: bool) -> Decision:
    try:
        _, hashes = catalog.candidate(project, cwd)
    except SelfHealError as exc:
        return Decision("model", "refuse", str(exc))
    reg = catalog.Versions(project, cwd)
    prod = reg.production()
    ident = catalog.identity(hashes)
    if prod is not None and ident == reg.identity(prod):
        altered = _not_as_pinned(project, vcs.read_lock(cwd / "dvc.lock"), cwd)
        if altered:
            return Decision("model", "restore", f"{', '.join(altered)} differ from {prod.tag} as dvc.lock pins it")
        return Decision("model", "ok", f"{prod.tag} is {project.gate.stage}")
    altered = _altered(hashes, cwd)
    if altered:
        return Decision("model", "refuse" if prod is None else "restore",
                        f"{', '.join(altered)} differ from dvc.lock; run `dvc checkout` or `dvc repro`")
    try:
        verdict = gate.verdict(project, cwd, reg, prod)
    except SelfHealError as exc:
        return Decision("model", "refuse", str(exc))
    if verdict is None:
        return Decision("model", "refuse", f"{project.gate.metrics}: not found; run `dvc repro`")
    reasons = verdict["failures"]
    hold = _held_back(project, cwd, ident)
    if not reasons and hold:
        return Decision("model", "report", hold)
    if not reasons:
        against = f" vs {prod.tag}" if prod else " (first production version)"
        return Decision("model", "promote",
                        f"candidate {project.gate.key} {verdict['metric']:.4f} passes the gate{against}")
    if prod is None:
        return Decision("model", "refuse", "candidate fails the gate and no production version exists: "
                        + "; ".join(reasons))
    return Decision("model", "rollback", "candidate fails the gate: " + "; ".join(reasons))


def _held_back(project: Project, cwd: Path, ident: str | None) -> str | None:
    """Why a candidate that passes is not promoted: a person rolled back from this very model."""
    from selfheal.versions.rollback import held_back, hold_note

    hold = held_back(project, cwd).get(ident or "")
    return None if hold is None else f"the candidate passes the gate, but {hold_note(hold)}"


def _drift_step(project: Project, cwd: Path, remember: bool) -> Decision | None:
    if project.drift is None:
        return None
    try:
        measured = measure_drift(project, cwd, remember)
    except SelfHealError as exc:
        return Decision("drift", "refuse", str(exc))
    verdict = _retrain_verdict(project, measured, cwd, force=False)
    if verdict.retrain:
        return Decision("drift", "retrain", verdict.reason)
    return Decision("drift", "report" if verdict.blocked_by_config else ("skip" if measured["drift_detected"] else "ok"),
                    verdict.reason)


def _service_step(project: Project, cwd: Path, remember: bool) -> Decision | None:
    if project.service is None or project.service.health is None:
        return None
    from selfheal.recovery.turns import running_watcher
    from selfheal.service.client import probe

    health = probe(project.service.health, project.service.health_timeout_seconds)
    if health.healthy:
        return Decision("service", "ok", health.detail)
    stormed = escalation.pending("service", cwd / workspace.ESCALATED)
    if stormed is not None:  # what the watcher refused, heal refuses too
        return Decision("service", "refuse", f"{health.detail}; {stormed.get('reason')}; `selfheal acknowledge "
                        "service` once a person has looked")
    watcher = running_watcher()
    if watcher is not None:
        return Decision("service", "skip", f"{health.detail}; left to the running watcher (pid {watcher['pid']})")
    if not project.service.start and not (health.state == "unhealthy" and project.service.reload):
        return Decision("service", "refuse", f"{health.detail}; service.start is not set, so selfheal cannot restart it")
    return Decision("service", "recover", health.detail)


def _frame(project: Project, name: str, cwd: Path) -> Any:
    from selfheal.pipeline.checks import read_csv_checked, read_parquet_checked

    path = cwd / name
    if not path.is_file():
        raise SelfHealError(f"selfheal.yaml: drift: {name}: file not found")
    return read_parquet_checked(path, "selfheal.yaml drift names it") if name.endswith(".parquet") \
        else read_csv_checked(path)


def measure_drift(project: Project, cwd: Path = Path("."), remember: bool = True) -> dict[str, Any]:
    """The drift of drift.current against drift.reference, per column with the test Evidently picks (the
    profile drift of our monitor), and the dataset verdict of its rule; reused while both files are unchanged."""
    d = project.drift
    assert d is not None
    record = cwd / project.record(workspace.DRIFT_CHECKED)
    inputs = {"reference": atomic.md5_file(cwd / d.reference) if (cwd / d.reference).is_file() else None,
              "current": atomic.md5_file(cwd / d.current) if (cwd / d.current).is_file() else None,
              "threshold": d.drift_threshold, "columns": d.columns, "target": project.data and project.data.target}
    last = audit.read(record, {})
    if isinstance(last, dict) and last.get("inputs") == inputs:
        return last
    from selfheal.pipeline import profile_drift, profiles
    from selfheal.pipeline.checks import infer_schema, typed
    from selfheal.pipeline.profile_drift import dataset_drift

    ref, cur = _frame(project, d.reference, cwd), _frame(project, d.current, cwd)
    target = project.data.target if project.data else None
    shared = [c for c in ref.columns if c in cur.columns and c != target]
    columns = d.columns or shared
    unknown = [c for c in columns if c not in shared]
    if unknown:
        raise SelfHealError(f"selfheal.yaml: drift.columns: {unknown} not in both {d.reference} and {d.current} "
                            f"(shared: {shared})")
    schema = infer_schema(ref[columns], columns[0])
    schema.target = ""  # every compared column is a feature
    kinds = {c: schema.columns[c] for c in columns}
    ref_t, cur_t = typed(ref[columns], schema)[0], typed(cur[columns], schema)[0]
    per_column = profile_drift.drift(profiles.profile_frame(ref_t, kinds), profiles.profile_frame(cur_t, kinds),
                                     columns)
    count = sum(1 for c in per_column.values() if c["drifted"])
    share = count / len(columns)
    measured = {"timestamp": clock.now_iso(), "inputs": inputs, "reference": d.reference, "current": d.current,
                "drift_detected": dataset_drift(share, d.drift_threshold), "drift_score": share,
                "share_of_drifted_columns": share, "number_of_drifted_columns": count,
                "number_of_columns": len(columns), "threshold": d.drift_threshold, "columns": per_column}
    if remember:
        atomic.write_json(record, measured)
    return measured


def _retrain_verdict(project: Project, measured: dict[str, Any], cwd: Path, force: bool) -> Any:
    """The pure policy's decision on the measured drift, the retrain cooldown and the last retrain; a batch
    already retrained on is not retrained on again (the retrain command is expected to fold it in)."""
    from selfheal.healing.policy import RetrainDecision, retrain_decision

    assert project.drift is not None
    history = audit.entries(cwd / project.record(workspace.RETRAINING_LOG))
    last = history[-1] if history else None
    verdict = retrain_decision(
        drift_detected=bool(measured["drift_detected"]), drift_score=float(measured["drift_score"]),
        threshold=float(measured["threshold"]), last_retrain=clock.parse_time(last["timestamp"]) if last else None,
        now=datetime.now(UTC), cooldown_hours=project.retrain.cooldown_hours,
        enabled=project.drift.auto_retrain_enabled, force=force)
    if verdict.retrain and last and last.get("current_md5") == measured["inputs"]["current"] and not force:
        return RetrainDecision(False, f"{verdict.reason}, but the last retrain ({last['timestamp']}) already had "
                               f"this {project.drift.current}: waiting for a new batch")
    return verdict


def _inputs(project: Project, cwd: Path) -> dict[str, str]:
    """{path: md5} of what a candidate is made from: the watched data and every file a stage of dvc.lock reads
    (its code and params files included), so a failed build is tried again only once one of them changes."""
    paths = set(project.data.watched if project.data else [])
    for entry in _upstream(vcs.read_lock(cwd / workspace.DVC_LOCK), project.model.stages).values():
        paths |= set(vcs.hashes(entry, "deps")) | set(entry.get("params") or {})
    return {p: atomic.md5_file(cwd / p) for p in sorted(paths) if (cwd / p).is_file()}


def _failed_build(project: Project, cwd: Path, error: str, inputs: dict[str, str]) -> str:
    """After a stage failed: production's version outputs restored (verified), the failure recorded with the
    inputs it was made from, an alert once the same inputs failed `repro.max_failures` times."""
    from selfheal.versions.rollback import rollback

    record = cwd / project.record(workspace.FAILED_CANDIDATE)
    last = audit.read(record, None)
    attempts = (last.get("attempts", 0) if isinstance(last, dict) and last.get("inputs") == inputs else 0) + 1
    atomic.write_json(record, {"timestamp": clock.now_iso(), "error": error, "inputs": inputs, "attempts": attempts})
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


def _repro(project: Project, cwd: Path, reason: str) -> tuple[bool, str]:
    started = time.perf_counter()
    inputs = _inputs(project, cwd)
    argv = project.repro.argv()
    if argv is None:
        proc = subprocess.run(project.repro.command or "", shell=True, cwd=cwd, capture_output=True, text=True,
                              env=vcs.env(cwd))
    else:
        proc = vcs.dvc(*argv, cwd=cwd, check=False)
    error = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) if proc.returncode else ""
    audit.append(cwd / project.record(workspace.HEAL_LOG), "repro", reason, proc.returncode == 0,
                 command=project.repro.command or f"dvc {' '.join(argv or [])}", error=error or None,
                 inputs=inputs, duration_s=round(time.perf_counter() - started, 1))
    if proc.returncode:
        return False, f"{error}; {_failed_build(project, cwd, error, inputs)}"
    (cwd / project.record(workspace.FAILED_CANDIDATE)).unlink(missing_ok=True)
    return True, "candidate reproduced"


def reloader(project: Project) -> Any:
    """POST service.reload (when configured) once production's bytes changed; a failure is noted, not raised."""
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


def act(project: Project, step: Decision, cwd: Path = Path(".")) -> tuple[bool, str]:
    from selfheal.versions.promote import promote  # acting only: a healthy heal does not import them
    from selfheal.versions.rollback import rollback

    try:
        if step.action == "fix":
            return _fix(project, cwd)
        if step.action == "repro":
            return _repro(project, cwd, step.reason)
        if step.action == "promote":
            return True, promote(project, reason=step.reason, reload=reloader(project), cwd=cwd)["tag"]
        if step.action in ("rollback", "restore"):
            prod = catalog.Versions(project, cwd).production() if step.action == "restore" else None
            entry = rollback(project, version=prod.name if prod else None, reason=step.reason,
                             reload=reloader(project), cwd=cwd)
            assert entry is not None  # with a reason a rollback restores or raises
            lock = _upstream(vcs.read_lock(cwd / workspace.DVC_LOCK), project.model.stages)
            edited = _params_changed(lock, cwd) if step.action == "rollback" else []
            if edited:  # production's lock records other params than the file: not built again from these
                atomic.write_json(cwd / project.record(workspace.REJECTED_PARAMS), _files_of(edited, cwd))
            return True, entry["tag"]
        if step.action == "retrain":
            done = retrain(project, cwd=cwd)
            return (False, "retrain skipped") if done is None else (done["success"], f"{done['outcome']}: "
                                                                   f"{done['reason']}")
        if step.action == "recover":
            return _recover(project, cwd)
    except SelfHealError as exc:
        return False, str(exc)
    return step.action in ("ok", "skip", "report"), step.reason


def _fix(project: Project, cwd: Path) -> tuple[bool, str]:
    """Fix every data.fix file that has faults (each backed up first); the repro then makes the candidate."""
    from selfheal.healing.filefix import fix_configured

    assert project.data is not None
    faulty, _ = _data_faults(project, cwd, remember=False)
    notes = []
    for name in project.data.fix:
        if any(f.startswith(f"{name} (") for f in faulty):
            entry = fix_configured(cwd / name, project.data.target, project.data.quality, cwd / project.records_dir)
            if not entry["success"]:
                return False, f"{name}: still invalid after fixing ({entry['problems_after']} problem(s))"
            notes.append(f"{name}: {entry['changes']} change(s), backup {entry['backup']}")
    return True, "; ".join(notes)


def _recover(project: Project, cwd: Path) -> tuple[bool, str]:
    from selfheal.recovery import configured as service
    from selfheal.recovery.ladder import recover

    section = service.service_of(project)
    outcome = recover(service.params(section), actor="heal", target=service.target(project, cwd))
    return outcome.success, outcome.detail


def heal(project: Project, plan_only: bool = False, cwd: Path = Path(".")) -> int:
    """Run (or print) the decisions until nothing is left to do; 0 when healthy or healed."""
    started = time.perf_counter()
    steps = decide(project, cwd, remember=not plan_only)
    if plan_only:
        print("heal plan (nothing is changed):")
        print("\n".join(f"  {i}. {s.step:<7} {s.action:<9} {s.reason}" for i, s in enumerate(steps, 1)))
        return 0
    done: list[dict[str, Any]] = []
    said: set[Decision] = set()
    failed = False
    for _ in range(8):  # fix -> repro -> gate -> retrain -> gate -> recover, each looked at again after acting
        for step in steps:
            if step not in said:
                print(f"heal: {step.step}: {step.action}: {step.reason}")
                said.add(step)
        last = steps[-1]
        if not last.acts:
            failed = last.action == "refuse"
            done += [{"step": s.step, "action": s.action, "reason": s.reason, "ok": s.action != "refuse"}
                     for s in steps if s.action != "ok"]
            break
        ok, note = act(project, last, cwd)
        print(f"heal: {last.step}: {'done' if ok else 'FAILED'}: {note}")
        done.append({"step": last.step, "action": last.action, "reason": last.reason, "ok": ok, "note": note})
        if not ok:
            failed = True
            break
        steps = decide(project, cwd, remember=True)
    acted = any(d["action"] not in ("ok", "skip", "report", "refuse") for d in done)
    if acted or failed:
        audit.append(cwd / project.record(workspace.HEAL_LOG), "heal",
                     "; ".join(f"{d['step']}: {d['action']}" for d in done), not failed, decisions=done,
                     duration_s=round(time.perf_counter() - started, 2))
    reported = any(d["action"] == "report" for d in done)  # something stale left as it is: said, never "healthy"
    print("heal: needs attention" if failed else "heal: done" if acted else
          "heal: nothing to do, but see the report above" if reported else "heal: healthy")
    return 1 if failed else 0


def retrain(project: Project, force: bool = False, cwd: Path = Path(".")) -> dict[str, Any] | None:
    """Make a new candidate (retrain.command, else the repro section), then gate it. With a drift section the
    measured drift and the pure policy decide (cooldown included; --force skips only the cooldown); without
    one, the cooldown alone."""
    log = cwd / project.record(workspace.RETRAINING_LOG)
    history = audit.entries(log)
    measured = measure_drift(project, cwd) if project.drift is not None else None
    if measured is not None:
        verdict = _retrain_verdict(project, measured, cwd, force)
        if not verdict.retrain:
            print(f"retrain: skipped: {verdict.reason}")
            return None
    else:
        last = clock.parse_time(history[-1]["timestamp"]) if history else None
        if not force and last and datetime.now(UTC) - last < timedelta(hours=project.retrain.cooldown_hours):
            print(f"retrain: within the {project.retrain.cooldown_hours:g} h cooldown since "
                  f"{history[-1]['timestamp']}; skipped (--force to override)")
            return None
    started = time.perf_counter()
    command = project.retrain.command
    repro = project if command is None else project.model_copy(update={"repro": project.repro.model_copy(
        update={"command": command})})
    ok, note = _repro(repro, cwd, "retrain")
    outcome = "failed"
    if ok:
        step = _model_step(project, cwd, False)
        ok, note = act(project, step, cwd)
        outcome = {"promote": "promoted", "rollback": "rolled_back", "ok": "unchanged"}.get(step.action, "failed")
        ok = ok and outcome != "failed"
    drift = {} if measured is None else {"drift_score": measured["drift_score"],
                                         "current_md5": measured["inputs"]["current"]}
    entry = audit.append(log, "retrain", note, ok, outcome=outcome, **drift,
                         duration_s=round(time.perf_counter() - started, 1))
    print(f"retrain: {outcome}: {note}")
    return entry


def status(project: Project, cwd: Path = Path(".")) -> dict[str, Any]:
    """The guide's success metrics from this project's records (written to <records>/status.json)."""
    from selfheal.healing.status import compute

    logs = {"rollback": audit.entries(cwd / project.record(workspace.ROLLBACK_LOG)),
            "retrain": audit.entries(cwd / project.record(workspace.RETRAINING_LOG))}
    metrics = compute(logs, datetime.now(UTC))
    atomic.write_json(cwd / project.record(workspace.STATUS), metrics)
    return metrics
