"""`selfheal drill`: inject real faults into a throwaway copy of the project, let selfheal act as in production,
and score what happened.

The copy is built from the project's files the way a fresh clone is (ops.sandbox), with its own DVC remote
inside the drill's temporary folder: the user's workspace and remote are never touched. One healthy, promoted
baseline is prepared (`dvc repro`, `selfheal heal`), then every trial starts from a copy of it, injects one
fault (selfheal.ops.faults), and runs what production runs: `selfheal heal` (its `--plan` first, which is
when the problem is detected), or, for service faults, `selfheal recover --watch` under a steady request load.

Each trial is judged from the outside, never from selfheal's own logs: production must be a registered
version (a git tag) whose md5 equals the model file's bytes, the clean data must have no missing, infinite or
duplicate values, every audit log must parse, dvc.lock must have consumed the raw data it was given, and a
running service must answer with production's md5. The outcome is then healed, escalated, left_alone,
missed (a problem heal did not handle) or wrong (an action where none was right, or a bad end state), and a
trial passes when its outcome is the fault's expected one.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfheal.core import atomic, clock, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project as GuardedProject
from selfheal.ops import sandbox
from selfheal.ops.faults import OURS, Fault, Project
from selfheal.ops.trials import (
    Env,
    Load,
    Trial,
    Watcher,
    busy_machine,
    final_health,
    free_port,
    heal,
    judge,
    md5_of,
    process_table,
    selfheal_command,
    unsettled,
    watch,
)
from selfheal.service import procs

QUICK_SYNTH = {"rows": 3000, "current_rows": 800}  # the test suite's small data: a repro takes seconds
LOGS = (workspace.DATA_FIX_LOG, workspace.ROLLBACK_LOG, workspace.RETRAINING_LOG, workspace.RECOVERY_LOG,
        workspace.ALERTS_LOG, workspace.HEAL_LOG)


# -- the baseline ---------------------------------------------------------------------------------------------

def prepare(source: Path, dest: Path, env: Env, quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """A healthy, promoted copy of the project at `dest`; returns facts about it (cold repro time, version)."""
    sandbox.create(dest, source, **({"synth": QUICK_SYNTH} if quick else {}))
    # the drill's own remote, inside its temporary folder: never the user's
    (dest / ".dvc/config").write_text(
        f"[core]\n    remote = drill\n    autostage = true\n    analytics = false\n"
        f"['remote \"drill\"']\n    url = {dest.parent / 'remote'}\n", encoding="utf-8")
    sandbox.set_params(dest, service_recovery={"service_url": f"http://127.0.0.1:{free_port()}"})
    sandbox.commit(dest, "drill baseline")
    say("drill: preparing the baseline (dvc repro, then selfheal heal promotes the first version)")
    proc, cold = env.run(["dvc", "repro"], dest)
    if proc.returncode != 0:
        raise SelfHealError(f"drill: the baseline `dvc repro` failed: {proc.stderr.strip()[-500:]}")
    proc, _ = env.run([selfheal_command(), "heal"], dest)
    production = production_tags(dest)
    if proc.returncode != 0 or not production.get("version"):
        raise SelfHealError(f"drill: the baseline heal did not promote a version: {(proc.stdout + proc.stderr)[-500:]}")
    sandbox.commit(dest, "drill baseline: promoted")
    plan, _ = env.run([selfheal_command(), "heal", "--plan"], dest)
    acting = unsettled(plan.stdout)
    if acting:
        raise SelfHealError("drill: the baseline is not healthy: " + " | ".join(acting))
    say(f"drill: baseline ready: {production['version']} in production, cold dvc repro {cold:.1f} s")
    return {"cold_repro_s": round(cold, 2), "version": production["version"]}


# -- the service side -----------------------------------------------------------------------------------------


def _record(root: Path) -> dict[str, Any]:
    meta = atomic.read_json(root / workspace.MODEL_META, {}) or {}
    return {f["name"]: 1.0 if f["kind"] == "numeric" else (f.get("categories") or [""])[0]
            for f in meta.get("features", [])}


def _start_service(root: Path, url: str) -> subprocess.Popen:
    host, port = url.removeprefix("http://").split(":")
    proc = procs.spawn(procs.service_argv(host, int(port)), root)
    _wait(url, lambda status: status in (200, 503))
    return proc


def _wait(url: str, ok: Callable[[int], bool], timeout: float = 90.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok(requests.get(url + "/health", timeout=1).status_code):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SelfHealError(f"drill: the service at {url} did not start within {timeout:g} s")


_FOREIGN = """
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "model_version": "v9.9.9", "model_md5": "0" * 32}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _foreign_service(root: Path, port: int) -> None:
    """Another project's service on our port (a plain HTTP server that answers /health 200)."""
    deadline = time.monotonic() + 10
    while True:  # the killed service's socket may linger for a moment
        proc = subprocess.Popen([sys.executable, "-c", _FOREIGN, str(port)], cwd=root, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        if proc.poll() is None or time.monotonic() > deadline:
            return
        time.sleep(0.2)


# -- judging --------------------------------------------------------------------------------------------------

def _tags(root: Path) -> dict[str, str | None]:
    """{version tag: the md5 in its message} read with plain git (independent of selfheal's registry code)."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname:strip=2)%00%(contents)%01", "refs/tags/"],
                         cwd=root, capture_output=True, text=True).stdout
    tags: dict[str, str | None] = {}
    for record in out.split("\x01"):
        name, _, message = record.strip("\n").partition("\x00")
        if "@v" in name:
            start = message.find("{")
            try:
                tags[name] = json.loads(message[start:]).get("md5") if start >= 0 else None
            except ValueError:
                tags[name] = None
    return tags


def production_tags(root: Path) -> dict[str, Any]:
    """{version, md5} of the latest `model#prod#N` assignment tag, read with plain git; {} before any."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname:strip=2)%00%(contents)%01",
                          "refs/tags/model#prod#*"], cwd=root, capture_output=True, text=True).stdout
    latest: tuple[int, str] | None = None
    for record in out.split("\x01"):
        name, _, message = record.strip("\n").partition("\x00")
        counter = name.rsplit("#", 1)[-1]
        start = message.find("{")
        if counter.isdigit() and start >= 0:
            try:
                version = json.loads(message[start:]).get("version")
            except ValueError:
                continue
            if latest is None or int(counter) > latest[0]:
                latest = (int(counter), str(version))
    if latest is None:
        return {}
    return {"version": latest[1], "md5": _tags(root).get(f"model@{latest[1]}")}


