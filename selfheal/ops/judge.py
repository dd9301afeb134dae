"""How the drill judges a trial, from the outside: plain git, YAML, md5, pandas and the process table, never
selfheal's own code or logs. One judge for every project kind:
- production is the latest `<artifact>#<stage>#N` GTO tag; the version tag on its commit names the version, and
  every output of the version stages (files, and directories file by file through their `.dir` manifest in the
  DVC cache) matches the md5 that commit's dvc.lock records. After an escalation a file output may hold the
  candidate a person must decide on, as long as production's own bytes are intact in the DVC cache or git;
- every audit log parses;
- no file outside the records, the audit logs and the pipeline's outputs (dvc.lock, stage outputs, DVC's
  .gitignores) was written, except what the drill itself wrote (the fault, the candidate's `dvc repro`) and what
  the trial allows (after drift, the data a retrain folds in); where nothing was to be done, not even those;
- after a data fault: the data heal made has no missing or infinite values, duplicate rows or numbers written as
  text, a file fixed in place has its faulty bytes backed up, and dvc.lock's candidate was made from it;
- after a service fault: the service answers 200 (our service: with production's model), and a crashed or hung
  process is gone, another one serving in its place.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from selfheal.core import atomic, workspace
from selfheal.ops import sandbox
from selfheal.versions import vcs

SKIP = {".git", ".dvc", "__pycache__"}


@dataclass(frozen=True)
class Spec:
    """What the judge needs of the project, read once from the healthy baseline (a fault may break the files)."""

    artifact: str
    stage: str  # the GTO stage meaning production
    stages: tuple[str, ...]  # the version stages
    records: Path  # selfheal's records folder
    logs: tuple[Path, ...]  # the audit logs, where this kind keeps them
    outputs: tuple[str, ...]  # every stage output dvc.lock records
    tracking: tuple[str, ...] = ()  # what the pipeline's stages write besides their outputs (an MLflow store)


def lock(root: Path, text: str | None = None) -> dict[str, Any]:
    """dvc.lock's stages, from the workspace or from `text` (a commit's copy); paths relative to `root`."""
    if text is None:
        return vcs.read_lock(root / workspace.DVC_LOCK)
    return vcs.parse_lock(text, vcs.stage_dirs(root / workspace.DVC_YAML))


def outputs(root: Path) -> tuple[str, ...]:
    return tuple(sorted({p for entry in lock(root).values() for p in vcs.hashes(entry, "outs")}))


def md5_of(path: Path) -> str | None:
    return atomic.md5_file(path) if path.is_file() else None


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


def production_outputs(root: Path, spec: Spec, prod: tuple[str, str]) -> dict[str, str]:
    """{output: md5} of the version stages, as production's commit's dvc.lock records them."""
    stages = lock(root, _git(root, "show", f"{prod[1]}:{workspace.DVC_LOCK}"))
    return {out: md5 for stage in spec.stages for out, md5 in vcs.hashes(stages.get(stage) or {}, "outs").items()}


def _cached(root: Path, md5: str) -> Path:
    """Where the copy's DVC cache keeps the object `md5` (a file, or a directory's `.dir` manifest)."""
    return root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def _recoverable(root: Path, commit: str, out: str, md5: str) -> bool:
    """Production's bytes of a file output are intact in the DVC cache, or in git at its commit (an output
    with `cache: false`)."""
    if md5_of(_cached(root, md5)) == md5:
        return True
    shown = subprocess.run(["git", "show", f"{commit}:{out}"], cwd=root, capture_output=True)
    return shown.returncode == 0 and hashlib.md5(shown.stdout).hexdigest() == md5


def _directory_problems(root: Path, out: str, md5: str) -> list[str]:
    """A directory output against its `.dir` manifest in the DVC cache: the same files, each with its md5."""
    manifest_path = _cached(root, md5)
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


def selfheal_own(path: str, spec: Spec) -> bool:
    """A file of selfheal's records or audit trail (or the lock file beside a log)."""
    return Path(spec.records) in Path(path).parents or Path(path.removesuffix(".lock")) in spec.logs


def _allowed(path: str, spec: Spec, injected: set[str]) -> bool:
    if path in injected or path.removesuffix(".dvc") in injected:  # the drill's own files (and `dvc repro`'s
        return True                                                # update of a `dvc add`ed file's .dvc)
    if Path(path).name == ".gitignore" or path == str(workspace.DVC_LOCK) or selfheal_own(path, spec):
        return True
    return workspace.inside(path, (*spec.outputs, *spec.tracking))


