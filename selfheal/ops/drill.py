"""`selfheal drill`: inject real faults into a throwaway copy of the project, let selfheal act as in production,
and score what happened. One body for every project kind.

The copy holds what a fresh clone holds: our pipeline's files with data of its own (ops.sandbox.create), or a
configured project's clone (ops.sandbox.clone: its commits and GTO tags, its outputs from the user's DVC cache,
no git remote) with the workspace's selfheal.yaml. Either gets a DVC remote inside the drill's temporary folder
and a service port of its own: the user's workspace, remote and service are never touched. The baseline is
`dvc repro` then `selfheal heal` (which promotes the first version), and must then be healthy.

Every trial starts from a copy of the baseline with the copy's service running (`selfheal recover` starts it,
when the project has one), injects one fault the project offers (ops.faults), and runs what production runs:
`selfheal heal` (its `--plan` first, which is when the problem is detected), or, for a crash or hang,
`selfheal recover --watch` under a steady request load or health polling. Each trial is judged from the outside
(ops.judge), never from selfheal's own logs, and passes when its outcome - healed, escalated, left_alone, missed
(a problem heal did not handle) or wrong (an action where none was right, or a bad end state) - is the fault's
expected one.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from selfheal.core import atomic, clock, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import current, project_file
from selfheal.ops import judge, sandbox
from selfheal.ops.drill_project import (
    Target,
    data_checked,
    faulted,
    health_url,
    own_port,
    retrain_writes,
    spec_of,
    target,
)
from selfheal.ops.faults import Fault, skipped
from selfheal.ops.scorecard import fmt, summarise
from selfheal.ops.trials import (
    Env,
    HealthPolls,
    Load,
    Trial,
    Watcher,
    busy_machine,
    conclude,
    final_health,
    heal,
    process_table,
    selfheal_command,
    unsettled,
    watch,
)

QUICK_SYNTH = {"rows": 3000, "current_rows": 800}  # the test suite's small data: a repro takes seconds
REFUSED = ("constant_target", "shuffled_target")  # data faults whose candidate is a bad model: production stays


# -- the baseline ---------------------------------------------------------------------------------------------

def _copy(source: Path, dest: Path, on: Target, quick: bool, say: Callable[[str], None]) -> None:
    """A fresh clone's worth of the project at `dest`, with the drill's own DVC remote and service port."""
    remote = dest.parent.parent / "remote"
    if on.ours:  # the files a clone holds and data of its own: never the workspace's tags or outputs
        sandbox.create(dest, source, **({"synth": QUICK_SYNTH} if quick else {}))
        (dest / ".dvc/config").write_text(
            f"[core]\n    remote = drill\n    autostage = true\n    analytics = false\n"
            f"['remote \"drill\"']\n    url = {remote}\n", encoding="utf-8")
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        say("drill: cloning the project (its git history and tags, its outputs from your DVC cache)")
        sandbox.clone(dest, source, remote)
        shutil.copy2(source / project_file(), dest / project_file())  # the configuration drilled, even uncommitted
    own_port(dest, on)
    sandbox.commit(dest, "drill: the project's configuration, the drill's DVC remote and service port")


def prepare(source: Path, dest: Path, on: Target, env: Env, quick: bool, say: Callable[[str], None]
            ) -> dict[str, Any]:
    """A healthy, promoted copy of the project at `dest`; returns facts about it (repro time, version)."""
    _copy(source, dest, on, quick, say)
    say("drill: preparing the baseline (dvc repro, then selfheal heal promotes the first version)")
    proc, repro = env.run(["dvc", "repro"], dest)
    if proc.returncode != 0:
        raise SelfHealError(f"drill: the baseline `dvc repro` failed: {proc.stderr.strip()[-500:]}")
    try:
        proc, _ = env.run([selfheal_command(), "heal"], dest)  # a configured service: heal starts it
        spec = spec_of(dest, on.config)
        prod = judge.production(dest, spec)
        said = " | ".join(proc.stdout.strip().splitlines()[-4:]) + "".join(
            f"; on stderr: {line}" for line in proc.stderr.strip().splitlines()[-1:])
        if proc.returncode != 0:
            raise SelfHealError(f"drill: the baseline heal on a fresh copy did not end healthy (exit "
                                f"{proc.returncode}); the project must heal cleanly before it is drilled. It said: "
                                f"{said}")
        if prod is None:
            raise SelfHealError(f"drill: the baseline heal left no {spec.stage} version of {spec.artifact}: {said}")
        sandbox.commit(dest, "drill baseline")
        sandbox.must(["dvc", "push", "-q"], dest)  # the drill's remote holds the baseline, as a user's would
        problems = judge.end_state(dest, spec, {}, set())
        plan, _ = env.run([selfheal_command(), "heal", "--plan"], dest)
        health = health_url(dest, on) if judge.servers(dest, set()) else None  # heal started the service
        if health and not _answers(health):
            problems.append(f"the service started by heal does not answer 200 on {health}")
        acting = unsettled(plan.stdout)
        if problems or acting or plan.returncode:
            raise SelfHealError("drill: the baseline is not healthy: " + " | ".join(problems + acting)
                                + plan.stderr.strip())
    finally:
        sandbox.kill_all_in(dest)  # the baseline's service: each trial starts its own copy's
    say(f"drill: baseline ready: {spec.artifact}@{prod[0]} in {spec.stage}, dvc repro {repro:.1f} s"
        + (f", its service answered {health}" if health else ""))
    return {"cold_repro_s": round(repro, 2), "version": prod[0]}


# -- the service ----------------------------------------------------------------------------------------------

def _answers(url: str, timeout: float = 2.0) -> bool:
    """The URL answers 200 (plain urllib: not selfheal's probe)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _start_service(root: Path, env: Env, url: str) -> int:
    """The copy's own service, started the way production does (`selfheal recover`); its pid (the one process
    whose parent is not in the copy: our service's workers are its children), read from the process table."""
    proc, _ = env.run([selfheal_command(), "recover"], root, timeout=120)
    running = judge.servers(root, set())
    tops = [p for p in running if p.ppid() not in {q.pid for q in running}]  # not its workers
    if proc.returncode != 0 or not _answers(url, 5.0) or len(tops) != 1:
        raise SelfHealError(f"drill: the service did not start in {root.name}: {(proc.stdout + proc.stderr)[-300:]}")
    return tops[0].pid


def _record(root: Path) -> dict[str, Any]:
    """A record our service's /predict takes, from the model's own metadata."""
    meta = atomic.read_json(root / workspace.MODEL_META, {}) or {}
    return {f["name"]: 1.0 if f["kind"] == "numeric" else (f.get("categories") or [""])[0]
            for f in meta.get("features", [])}


def _service_problems(root: Path, on: Target, url: str, prod_md5: str | None, crashed: int | None,
                      watcher: int | None) -> list[str]:
    """The service answers (ours: with production's model); a crashed or hung one was replaced."""
    healthy, served = final_health(url.removesuffix("/health")) if on.ours else (_answers(url, 5.0), None)
    problems = [] if healthy else [f"{url} does not answer 200"]
    if on.ours and healthy and served != prod_md5:
        problems.append("the service does not answer with production's model")
    if crashed is not None:
        problems += judge.replaced_problems(root, crashed, watcher or 0)
    return problems


# -- one trial ------------------------------------------------------------------------------------------------

def run_trial(fault: Fault, n: int, base: Path, work: Path, env: Env, rng: np.random.Generator, on: Target,
              spec: judge.Spec) -> Trial:
    root = work / f"{fault.name}-{n}"
    shutil.copytree(base, root, symlinks=True)
    t = Trial(fault.name, fault.group, fault.expected, n)
    on = Target(current(root), on.capabilities)  # the copy's own configuration: its service has a port of its own
    url = health_url(root, on)
    served: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.callback(sandbox.kill_all_in, root)  # the service and the watcher: nothing outlives the trial
        pid = _start_service(root, env, url) if url else None
        prod_before, tags_before, files_before = judge.production(root, spec), set(judge.tags(root)), \
            judge.snapshot(root)
        prod_md5 = _model_md5(root, spec, prod_before)
        load: Load | None = None
        if url and fault.group in ("model", "service"):  # is a rollback or a recovery seen by clients?
            load = Load(url.removesuffix("/health"), _record(root)) if on.ours else HealthPolls(url)
            stack.enter_context(load)
        watcher = Watcher(root, env) if fault.under_watch else None
        if watcher is not None:
            watcher.wait_ready()
        project = faulted(root, on, pid)
        t0 = time.monotonic()
        t.injected = fault.inject(project, rng)
        checked = data_checked(root, on, project) if fault.group == "data" and fault.expected == "healed" else None
        faulty = checked[0].read_bytes() if checked and checked[0] == checked[1] else None  # fixed in place
        if fault.then_repro:  # the candidate / the drift measurement heal then judges, as CI's reproduce step
            env.run(["dvc", "repro"], root)
        injected = judge.written(files_before, judge.snapshot(root))
        if watcher is not None and load is not None:
            watch(t, watcher, load, t0, prod_md5 if on.ours else None)
        else:
            heal(t, root, env)
        if load is not None:
            time.sleep(0.3)  # a last few requests against the end state
            t.requests, t.requests_failed = load.requests, load.failed
            t.healthy_share = round(sum(h for _, h, _ in load.probes) / len(load.probes), 4) if load.probes else None
        if url and fault.name != "port_taken_by_foreign_process":
            prod_after = judge.production(root, spec)
            crashed = pid if fault.under_watch else None
            served = _service_problems(root, on, url, _model_md5(root, spec, prod_after), crashed,
                                       watcher.proc.pid if watcher is not None else None)
        processes = process_table(root)
    escalated = t.exit_code not in (0, None)
    strict = fault.expected == "left_alone"
    allowed = retrain_writes(root, on) if fault.group == "drift" and fault.expected == "healed" else set()
    t.end_state = judge.end_state(root, spec, files_before, injected | allowed, escalated, strict) + served
    if checked is not None:
        t.end_state += judge.data_problems(root, checked[0], checked[1], project.target, faulty, spec.records)
    prod_after = judge.production(root, spec)
    prod_changed = (prod_after or ("",))[0] != (prod_before or ("",))[0]
    new_versions = bool(set(judge.tags(root)) - tags_before)
    since = judge.written(files_before, judge.snapshot(root)) - injected
    conclude(fault, t, prod_changed=prod_changed, new_versions=new_versions,
                   fixed=_fixed(fault, t, spec, since, prod_changed, new_versions))
    if not t.ok:
        t.evidence = {"production": prod_after, "production_before": prod_before, "processes": processes,
                      "last_failed_request_s": load.last_failure(t0) if load else None}
    return t


def _model_md5(root: Path, spec: judge.Spec, prod: tuple[str, str] | None) -> str | None:
    """The md5 production's commit pins for the model file our service reports (None for a directory model)."""
    if prod is None:
        return None
    return judge.production_outputs(root, spec, prod).get(str(workspace.MODEL))


def _fixed(fault: Fault, t: Trial, spec: judge.Spec, since: set[str], prod_changed: bool,
           new_versions: bool) -> bool:
    """Whether the fault itself is gone (the end state, checked separately, must also be good): a service back
    up; after drift in most columns, the retrain's effect outside the records (the training data grew, dvc.lock
    records it) and the gate's verdict (a new version, or production kept); a fixed data fault promoted or judged
    worse; any other fault with production kept."""
    if fault.under_watch:
        return t.time_to_recover_s is not None
    if fault.group == "drift" and fault.expected == "healed":
        return any(not judge.selfheal_own(p, spec) for p in since) and (new_versions or not prod_changed)
    if fault.group == "data" and fault.name not in REFUSED:
        return True
    return not prod_changed


# -- the drill ------------------------------------------------------------------------------------------------

def run(source: Path, faults: list[Fault], *, on: Target | None = None, repeat: int = 1, seed: int = 42,
        quick: bool = False, keep: Path | None = None, say: Callable[[str], None] = print, busy: int = 0
        ) -> dict[str, Any]:
    """Run the drill on a copy of the project at `source`; returns the scorecard (also written by the CLI).
    `busy`: CPU-bound processes kept running throughout, to test the drill's judging on a busy machine."""
    on = on or target(source)
    env = Env(mlflow=not quick)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True,
                              text=True).stdout.strip() or "unknown"
    started = clock.now_iso()
    tmp = Path(tempfile.mkdtemp(prefix="selfheal-drill-")) if keep is None else keep
    try:
        with busy_machine(busy):
            base = tmp / "baseline" / "project"
            rng = np.random.default_rng(seed)
            baseline = prepare(source, base, on, env, quick, say)
            spec = spec_of(base, on.config)
            trials: list[Trial] = []
            total = len(faults) * repeat
            for n in range(1, repeat + 1):
                for fault in faults:
                    one = run_trial(fault, n, base, tmp / "trials", env, rng, on, spec)
                    trials.append(one)
                    say(f"drill [{len(trials)}/{total}] {fault.name}: {one.outcome} "
                        f"({'as expected' if one.ok else 'expected ' + fault.expected}); "
                        f"detect {fmt(one.time_to_detect_s)} s, recover {fmt(one.time_to_recover_s)} s"
                        + (f", {one.requests_failed}/{one.requests} requests failed" if one.requests else ""))
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    card = {"project": {"kind": on.config.kind, "artifact": on.config.model.artifact, "name": source.resolve().name},
            "not_drilled": skipped(on.capabilities),
            "seed": seed, "revision": revision, "quick": quick, "repeat": repeat, "busy": busy, "started_at": started,
            "baseline": baseline, "trials": [asdict(t) for t in trials]}
    card["summary"] = summarise(trials, baseline)
    return card
