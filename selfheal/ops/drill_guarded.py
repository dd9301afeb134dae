"""`selfheal drill` on a guarded project (selfheal.yaml, kind dvc): the same trials, with a foreign project's
ways of being right.

The copy is a fresh clone of the user's repository (ops.sandbox.clone: its commits and GTO tags, its outputs
from the user's DVC cache, no git remote, a DVC remote of its own in the drill's temporary folder) with the
workspace's selfheal.yaml. The baseline is `dvc repro` then `selfheal heal` (which promotes the first version
when none is in production), and must then be healthy. Each trial injects one fault that applies to the
project (faults.applicable), runs `selfheal heal --plan` and `selfheal heal`, and is judged with plain git,
YAML and md5, never selfheal's own code or logs:
- production is the latest `<artifact>#<stage>#N` GTO tag; the version tag on its commit names the version,
  and every output of the version stages (files, and directories file by file through their `.dir` manifest
  in the DVC cache) matches the md5 that commit's dvc.lock records;
- every JSON file under the records directory (`.selfheal/`) parses;
- no file outside the records directory and the pipeline's own outputs (dvc.lock, stage outputs, DVC's
  .gitignores) was written, except what the fault itself wrote; after an escalation, not even those.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from selfheal.core import atomic
from selfheal.core.errors import SelfHealError
from selfheal.core.project import PROJECT_FILE, Project
from selfheal.ops import faults as catalogue
from selfheal.ops import sandbox
from selfheal.ops.drill import Env, Trial, _selfheal, heal, judge

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
    lock = _lock(root)
    produced = {p for entry in lock.values() for p in _paths(entry, "outs")}
    deps = sorted({p for entry in lock.values() for p in _paths(entry, "deps")} - produced)
    return next((root / d for d in deps if Path(d).suffix in TABULAR and (root / d).is_file()), None)


def _dir_outs(root: Path, config: Project) -> tuple[Path, ...]:
    lock = _lock(root)
    return tuple(Path(p) for s in config.model.stages for p, md5 in _paths(lock.get(s) or {}, "outs").items()
                 if md5.endswith(".dir"))


def capabilities(config: Project, root: Path) -> frozenset[str]:
    """What the project offers the fault catalogue: `dvc`, `model`, the optional sections its selfheal.yaml sets,
    `output_dir` and `tabular_data` when its pipeline has them."""
    caps = {"dvc", "model"} | {name for name in config.model_fields_set
                               if name not in ("kind", "model", "gate", "records")}
    if _dir_outs(root, config):
        caps.add("output_dir")
    if _data_file(root) is not None:
        caps.add("tabular_data")
    return frozenset(caps)


# -- the baseline ---------------------------------------------------------------------------------------------

def prepare(source: Path, dest: Path, config: Project, env: Env, say: Any) -> dict[str, Any]:
    """A healthy, promoted clone of the guarded project at `dest`; returns facts about it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    say("drill: cloning the project (its git history and tags, its outputs from your DVC cache)")
    sandbox.clone(dest, source, dest.parent.parent / "remote")
    shutil.copy2(source / PROJECT_FILE, dest / PROJECT_FILE)  # the configuration being drilled, even uncommitted
    sandbox.must(["git", "add", "--", str(PROJECT_FILE), ".dvc/config"], dest)
    sandbox.must(["git", "commit", "-q", "--allow-empty", "-m", "drill: selfheal.yaml and the drill's DVC remote"],
                 dest)
    say("drill: preparing the baseline (dvc repro, then selfheal heal)")
    proc, repro = env.run(["dvc", "repro"], dest)
    if proc.returncode != 0:
        raise SelfHealError(f"drill: the baseline `dvc repro` failed: {proc.stderr.strip()[-500:]}")
    proc, _ = env.run([_selfheal(), "heal"], dest)
    spec = spec_of(dest, config)
    prod = production(dest, spec)
    if proc.returncode != 0 or prod is None:
        raise SelfHealError(f"drill: the baseline heal left no {spec.stage} version of {spec.artifact}: "
                            f"{(proc.stdout + proc.stderr)[-500:]}")
    sandbox.must(["git", "add", "-A"], dest)
    sandbox.must(["git", "commit", "-q", "--allow-empty", "-m", "drill baseline"], dest)
    sandbox.must(["dvc", "push", "-q"], dest)  # the drill's remote holds the baseline, as a user's would
    problems = end_state(dest, spec, {}, set())
    plan, _ = env.run([_selfheal(), "heal", "--plan"], dest)
    acting = [line for line in plan.stdout.splitlines() if line.startswith("  ") and " ok " not in line]
    if problems or acting or plan.returncode:
        raise SelfHealError("drill: the baseline is not healthy: " + " | ".join(problems + acting)
                            + plan.stderr.strip())
    say(f"drill: baseline ready: {spec.artifact}@{prod[0]} in {spec.stage}, dvc repro {repro:.1f} s")
    return {"cold_repro_s": round(repro, 2), "version": prod[0]}


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
    assign = re.compile(rf"^{re.escape(spec.artifact)}#{re.escape(spec.stage)}#(\d+)$")
    version = re.compile(rf"^{re.escape(spec.artifact)}@v(\d+)\.(\d+)\.(\d+)$")
    known = tags(root)
    latest = max(((int(m.group(1)), commit) for name, commit in known.items() if (m := assign.match(name))),
                 default=None)
    if latest is None:
        return None
    on_commit = sorted((tuple(map(int, m.groups())), name) for name, commit in known.items()
                       if commit == latest[1] and (m := version.match(name)))
    return (on_commit[-1][1].split("@", 1)[1] if on_commit else "?"), latest[1]


