"""`selfheal heal` / `retrain` / `status` for a configured project (selfheal.yaml): the gate on any DVC pipeline.

One pass: (data) when a configured data dep changed since dvc.lock recorded it, make a candidate (the repro
section); (model) a candidate whose model outputs differ from production is judged on the configured metric -
promoted when it passes, rolled back to production (every output md5-verified) when it does not; a model output
missing or altered in the workspace is restored. Everything selfheal writes goes to the records directory.
Observing reads dvc.lock, the metrics file, the GTO tags and one md5 per file of the version stages' outputs
(a directory through its manifest in the DVC cache), so a heal on a healthy project stays well under a second.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, clock
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project
from selfheal.versions import checkout, configured, vcs

RETRAINING_LOG = "retraining_log.json"
STATUS = "status.json"


@dataclass(frozen=True)
class Step:
    step: str  # data | model
    action: str  # ok | repro | promote | rollback | restore | refuse
    reason: str

    @property
    def acts(self) -> bool:
        return self.action not in ("ok", "refuse")


def _data_changed(project: Project, lock: dict[str, Any], cwd: Path) -> list[str]:
    """Configured data deps whose bytes differ from what dvc.lock recorded (or that are missing)."""
    if project.data is None:
        return []
    recorded: dict[str, str] = {}
    for entry in lock.values():
        recorded.update(vcs.hashes(entry, "deps"))
    return [d for d in project.data.deps if d in recorded and (not (cwd / d).is_file()
                                                                or atomic.md5_file(cwd / d) != recorded[d])]


def _altered(hashes: dict[str, str], cwd: Path) -> list[str]:
    """A candidate's model outputs missing from the workspace, or files whose bytes are not what dvc.lock pins
    (the gate then judges it; a rollback puts every file of production's directories back anyway)."""
    out = []
    for path, md5 in hashes.items():
        target = cwd / path
        if md5.endswith(".dir"):
            if not target.is_dir():
                out.append(path)
        elif not target.is_file() or atomic.md5_file(target) != md5:
            out.append(path)
    return out


def _not_as_pinned(project: Project, lock: dict[str, Any], cwd: Path) -> list[str]:
    """Production's version outputs (the model, and e.g. the evaluation's `eval/` directory) that are not the
    bytes dvc.lock pins: a directory is checked file by file against its manifest in the cache."""
    return [path for stage in project.model.stages for path, md5 in vcs.hashes(lock.get(stage) or {}).items()
            if md5 and checkout.differs(path, md5, cwd)]


def decide(project: Project, cwd: Path = Path(".")) -> list[Step]:
    """What heal does now, and why (nothing is changed)."""
    lock = vcs.read_lock(cwd / "dvc.lock")
    changed = _data_changed(project, lock, cwd)
    if changed:
        return [Step("data", "repro", f"data changed since dvc.lock: {', '.join(changed)}")]
    try:
        _, hashes = configured.candidate(project, cwd)
    except SelfHealError as exc:
        return [Step("model", "refuse", str(exc))]
    reg = configured.Registry(project, cwd)
    prod = reg.production()
    ident = configured.identity(hashes)
    if prod is not None and ident == reg.identity(prod):
        altered = _not_as_pinned(project, lock, cwd)
        if altered:
            return [Step("model", "restore", f"{', '.join(altered)} differ from {prod.tag} as dvc.lock pins it")]
        return [Step("model", "ok", f"{prod.tag} is {project.gate.stage}")]
    altered = _altered(hashes, cwd)
    if altered:
        return [Step("model", "refuse" if prod is None else "restore",
                     f"{', '.join(altered)} differ from dvc.lock; run `dvc checkout` or `dvc repro`")]
    metric = configured.workspace_metric(project, cwd)
    reasons = configured.judge(metric, reg.metric(prod) if prod else None, project)
    if not reasons:
        against = f" vs {prod.tag}" if prod else " (first production version)"
        return [Step("model", "promote", f"candidate {project.gate.key} {metric:.4f} passes the gate{against}")]
    if prod is None:
        return [Step("model", "refuse", "candidate fails the gate and no production version exists: "
                     + "; ".join(reasons))]
    return [Step("model", "rollback", "candidate fails the gate: " + "; ".join(reasons))]


def _repro(project: Project, cwd: Path, reason: str) -> tuple[bool, str]:
    started = time.perf_counter()
    argv = project.repro.argv()
    if argv is None:
        proc = subprocess.run(project.repro.command or "", shell=True, cwd=cwd, capture_output=True, text=True,
                              env=vcs.env())
    else:
        proc = vcs.dvc(*argv, cwd=cwd, check=False)
    error = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:]) if proc.returncode else ""
    audit.append(cwd / project.record(configured.HEAL_LOG), "repro", reason, proc.returncode == 0,
                 command=project.repro.command or f"dvc {' '.join(argv or [])}", error=error or None,
                 duration_s=round(time.perf_counter() - started, 1))
    return proc.returncode == 0, error or "candidate reproduced"


