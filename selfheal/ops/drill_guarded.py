"""`selfheal drill` on a guarded project (selfheal.yaml, kind dvc): the same trials, with a foreign project's
ways of being right.

The copy is a fresh clone of the user's repository (ops.sandbox.clone: its commits and GTO tags, its outputs
from the user's DVC cache, no git remote, a DVC remote of its own in the drill's temporary folder) with the
workspace's selfheal.yaml (its service moved to a free port when service.start takes `{port}`). The baseline
is `dvc repro` then `selfheal heal` (which promotes the first version when none is in production, and starts
the configured service), and must then be healthy, the service answering its health URL. Each trial starts its
copy's own service (`selfheal recover`) when one is configured, injects one fault that applies to the project
(faults.applicable), runs `selfheal heal --plan` and `selfheal heal` (service faults: `selfheal recover
--watch` while the health URL is polled), stops every process in the copy, and is judged with plain git, YAML,
md5, pandas and the process table, never selfheal's own code or logs:
- production is the latest `<artifact>#<stage>#N` GTO tag; the version tag on its commit names the version,
  and every output of the version stages (files, and directories file by file through their `.dir` manifest
  in the DVC cache) matches the md5 that commit's dvc.lock records;
- every JSON file under the records directory (`.selfheal/`) parses;
- no file outside the records directory and the pipeline's own outputs (dvc.lock, stage outputs, DVC's
  .gitignores) was written, except what the fault itself wrote (and, after drift, the pipeline's input data the
  retrain command folds a batch into); after an escalation or where nothing was to be done, not even those;
- a data fault: the data.fix file has no missing values, duplicate rows or numbers written as text, its faulty
  bytes are backed up under the records, and dvc.lock's candidate was made from the fixed file;
- drift in most columns: the retrain command changed something outside the records (the data grew, dvc.lock);
- a service crash or hang: the health URL answers 200 again, a live process other than the injected one runs
  in the copy, and the injected one is gone; the time to the first 200 after a failed poll is the recovery.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, load, project_file
from selfheal.ops import faults as catalogue
from selfheal.ops import sandbox
from selfheal.ops.trials import (
    Env,
    Load,
    Trial,
    Watcher,
    heal,
    judge,
    process_table,
    selfheal_command,
    unsettled,
    watch,
)

TABULAR = {".csv": ",", ".tsv": "\t"}
SKIP = {".git", ".dvc", "__pycache__"}


@dataclass(frozen=True)
class Spec:
    """What the judge needs of the project, read once from the healthy baseline (a fault may break the files)."""

    artifact: str
    stage: str  # the GTO stage meaning production
    stages: tuple[str, ...]  # the version stages
    records: Path
    outputs: tuple[str, ...]  # every stage output dvc.lock records


def _lock(root: Path) -> dict[str, Any]:
    path = root / "dvc.lock"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {} if path.exists() else {}


def _paths(entry: dict[str, Any], key: str) -> dict[str, str]:
    return {item["path"]: item.get("md5", "") for item in entry.get(key) or []}


def _data_file(root: Path) -> Path | None:
    """A CSV/TSV the pipeline reads and no stage writes: where new training data arrives."""
    return next((root / d for d in sorted(_inputs(root)) if Path(d).suffix in TABULAR and (root / d).is_file()), None)


def _inputs(root: Path) -> set[str]:
    """The files the pipeline reads and no stage writes (its data), as dvc.lock records them."""
    lock = _lock(root)
    produced = {p for entry in lock.values() for p in _paths(entry, "outs")}
    return {p for entry in lock.values() for p in _paths(entry, "deps")} - produced


def _dir_outs(root: Path, config: Project) -> tuple[Path, ...]:
    lock = _lock(root)
    return tuple(Path(p) for s in config.model.stages for p, md5 in _paths(lock.get(s) or {}, "outs").items()
                 if md5.endswith(".dir"))


def capabilities(config: Project, root: Path) -> frozenset[str]:
    """What the project offers the fault catalogue: `dvc`, `model`, the optional sections its selfheal.yaml sets,
    `output_dir` and `tabular_data` when its pipeline has them, and what the sections' kinds need to be injected
    and judged: `data_fix_csv` (a CSV under data.fix), `drift_columns` (see _shiftable), `service_start`
    (a health URL and a start command)."""
    caps = {"dvc", "model"} | {name for name in config.model_fields_set
                               if name not in ("kind", "model", "gate", "records")}
    if _dir_outs(root, config):
        caps.add("output_dir")
    if _data_file(root) is not None:
        caps.add("tabular_data")
    if _fix_csv(root, config) is not None:
        caps.add("data_fix_csv")
    if _shiftable(root, config):
        caps.add("drift_columns")
    if config.service is not None and config.service.health and config.service.start:
        caps.add("service_start")
    if config.drill is not None and config.drill.degrade:
        caps.add("drill_degrade")
    return frozenset(caps)


def _fix_csv(root: Path, config: Project) -> Path | None:
    """The first CSV under data.fix that exists: where the drill's data faults go."""
    names = config.data.fix if config.data is not None else []
    return next((root / n for n in names if n.endswith(".csv") and (root / n).is_file()), None)