def _md5(path: Path) -> str | None:
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
                 if _md5(directory / rel) != expected[rel]]
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
    return any(path == out or Path(out) in Path(path).parents for out in spec.outputs)


def end_state(root: Path, spec: Spec, before: dict[str, tuple[int, int]], injected: set[str],
              escalated: bool = False) -> list[str]:
    """What is wrong with the project's state, checked from the outside; [] when it is good."""
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
                elif _md5(root / out) != md5:
                    problems.append(f"{out} md5 {_md5(root / out)} is not {prod[0]}'s {md5}")
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
        if escalated and touched:
            problems.append(f"escalated, yet changed: {', '.join(touched)}")
    return problems


# -- one trial ------------------------------------------------------------------------------------------------

def run_trial(fault: catalogue.Fault, n: int, base: Path, work: Path, env: Env, rng: np.random.Generator,
              config: Project, spec: Spec) -> Trial:
    root = work / f"{fault.name}-{n}"
    shutil.copytree(base, root, symlinks=True)
    t = Trial(fault.name, fault.group, fault.expected, n)
    prod_before, tags_before, files_before = production(root, spec), set(tags(root)), snapshot(root)
    data = _data_file(root)
    project = catalogue.Project(root, data or root, data or root, "",
                                model_outs=tuple(Path(o) for o in config.model.outs),
                                dir_outs=_dir_outs(root, config),
                                label_sep=TABULAR.get(data.suffix, ",") if data else ",")
    t.injected = fault.inject(project, rng)
    injected = written(files_before, snapshot(root))
    if fault.then_repro:  # the candidate heal then judges, as CI's reproduce step makes it
        env.run(["dvc", "repro"], root)
    heal(t, root, env)
    escalated = t.exit_code not in (0, None)
    t.end_state = end_state(root, spec, files_before, injected, escalated=escalated and fault.expected == "escalated")
    prod_after = production(root, spec)
    prod_changed = (prod_after or ("",))[0] != (prod_before or ("",))[0]
    judge(fault, t, prod_changed=prod_changed, new_versions=bool(set(tags(root)) - tags_before),
          fixed=not prod_changed)
    return t