def end_state(root: Path, raw: Path, clean: Path, escalated: bool = False) -> list[str]:
    """What is wrong with the project's state, checked from the outside; [] when it is good.

    After an escalation the workspace may hold the candidate a person must decide on (e.g. a schema change that
    `selfheal promote --accept-schema-change` would take): then production's own bytes must be in the DVC cache,
    intact, so it can still be served and restored."""
    import pandas as pd

    from selfheal.versions import vcs

    problems = []
    prod = production_tags(root)
    tag_md5 = _tags(root).get(f"model@{prod.get('version')}")
    model_md5 = md5_of(root / workspace.MODEL)
    if not prod.get("version") or tag_md5 is None:
        problems.append(f"production {prod.get('version')} is not a registered version")
    elif model_md5 != tag_md5 and not (escalated and md5_of(vcs.cache_path(tag_md5, root)) == tag_md5):
        problems.append(f"{workspace.MODEL} md5 {model_md5} is not production {prod['version']}'s {tag_md5}")
    for log in LOGS:
        try:
            atomic.read_json(root / log)
        except ValueError:
            problems.append(f"{log} is not valid JSON")
    if (root / clean).is_file():
        df = pd.read_parquet(root / clean)
        numeric = df.select_dtypes("number")
        if df.isna().any().any() or not np.isfinite(numeric.to_numpy(dtype=float)).all():
            problems.append(f"{clean} has missing or infinite values")
        if df.duplicated().any():
            problems.append(f"{clean} has duplicate rows")
    return problems


def _raw_consumed(root: Path, raw: Path) -> bool:
    """dvc.lock's fix_data stage read exactly the raw file that is there now."""
    from selfheal.versions import vcs

    recorded = vcs.hashes(vcs.read_lock(root / workspace.DVC_LOCK).get("fix_data", {}), "deps").get(str(raw))
    return recorded == md5_of(root / raw)


# -- one trial ------------------------------------------------------------------------------------------------


