"""Params edited since dvc.lock: what `dvc status` reports as changed params, read without DVC, for the stages
that make a project's model; and the params of a candidate the gate rolled back, so it is not built again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfheal.core import atomic, workspace
from selfheal.core.project import Project, at_key
from selfheal.versions import vcs


def upstream(lock: dict[str, Any], stages: list[str]) -> dict[str, Any]:
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


def params_changed(lock: dict[str, Any], cwd: Path) -> list[str]:
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


def files_of(edited: list[str], cwd: Path) -> dict[str, str]:
    """{params file: md5} of the files the `file:key` entries of `params_changed` name."""
    return {f: atomic.md5_file(cwd / f) for f in {e.split(":", 1)[0] for e in edited}}


def remember_rejected(project: Project, cwd: Path) -> None:
    """After a failed candidate was rolled back: the params files that made it ({file: md5}), when they differ
    from what production's dvc.lock records, so heal reports instead of building the same candidate again."""
    edited = params_changed(upstream(vcs.read_lock(cwd / workspace.DVC_LOCK), project.model.stages), cwd)
    if edited:
        atomic.write_json(cwd / project.record(workspace.REJECTED_PARAMS), files_of(edited, cwd))