def end_state(root: Path, spec: Spec, before: dict[str, tuple[int, int]], injected: set[str],
              escalated: bool = False, strict: bool = False) -> list[str]:
    """What is wrong with the project's state, checked from the outside; [] when it is good. `escalated`: the
    outputs may hold the candidate a person must decide on, while production's bytes are recoverable. `strict`
    (nothing was to be done): nothing but the records may have changed."""
    problems = []
    prod = production(root, spec)
    if prod is None or prod[0] == "?":
        problems.append(f"no registered version of {spec.artifact} is in {spec.stage}")
    else:
        for out, md5 in production_outputs(root, spec, prod).items():
            if md5.endswith(".dir"):
                problems += _directory_problems(root, out, md5)
            elif md5_of(root / out) != md5 and not (escalated and _recoverable(root, prod[1], out, md5)):
                problems.append(f"{out} md5 {md5_of(root / out)} is not {prod[0]}'s {md5}")
    logs = {*spec.logs, *(p.relative_to(root) for p in (root / spec.records).glob("*.json"))}
    for log in sorted(logs):
        try:
            atomic.read_json(root / log)
        except ValueError:
            problems.append(f"{log} is not valid JSON")
    if before:
        changed = written(before, snapshot(root))
        outside = sorted(p for p in changed if not _allowed(p, spec, injected))
        if outside:
            problems.append(f"written outside {spec.records}/, the audit logs and the pipeline's outputs: "
                            f"{', '.join(outside)}")
        touched = sorted(p for p in changed - injected if not selfheal_own(p, spec))
        if strict and touched:
            problems.append(f"nothing was to change, yet changed: {', '.join(touched)}")
    return problems


def data_problems(root: Path, fixed: Path, consumed: Path, target: str, faulty: bytes | None,
                  records: Path) -> list[str]:
    """After a data fault: the data heal made (`fixed`: a parquet or CSV) read back with pandas has no missing or
    infinite values or duplicate rows; and when the fault was in `fixed` itself (its `faulty` bytes), no numbers
    written as text and a backup of those bytes under the records. dvc.lock's candidate read `consumed`."""
    import pandas as pd

    from selfheal.ops.faults import numeric_columns

    rel = fixed.relative_to(root).as_posix()
    problems = []
    df = pd.read_parquet(fixed) if fixed.suffix == ".parquet" else pd.read_csv(fixed)
    if df.isna().any().any() or not np.isfinite(df.select_dtypes("number").to_numpy(dtype=float)).all():
        problems.append(f"{rel} has missing or infinite values")
    if df.duplicated().any():
        problems.append(f"{rel} has duplicate rows")
    if faulty is not None:
        text = pd.read_csv(fixed, dtype=str, keep_default_na=False)
        numeric = numeric_columns(pd.read_csv(io.BytesIO(faulty), dtype=str, keep_default_na=False), target)
        as_text = [c for c in numeric if c in text and (pd.to_numeric(text[c], errors="coerce").isna().any()
                                                        or (text[c] != text[c].str.strip()).any())]
        if as_text:
            problems.append(f"{rel}: numbers written as text left in {', '.join(as_text)}")
        backups = root / records / workspace.BACKUPS.name
        if not any(f.read_bytes() == faulty for f in backups.rglob("*") if f.is_file()):
            problems.append(f"no backup of the faulty {rel} under {records}/backups")
    used = consumed.relative_to(root).as_posix()
    recorded = {p: md5 for entry in lock(root).values() for p, md5 in vcs.hashes(entry, "deps").items()}
    if recorded.get(used) != md5_of(consumed):
        problems.append(f"dvc.lock's candidate was not made from the {'fixed ' if faulty else ''}{used}")
    return problems


def servers(root: Path, but: set[int]) -> list[psutil.Process]:
    """The live processes running in the copy (not stopped, not zombies), except `but`."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "status"]):
        if proc.info["cwd"] == str(root.resolve()) and proc.pid not in but and proc.info["status"] not in (
                psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
            found.append(proc)
    return found


def replaced_problems(root: Path, injected: int, watcher: int) -> list[str]:
    """After a crash or hang: the injected process is gone and another live process serves in the copy."""
    problems = []
    old = psutil.Process(injected) if psutil.pid_exists(injected) else None
    if old is not None and old.status() != psutil.STATUS_ZOMBIE:
        problems.append(f"the {old.status()} service pid {injected} is still there")
    if not servers(root, {injected, watcher}):
        problems.append("no live service process other than the injected one")
    return problems