def run_trial(fault: Fault, n: int, base: Path, work: Path, env: Env, rng: np.random.Generator,
              params: dict[str, Any]) -> Trial:
    root = work / f"{fault.name}-{n}"
    shutil.copytree(base, root, symlinks=True)
    t = Trial(fault.name, fault.group, fault.expected, n)
    data, url = params["data"], params["service_recovery"]["service_url"]
    raw, current, clean = Path(data["raw"]), Path(data["current"]), Path(data["clean"])
    before = production_tags(root)
    tags_before = _tags(root)
    serving = fault.needs_service or fault.group == "model"  # model faults: is a rollback seen by clients?
    load: Load | None = None
    with contextlib.ExitStack() as stack:
        stack.callback(sandbox.kill_all_in, root)  # runs last: after the load has stopped
        service = _start_service(root, url) if serving else None
        if serving:
            load = stack.enter_context(Load(url, _record(root)))
        watcher = Watcher(root, env) if fault.under_watch else None
        if watcher is not None:
            watcher.wait_ready()
        project = Project(root, root / raw, root / current, data["target"],
                          service.pid if service is not None else None, int(url.rsplit(":", 1)[1]))
        t0 = time.monotonic()
        t.injected = fault.inject(project, rng)
        if fault.name == "service_unhealthy":
            procs.terminate(project.service_pid or 0, 3.0)
            _start_service(root, url)
        elif fault.name == "port_taken_by_foreign_process":
            _foreign_service(root, project.port or 0)
        if fault.then_repro:  # the candidate / the drift measurement heal then judges
            env.run(["dvc", "repro"], root)
        if watcher is not None and load is not None:
            watch(t, watcher, load, t0, before.get("md5"))
        else:
            heal(t, root, env)
        if load is not None:
            time.sleep(0.3)  # a last few requests against the end state
        served = final_health(url) if serving else (False, None)
        processes = process_table(root)
    if load is not None:
        t.requests, t.requests_failed = load.requests, load.failed
        t.healthy_share = round(sum(h for _, h, _ in load.probes) / len(load.probes), 4) if load.probes else None
    after = production_tags(root)
    t.end_state = end_state(root, raw, clean, escalated=t.exit_code not in (0, None))
    if serving and fault.name != "port_taken_by_foreign_process" and served[1] != after.get("md5"):
        t.end_state.append("the service does not answer with production's model")
    prod_changed = after.get("version") != before.get("version")
    new_versions = bool(set(_tags(root)) - set(tags_before))
    judge(fault, t, prod_changed=prod_changed, new_versions=new_versions,
          fixed=_fixed(fault, t, root, raw, prod_changed))
    if not t.ok:
        t.evidence = {"served": {"healthy": served[0], "md5": served[1]} if serving else None,
                      "production": after, "last_failed_request_s": load.last_failure(t0) if load else None,
                      "processes": processes}
    return t


def _fixed(fault: Fault, t: Trial, root: Path, raw: Path, prod_changed: bool) -> bool:
    """Whether the fault itself is gone (the end state, checked separately, must also be good)."""
    if fault.under_watch:
        return t.time_to_recover_s is not None
    if fault.group == "data":
        refused = fault.name in ("constant_target", "shuffled_target")  # a bad model: production must stay
        return _raw_consumed(root, raw) and (not prod_changed if refused else True)
    if fault.name == "candidate_below_threshold":
        return not prod_changed
    if fault.name == "drift_most_columns":
        return prod_changed  # a retrained model was promoted
    return True  # the model file faults and the service: the end state says it all


# -- the scorecard --------------------------------------------------------------------------------------------