def reloader(project: Project) -> Any:
    """POST service.reload (when configured) once production's bytes changed; a failure is noted, not raised."""
    if project.service is None:
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


def act(project: Project, step: Step, cwd: Path = Path(".")) -> tuple[bool, str]:
    try:
        if step.action == "repro":
            return _repro(project, cwd, step.reason)
        if step.action == "promote":
            return True, configured.promote(project, reason=step.reason, reload=reloader(project), cwd=cwd)["tag"]
        if step.action in ("rollback", "restore"):
            prod = configured.Registry(project, cwd).production() if step.action == "restore" else None
            entry = configured.rollback(project, version=prod.name if prod else None, reason=step.reason,
                                        reload=reloader(project), cwd=cwd)
            return True, entry["tag"]
    except SelfHealError as exc:
        return False, str(exc)
    return step.action == "ok", step.reason


def heal(project: Project, plan_only: bool = False, cwd: Path = Path(".")) -> int:
    """Run (or print) the decisions until nothing is left to do; 0 when healthy or healed."""
    started = time.perf_counter()
    steps = decide(project, cwd)
    if plan_only:
        print("heal plan (nothing is changed):")
        print("\n".join(f"  {i}. {s.step:<6} {s.action:<9} {s.reason}" for i, s in enumerate(steps, 1)))
        return 0
    done: list[dict[str, Any]] = []
    failed = False
    for _ in range(3):  # a repro makes a candidate, which the gate then judges
        step = steps[0]
        print(f"heal: {step.step}: {step.action}: {step.reason}")
        if not step.acts:
            failed = step.action == "refuse"
            done.append({"step": step.step, "action": step.action, "reason": step.reason, "ok": not failed})
            break
        ok, note = act(project, step, cwd)
        print(f"heal: {step.step}: {'done' if ok else 'FAILED'}: {note}")
        done.append({"step": step.step, "action": step.action, "reason": step.reason, "ok": ok, "note": note})
        if not ok:
            failed = True
            break
        steps = decide(project, cwd)
    acted = any(d["action"] not in ("ok", "refuse") for d in done)
    if acted or failed:
        audit.append(cwd / project.record(configured.HEAL_LOG), "heal",
                     "; ".join(f"{d['step']}: {d['action']}" for d in done), not failed, decisions=done,
                     duration_s=round(time.perf_counter() - started, 2))
    print("heal: healthy" if not acted and not failed else f"heal: {'needs attention' if failed else 'done'}")
    return 1 if failed else 0


def retrain(project: Project, force: bool = False, cwd: Path = Path(".")) -> dict[str, Any] | None:
    """Make a new candidate (retrain.command, else the repro section), then gate it; honours the cooldown."""
    log = cwd / project.record(RETRAINING_LOG)
    history = audit.entries(log)
    last = clock.parse_time(history[-1]["timestamp"]) if history else None
    cooldown = timedelta(hours=project.retrain.cooldown_hours)
    if not force and last and datetime.now(UTC) - last < cooldown:
        print(f"retrain: within the {project.retrain.cooldown_hours:g} h cooldown since {history[-1]['timestamp']}; "
              "skipped (--force to override)")
        return None
    started = time.perf_counter()
    command = project.retrain.command
    repro = project if command is None else project.model_copy(update={"repro": project.repro.model_copy(
        update={"command": command})})
    ok, note = _repro(repro, cwd, "retrain")
    outcome = "failed"
    if ok:
        steps = decide(project, cwd)
        ok, note = act(project, steps[0], cwd)
        outcome = {"promote": "promoted", "rollback": "rolled_back", "ok": "unchanged"}.get(steps[0].action, "failed")
        ok = ok and outcome != "failed"
    entry = audit.append(log, "retrain", note, ok, outcome=outcome,
                         duration_s=round(time.perf_counter() - started, 1))
    print(f"retrain: {outcome}: {note}")
    return entry


def status(project: Project, cwd: Path = Path(".")) -> dict[str, Any]:
    """The seed's success metrics from this project's records (written to <records>/status.json)."""
    from selfheal.healing.status import compute

    logs = {"rollback": audit.entries(cwd / project.record(configured.ROLLBACK_LOG)),
            "retrain": audit.entries(cwd / project.record(RETRAINING_LOG))}
    metrics = compute(logs, datetime.now(UTC))
    atomic.write_json(cwd / project.record(STATUS), metrics)
    return metrics