def _target(config: Project) -> str:
    return (config.data.target if config.data is not None else None) or ""


def _compared(root: Path, config: Project) -> tuple[str, ...]:
    """The columns drift is measured on, as heal measures it: drift.columns, else every column the reference
    and the current batch share but the target."""
    import pandas as pd

    d = config.drift
    if d is None or d.columns:
        return tuple(d.columns or []) if d is not None else ()
    ref = root / d.reference
    header = list(pd.read_parquet(ref).columns if ref.suffix == ".parquet" else pd.read_csv(ref, nrows=0).columns)
    current = pd.read_csv(root / d.current, nrows=0).columns
    return tuple(c for c in header if c in current and c != _target(config))


def _shiftable(root: Path, config: Project) -> tuple[str, ...]:
    """The compared numeric columns of drift.current a drift fault may shift, judged against the baseline batch's
    own drift: none already drifted, and shifting one of them keeps the share of drifted columns below
    drift_threshold while shifting 3/4 of them reaches it. (): the drift kinds cannot be judged on this project."""
    import pandas as pd

    from selfheal.healing.measure import measure_drift

    d = config.drift
    if d is None or not d.current.endswith(".csv") or not (root / d.current).is_file() \
            or not (root / d.reference).is_file():
        return ()
    compared = _compared(root, config)
    try:
        baseline = measure_drift(config, root, remember=False)
    except SelfHealError:
        return ()
    drifted = {c for c, col in baseline["columns"].items() if col["drifted"]}
    numeric = [c for c in catalogue.numeric_columns(pd.read_csv(root / d.current, dtype=str, keep_default_na=False,
                                                                nrows=2000), _target(config), compared)
               if c not in drifted]
    most = max(1, len(numeric) * 3 // 4)
    fits = len(numeric) >= 2 and (len(drifted) + 1) / len(compared) < d.drift_threshold \
        <= (len(drifted) + most) / len(compared)
    return tuple(numeric) if fits else ()


# -- the baseline ---------------------------------------------------------------------------------------------

def prepare(source: Path, dest: Path, config: Project, env: Env, say: Any) -> dict[str, Any]:
    """A healthy, promoted clone of the guarded project at `dest`; returns facts about it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    say("drill: cloning the project (its git history and tags, its outputs from your DVC cache)")
    sandbox.clone(dest, source, dest.parent.parent / "remote")
    shutil.copy2(source / project_file(), dest / project_file())  # the configuration being drilled, even uncommitted
    own_port(dest)
    sandbox.must(["git", "add", "--", str(project_file()), ".dvc/config"], dest)
    sandbox.must(["git", "commit", "-q", "--allow-empty", "-m", "drill: selfheal.yaml and the drill's DVC remote"],
                 dest)
    say("drill: preparing the baseline (dvc repro, then selfheal heal)")
    proc, repro = env.run(["dvc", "repro"], dest)
    if proc.returncode != 0:
        raise SelfHealError(f"drill: the baseline `dvc repro` failed: {proc.stderr.strip()[-500:]}")
    try:
        proc, _ = env.run([selfheal_command(), "heal"], dest)  # a service section: heal starts the service
        spec = spec_of(dest, config)
        prod = production(dest, spec)
        if proc.returncode != 0 or prod is None:
            raise SelfHealError(f"drill: the baseline heal left no {spec.stage} version of {spec.artifact}: "
                                f"{(proc.stdout + proc.stderr)[-500:]}")
        sandbox.must(["git", "add", "-A"], dest)
        sandbox.must(["git", "commit", "-q", "--allow-empty", "-m", "drill baseline"], dest)
        sandbox.must(["dvc", "push", "-q"], dest)  # the drill's remote holds the baseline, as a user's would
        problems = end_state(dest, spec, {}, set())
        plan, _ = env.run([selfheal_command(), "heal", "--plan"], dest)
        acting = unsettled(plan.stdout)
        health = _health_url(dest)
        if health and not _answers(health):
            problems.append(f"the service started by heal does not answer 200 on {health}")
        if problems or acting or plan.returncode:
            raise SelfHealError("drill: the baseline is not healthy: " + " | ".join(problems + acting)
                                + plan.stderr.strip())
    finally:
        sandbox.kill_all_in(dest)  # the baseline's service: each trial starts its own copy's
    say(f"drill: baseline ready: {spec.artifact}@{prod[0]} in {spec.stage}, dvc repro {repro:.1f} s"
        + (f", its service answered {health}" if health else ""))
    return {"cold_repro_s": round(repro, 2), "version": prod[0]}


def own_port(root: Path) -> None:
    """Give the copy's service a free port of its own (never the one the user's service may be using): the port
    of service.health, and of service.reload on the same address, when service.start takes `{port}`."""
    from urllib.parse import urlsplit

    from selfheal.ops.trials import free_port

    path = root / project_file()
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    service = doc.get("service") or {}
    if not service.get("health") or "{port}" not in str(service.get("start") or ""):
        return
    old = urlsplit(service["health"])
    new = f"{old.hostname}:{free_port()}"
    for key in ("health", "reload"):
        url = urlsplit(service.get(key) or "")
        if url.netloc == old.netloc:
            service[key] = url._replace(netloc=new).geturl()
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _health_url(root: Path) -> str | None:
    service = (yaml.safe_load((root / project_file()).read_text(encoding="utf-8")) or {}).get("service") or {}
    return service.get("health") if service.get("start") else None


def _answers(url: str, timeout: float = 2.0) -> bool:
    """The URL answers 200 (plain urllib: not selfheal's probe)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def spec_of(root: Path, config: Project) -> Spec:
    outputs = tuple(sorted({p for entry in _lock(root).values() for p in _paths(entry, "outs")}))
    return Spec(config.model.artifact, config.gate.stage, tuple(config.model.stages), config.records_dir, outputs)


# -- judging, from the outside --------------------------------------------------------------------------------

def _git(root: Path, *args: str) -> str:
    return sandbox.must(["git", *args], root)


def tags(root: Path) -> dict[str, str]:
    """{tag: the commit it points at}, read with plain git."""
    out = _git(root, "for-each-ref", "--format=%(refname:strip=2) %(*objectname) %(objectname)", "refs/tags/")
    return {parts[0]: parts[1] for parts in (line.split() for line in out.splitlines()) if len(parts) >= 2}


def production(root: Path, spec: Spec) -> tuple[str, str] | None:
    """(version, commit) of the latest `<artifact>#<stage>#N` tag; None when there is none."""
    tagged = spec.artifact.replace(":", "=")  # GTO's `<folder>:<name>` is `<folder>=<name>` in a tag
    assign = re.compile(rf"^{re.escape(tagged)}#{re.escape(spec.stage)}#(\d+)$")
    version = re.compile(rf"^{re.escape(tagged)}@v(\d+)\.(\d+)\.(\d+)$")
    known = tags(root)
    latest = max(((int(m.group(1)), commit) for name, commit in known.items() if (m := assign.match(name))),
                 default=None)
    if latest is None:
        return None
    on_commit = sorted((tuple(map(int, m.groups())), name) for name, commit in known.items()
                       if commit == latest[1] and (m := version.match(name)))
    return (on_commit[-1][1].split("@", 1)[1] if on_commit else "?"), latest[1]


def md5_of(path: Path) -> str | None:
    return atomic.md5_file(path) if path.is_file() else None


def _directory_problems(root: Path, out: str, md5: str) -> list[str]:
    """A directory output against its `.dir` manifest in the DVC cache: the same files, each with its md5."""
    manifest_path = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    if hashlib.md5(manifest_path.read_bytes() if manifest_path.is_file() else b"").hexdigest() != md5[:-4]:
        return [f"{out}: the manifest {md5} is not intact in the DVC cache"]
    expected = {e["relpath"]: e["md5"] for e in json.loads(manifest_path.read_bytes())}
    directory = root / out
    present = {f.relative_to(directory).as_posix() for f in directory.rglob("*") if f.is_file()} \
        if directory.is_dir() else set()
    problems = [f"{out}/{rel} is missing" for rel in sorted(set(expected) - present)]
    problems += [f"{out}/{rel} is not in the version" for rel in sorted(present - set(expected))]
    problems += [f"{out}/{rel} md5 differs from the version's" for rel in sorted(set(expected) & present)
                 if md5_of(directory / rel) != expected[rel]]
    return problems


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{file: (size, mtime)} outside git's and DVC's own folders: what was written, and when."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not SKIP & set(rel.parts):
            stat = path.stat()
            found[rel.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {p for p in set(before) | set(after) if before.get(p) != after.get(p)}


def _allowed(path: str, spec: Spec, injected: set[str]) -> bool:
    if path in injected or path.removesuffix(".dvc") in injected:  # the fault's own files (and `dvc repro`'s
        return True                                                # update of a `dvc add`ed file's .dvc)
    if Path(path).name == ".gitignore" or path == "dvc.lock" or Path(spec.records) in Path(path).parents:
        return True
    return workspace.inside(path, spec.outputs)


def end_state(root: Path, spec: Spec, before: dict[str, tuple[int, int]], injected: set[str],
              strict: bool = False) -> list[str]:
    """What is wrong with the project's state, checked from the outside; [] when it is good. `strict` (after an
    escalation, or when nothing was to be done): nothing but the records may have changed."""
    problems = []
    prod = production(root, spec)
    if prod is None or prod[0] == "?":
        problems.append(f"no registered version of {spec.artifact} is in {spec.stage}")
    else:
        lock = yaml.safe_load(_git(root, "show", f"{prod[1]}:dvc.lock")) or {}
        for stage in spec.stages:
            for out, md5 in _paths((lock.get("stages") or {}).get(stage) or {}, "outs").items():
                if md5.endswith(".dir"):
                    problems += _directory_problems(root, out, md5)
                elif md5_of(root / out) != md5:
                    problems.append(f"{out} md5 {md5_of(root / out)} is not {prod[0]}'s {md5}")
    for log in sorted((root / spec.records).glob("*.json")):
        try:
            json.loads(log.read_bytes())
        except ValueError:
            problems.append(f"{log.relative_to(root)} is not valid JSON")
    if before:
        changed = written(before, snapshot(root))
        outside = sorted(p for p in changed if not _allowed(p, spec, injected))
        if outside:
            problems.append(f"written outside {spec.records}/ and the pipeline's outputs: {', '.join(outside)}")
        touched = sorted(p for p in changed - injected if Path(spec.records) not in Path(p).parents)
        if strict and touched:
            problems.append(f"nothing was to change, yet changed: {', '.join(touched)}")
    return problems


# -- the service ---------------------------------------------------------------------------------------------

class HealthPolls(Load):
    """The health URL of a foreign service polled every 50 ms (it has no /predict of ours to load)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, {})

    def _load(self) -> None:
        return

    def _probe(self) -> None:
        while not self._stop.wait(0.05):
            self.probes.append((time.monotonic(), _answers(self.url, 0.5), None))


def _servers(root: Path, but: set[int]) -> list[psutil.Process]:
    """The live processes running in the copy (not stopped, not zombies), except `but`."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "status"]):
        if proc.info["cwd"] == str(root.resolve()) and proc.pid not in but and proc.info["status"] not in (
                psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
            found.append(proc)
    return found


def start_service(root: Path, env: Env, url: str) -> int:
    """The copy's own service, started the way production does (`selfheal recover`: the start command); its pid,
    read from the process table."""
    proc, _ = env.run([selfheal_command(), "recover"], root, timeout=120)
    running = _servers(root, set())
    if proc.returncode != 0 or not _answers(url) or len(running) != 1:
        raise SelfHealError(f"drill: the service did not start in {root.name}: {(proc.stdout + proc.stderr)[-300:]}")
    return running[0].pid


def _service_problems(root: Path, url: str, injected: int, watcher: int) -> list[str]:
    """After a crash or hang: the health URL answers 200 from a live process that is not the injected one."""
    problems = []
    old = psutil.Process(injected) if psutil.pid_exists(injected) else None
    if old is not None and old.status() != psutil.STATUS_ZOMBIE:
        problems.append(f"the {old.status()} service pid {injected} is still there")
    if not _servers(root, {injected, watcher}):
        problems.append("no live service process other than the injected one")
    if not _answers(url):
        problems.append(f"{url} does not answer 200")
    return problems


# -- data and drift, judged independently --------------------------------------------------------------------

def _data_problems(root: Path, path: Path, faulty: bytes, spec: Spec, target: str) -> list[str]:
    """After a data fault: the file read back with pandas has no missing values, duplicate rows or numbers
    written as text; a backup of the faulty bytes is under the records; dvc.lock's candidate was made from it."""
    import io

    import pandas as pd

    rel = path.relative_to(root).as_posix()
    problems = []
    df = pd.read_csv(path)
    if df.isna().any().any():
        problems.append(f"{rel} has missing values")
    if df.duplicated().any():
        problems.append(f"{rel} has duplicate rows")
    text = pd.read_csv(path, dtype=str, keep_default_na=False)
    numeric = catalogue.numeric_columns(pd.read_csv(io.BytesIO(faulty), dtype=str, keep_default_na=False), target)
    as_text = [c for c in numeric if c in text and (pd.to_numeric(text[c], errors="coerce").isna().any()
                                                    or (text[c] != text[c].str.strip()).any())]
    if as_text:
        problems.append(f"{rel}: numbers written as text left in {', '.join(as_text)}")
    backups = root / spec.records / workspace.BACKUPS.name
    if not any(f.read_bytes() == faulty for f in backups.rglob("*") if f.is_file()):
        problems.append(f"no backup of the faulty {rel} under {spec.records}/backups")
    recorded = {p: md5 for entry in _lock(root).values() for p, md5 in _paths(entry, "deps").items()}
    if rel in recorded and recorded[rel] != md5_of(path):
        problems.append(f"dvc.lock's candidate was not made from the fixed {rel}")
    return problems


# -- one trial ------------------------------------------------------------------------------------------------

def _project(root: Path, config: Project, service_pid: int | None) -> catalogue.Project:
    data = _data_file(root)
    drift = config.drift
    return catalogue.Project(root, data or root, root / drift.current if drift else data or root, _target(config),
                             service_pid=service_pid, model_outs=tuple(Path(o) for o in config.model.outs),
                             dir_outs=_dir_outs(root, config), label_sep=TABULAR.get(data.suffix, ",") if data else ",",
                             fix_file=_fix_csv(root, config),
                             compared=_shiftable(root, config),
                             degrade=tuple(config.drill.changes()) if config.drill is not None else ())


def run_trial(fault: catalogue.Fault, n: int, base: Path, work: Path, env: Env, rng: np.random.Generator,
              config: Project, spec: Spec) -> Trial:
    root = work / f"{fault.name}-{n}"
    shutil.copytree(base, root, symlinks=True)
    t = Trial(fault.name, fault.group, fault.expected, n)
    config = load(root / project_file())  # the copy's own: its service has a port of its own
    url = _health_url(root)
    checks: list[str] = []
    with contextlib.ExitStack() as stack:
        stack.callback(sandbox.kill_all_in, root)  # the service and the watcher: nothing outlives the trial
        pid = start_service(root, env, url) if url else None
        prod_before, tags_before, files_before = production(root, spec), set(tags(root)), snapshot(root)
        project = _project(root, config, pid)
        if fault.under_watch and url and pid:
            polls = stack.enter_context(HealthPolls(url))  # from before the fault to a moment after recovery
            watcher = Watcher(root, env)
            watcher.wait_ready()
            t0 = time.monotonic()
            t.injected = fault.inject(project, rng)
            watch(t, watcher, polls, t0, None)
            time.sleep(0.3)
            t.healthy_share = round(sum(h for _, h, _ in polls.probes) / len(polls.probes), 4) if polls.probes else None
            checks = _service_problems(root, url, pid, watcher.proc.pid)
        else:
            t.injected = fault.inject(project, rng)
        injected = written(files_before, snapshot(root))
        faulty = project.fix_file.read_bytes() if project.fix_file and fault.needs == catalogue.DATA_FIX else None
        if fault.then_repro:  # the candidate heal then judges, as CI's reproduce step makes it
            env.run(["dvc", "repro"], root)
        if not fault.under_watch:
            heal(t, root, env)
        if faulty is not None and project.fix_file is not None:
            checks = _data_problems(root, project.fix_file, faulty, spec, project.target)
        processes, answered = process_table(root), (_answers(url, 5.0) if url else None)
    escalated = t.exit_code not in (0, None)
    strict = (escalated and fault.expected == "escalated") or fault.expected == "left_alone"
    # after drift, the retrain command may fold the batch into the data and move the drift reference on
    retrain = _inputs(root) | {config.drift.reference, config.drift.current} \
        if fault.needs == catalogue.DRIFT and fault.expected == "healed" and config.drift else set()
    t.end_state = end_state(root, spec, files_before, injected | retrain, strict=strict) + checks
    prod_after = production(root, spec)
    prod_changed = (prod_after or ("",))[0] != (prod_before or ("",))[0]
    new_versions = bool(set(tags(root)) - tags_before)
    judge(fault, t, prod_changed=prod_changed, new_versions=new_versions,
          fixed=_fixed(fault, t, spec, written(files_before, snapshot(root)) - injected, prod_changed, new_versions))
    if not t.ok:
        t.evidence = {"production": prod_after, "production_before": prod_before, "processes": processes,
                      "health": {"url": url, "answers": answered} if url else None}
    return t


def _fixed(fault: catalogue.Fault, t: Trial, spec: Spec, since: set[str], prod_changed: bool,
           new_versions: bool) -> bool:
    """Whether the fault itself is gone (its own checks are in the end state): a service back up; after drift in
    most columns, the retrain command's effect outside the records (e.g. the training data grew, dvc.lock
    records it) and the gate's verdict (a new version, or production kept)."""
    if fault.under_watch:
        return t.time_to_recover_s is not None
    if fault.needs == catalogue.DRIFT and fault.expected == "healed":
        return any(Path(spec.records) not in Path(p).parents for p in since) and (new_versions or not prod_changed)
    return fault.needs == catalogue.DATA_FIX or not prod_changed  # fixed data: promoted or judged worse, both right