def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(trials: list[Trial], baseline: dict[str, Any]) -> dict[str, Any]:
    """Per fault kind, and the guide's success metrics computed from the drill."""
    kinds: dict[str, dict[str, Any]] = {}
    for t in trials:
        k = kinds.setdefault(t.fault, {"group": t.group, "expected": t.expected, "trials": 0, "outcomes": {},
                                       "passed": 0})
        k["trials"] += 1
        k["outcomes"][t.outcome] = k["outcomes"].get(t.outcome, 0) + 1
        k["passed"] += t.ok
    for name, k in kinds.items():
        mine = [t for t in trials if t.fault == name]
        k["median_detect_s"] = _median([t.time_to_detect_s for t in mine])
        k["median_recover_s"] = _median([t.time_to_recover_s for t in mine])
        k["requests"] = sum(t.requests for t in mine)
        k["requests_failed"] = sum(t.requests_failed for t in mine)
        k["end_state_good"] = sum(t.end_state_good for t in mine)
    healed = [t for t in trials if t.outcome == "healed"]
    watch = [t for t in healed if t.fault in ("service_crash", "service_hang")]
    drift = [t for t in healed if t.fault == "drift_most_columns"]
    service = [t for t in trials if t.healthy_share is not None and t.group == "service"]
    drift_s = _median([t.time_to_recover_s for t in drift])
    return {
        "trials": len(trials),
        "passed": sum(t.ok for t in trials),
        "missed": sum(t.outcome == "missed" for t in trials),
        "wrong": sum(t.outcome == "wrong" for t in trials),
        "auto_fix_success_rate": round(100 * sum(t.ok for t in trials) / len(trials), 1) if trials else None,
        "rollbacks": sum(any(a in t.action for a in ("rollback", "restore")) for t in trials),
        "mttr_s": _median([t.time_to_recover_s for t in healed]),
        "mttr_service_crash_s": _median([t.time_to_recover_s for t in watch if t.fault == "service_crash"]),
        "mttr_service_hang_s": _median([t.time_to_recover_s for t in watch if t.fault == "service_hang"]),
        "failed_requests_during_rollbacks": sum(t.requests_failed for t in trials if t.group == "model"),
        "drift_response_s": drift_s,
        "drift_response_vs_cold_repro": round(drift_s / baseline["cold_repro_s"], 2) if drift_s else None,
        "service_uptime_pct": round(100 * statistics.fmean(t.healthy_share or 0.0 for t in service), 2)
        if service else None,
        "kinds": kinds,
    }


def markdown(card: dict[str, Any]) -> str:
    s = card["summary"]
    project = card.get("project") or {"kind": "selfheal", "artifact": "model", "name": "selfheal"}
    ours = project["kind"] == "selfheal"
    about = ("our own pipeline, " + ("quick" if card["quick"] else "default") + " data" if ours
             else f"guarded through selfheal.yaml, kind {project['kind']}, its own data")
    lines = [
        f"# selfheal drill: {s['passed']}/{s['trials']} trials as expected",
        "",
        f"Project `{project['name']}` ({about}), artifact `{project['artifact']}`. Seed {card['seed']}, revision "
        f"`{card['revision']}`, {card['repeat']} trial(s) per kind, {card['started_at']}; baseline "
        f"{card['baseline']['version']}, {'cold' if ours else 'baseline'} `dvc repro` "
        f"{card['baseline']['cold_repro_s']} s. Missed: {s['missed']}, wrong actions: {s['wrong']}.",
        "",
        "Each trial starts from a fresh copy of the baseline: no restart budget, cooldown or record carries over "
        "from one trial or repeat to the next. Outages are measured from the outside (the load's requests and a "
        "health probe); a trial is missed only when the service was down or wrong at the end."
        + (f" Busy machine: {card['busy']} CPU-bound process(es) ran throughout." if card.get("busy") else ""),
        "",
    ]
    groups = {k["group"] for k in s["kinds"].values()}
    for group in ("data", "model", "drift", "service", "config"):
        rows = [(n, k) for n, k in s["kinds"].items() if k["group"] == group]
        if not rows:
            continue
        lines += [f"## {group}", "", "| fault | expected | outcome | pass | detect s | recover s | failed requests "
                  "| end state good |", "|---|---|---|---|---|---|---|---|"]
        for name, k in rows:
            outcome = ", ".join(f"{o} {c}" for o, c in k["outcomes"].items())
            failed = f"{k['requests_failed']}/{k['requests']}" if k["requests"] else "-"
            lines.append(f"| {name} | {k['expected']} | {outcome} | {k['passed']}/{k['trials']} | "
                         f"{_fmt(k['median_detect_s'])} | {_fmt(k['median_recover_s'])} | {failed} | "
                         f"{k['end_state_good']}/{k['trials']} |")
        lines.append("")
    lines += [
        "## The guide's success metrics, measured",
        "",
        f"- Auto-fix success rate: {_fmt(s['auto_fix_success_rate'])} % of trials ended as expected",
        f"- Rollbacks (and restores) performed: {s['rollbacks']}"
        + (f"; failed requests during them: {s['failed_requests_during_rollbacks']}"
           if any(k["requests"] for k in s["kinds"].values()) else " (no service under load in this drill)"),
        f"- Mean time to recovery (median of healed trials): {_fmt(s['mttr_s'])} s"
        + (f"; service crash in watch mode {_fmt(s['mttr_service_crash_s'])} s, hang "
           f"{_fmt(s['mttr_service_hang_s'])} s" if "service" in groups else ""),
    ]
    if "drift" in groups and ours:
        lines.append(f"- Drift response (drift detected to a promoted retrained model): {_fmt(s['drift_response_s'])}"
                     f" s, {_fmt(s['drift_response_vs_cold_repro'])}x the cold `dvc repro`")
    elif "drift" in groups:  # the baseline's repro of a cloned project is not cold: no ratio
        lines.append(f"- Drift response (drift detected to the retrained candidate judged by the gate): "
                     f"{_fmt(s['drift_response_s'])} s")
    if "service" in groups:
        lines.append(f"- Service uptime during the service trials: {_fmt(s['service_uptime_pct'])} % of health probes")
    lines.append("")
    if card.get("not_drilled"):
        lines += ["## Not drilled on this project", "", "Fault kinds that need what this project does not offer "
                  "(docs/guarding.md says how to offer it):", ""]
        lines += [f"- {name}: needs {needs}" for name, needs in card["not_drilled"].items()]
        lines.append("")
    problems = [t for t in card["trials"] if not t["ok"]]
    if problems:
        lines += ["## Trials not as expected", ""]
        for t in problems:
            lines.append(f"- {t['fault']} #{t['repeat']}: {t['outcome']} (expected {t['expected']}); "
                         f"{'; '.join(t['end_state']) or t['note'] or t['action']}")
            evidence = t.get("evidence") or {}
            if evidence:  # what the judge saw: a reader tells a fault from a judging error
                lines.append("  - evidence: " + "; ".join(
                    f"{key}: {'; '.join(value) or 'none' if isinstance(value, list) else _fmt(value)}"
                    for key, value in evidence.items()))
        lines.append("")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


@dataclass(frozen=True)
class Target:
    """The project a drill runs on: our own pipeline, or a guarded one (selfheal.yaml, kind dvc)."""

    kind: str  # selfheal | dvc
    artifact: str
    capabilities: frozenset[str]
    config: GuardedProject | None = None


def target(source: Path) -> Target:
    from selfheal.core import project
    from selfheal.versions import registry

    config = project.find(source)
    if config is None:
        return Target("selfheal", registry.ARTIFACT, OURS)
    from selfheal.core.errors import SelfHealError
    from selfheal.versions import vcs

    folder = vcs.folder(source)
    if folder:
        raise SelfHealError(f"selfheal drill: this pipeline sits in {folder}/ of its repository; the "
                            "drill copies and drills a pipeline at the top of its repository only (heal, promote, "
                            "rollback and versions work here)")
    from selfheal.ops import drill_guarded

    return Target("dvc", config.model.artifact, drill_guarded.capabilities(config, source), config)


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
            if on.config is None:
                import yaml

                baseline = prepare(source, base, env, quick, say)
                params = yaml.safe_load((base / workspace.PARAMS).read_text(encoding="utf-8"))

                def trial(fault: Fault, n: int) -> Trial:
                    return run_trial(fault, n, base, tmp / "trials", env, rng, params)
            else:
                from selfheal.ops import drill_guarded

                config = on.config
                baseline = drill_guarded.prepare(source, base, config, env, say)
                spec = drill_guarded.spec_of(base, config)

                def trial(fault: Fault, n: int) -> Trial:
                    return drill_guarded.run_trial(fault, n, base, tmp / "trials", env, rng, config, spec)
            trials: list[Trial] = []
            total = len(faults) * repeat
            for n in range(1, repeat + 1):
                for fault in faults:
                    one = trial(fault, n)
                    trials.append(one)
                    say(f"drill [{len(trials)}/{total}] {fault.name}: {one.outcome} "
                        f"({'as expected' if one.ok else 'expected ' + fault.expected}); "
                        f"detect {_fmt(one.time_to_detect_s)} s, recover {_fmt(one.time_to_recover_s)} s"
                        + (f", {one.requests_failed}/{one.requests} requests failed" if one.requests else ""))
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    from selfheal.ops.faults import skipped

    card = {"project": {"kind": on.kind, "artifact": on.artifact, "name": source.resolve().name},
            "not_drilled": skipped(on.capabilities),
            "seed": seed, "revision": revision, "quick": quick, "repeat": repeat, "busy": busy, "started_at": started,
            "baseline": baseline, "trials": [asdict(t) for t in trials]}
    card["summary"] = summarise(trials, baseline)
    return card
