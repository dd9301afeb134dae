"""`make exp`: queue a documented grid of params as DVC experiments, run them, show them best first.

The grid lives in config/exp_grid.yaml, not in params.yaml: params.yaml is what the stages read (and what DVC
tracks), the grid is a plan over it. Every point is validated against the params schema before anything is
queued. Queued experiments run in temporary clones of the git repo, which miss the untracked input data
(data.raw / data.current are generated, gitignored files): those are handed over with `--copy-paths`.
`dvc exp run --run-all` starts the queue workers (what `dvc queue start` does) and waits for every queued
experiment, which `dvc queue start` alone does not (DVC 3.67 has no `dvc queue wait`).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from selfheal.core import atomic, workspace
from selfheal.core.config import load_params, parse_params, read_yaml
from selfheal.core.errors import ConfigError, SelfHealError
from selfheal.versions import vcs

GRID_FILE = workspace.EXP_GRID
METRICS_FILE = str(workspace.VALIDATION_METRICS)
SORT_BY = f"{METRICS_FILE}:metric"  # r2 or accuracy: higher is better for both
# the table: params and metrics that differ, the gate always, State (a failed experiment shows the metrics of
# the workspace it was queued from); not file hashes or drift (the current batch is not what an experiment varies)
KEEP = r"^(metric|passed)$"
DROP = r"Created$|Executor$|.*/|.*drift.*"
_QUEUED = re.compile(r"Queued experiment '([^']+)'")


def load_grid(path: str | Path = GRID_FILE, params_path: str | Path = workspace.PARAMS) -> list[dict[str, Any]]:
    """The grid's points, each {dotted.param: value}, each checked against the params schema."""
    path = Path(path)
    raw = read_yaml(path, "grid file not found")
    grids = raw.get("grids") if isinstance(raw, dict) else None
    if not isinstance(grids, list) or not grids or not all(isinstance(g, dict) and g for g in grids):
        raise ConfigError(f"{path}: expected `grids:` with a list of mappings {{param.path: [values]}}")
    base = read_yaml(Path(params_path))
    points = []
    for grid in grids:
        keys = list(grid)
        values = [v if isinstance(v, list) else [v] for v in grid.values()]
        for combo in itertools.product(*values):
            point = dict(zip(keys, combo, strict=False))
            _check(point, base, path)
            points.append(point)
    return points


def _check(point: dict[str, Any], base: dict[str, Any], source: Path) -> None:
    """Apply the point to a copy of params.yaml and validate: unknown keys and wrong types fail here."""
    merged = copy.deepcopy(base)
    for key, value in point.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {key}: {part!r} is not a params group")
            node = node[part]
        node[leaf] = value
    parse_params(merged, f"{source} ({', '.join(f'{k}={v}' for k, v in point.items())})")


def set_param_args(point: dict[str, Any]) -> list[str]:
    """`-S key=value` arguments; values in YAML/JSON spelling (true, null, 0.05) so DVC parses them back."""
    args = []
    for key, value in point.items():
        text = value if isinstance(value, str) else json.dumps(value)
        args += ["-S", f"{key}={text}"]
    return args


def _in_git(path: str) -> bool:
    """Whether git tracks `path` (a file, or any file under a directory): what a temporary clone contains."""
    return bool(vcs.git("ls-files", "--", path, check=False).strip())


def copy_paths(params_path: str | Path = workspace.PARAMS) -> list[str]:
    """What to hand a temporary clone with `--copy-paths`: the input files tracked neither by git nor by DVC.

    DVC copies a file into an existing directory only, and a directory holding no tracked file is not in
    the clone; such a directory is copied whole instead (its copy creates the missing parents).
    """
    data = load_params(params_path).data
    paths: list[str] = []
    for rel in (data.raw, data.current):
        if not Path(rel).exists() or _in_git(rel) or Path(f"{rel}.dvc").exists():
            continue
        parent = Path(rel).parent.as_posix()
        path = rel if parent == "." or _in_git(parent) else parent
        if path not in paths:
            paths.append(path)
    return paths


def _env() -> dict[str, str]:
    """Log every experiment into this project's MLflow store (not a throwaway one in the temp clone)."""
    env = vcs.env()  # this venv's dvc and python, activated or not
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path('mlflow.db').resolve()}"
    return env


def _dvc(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], capture_output=True, text=True, env=_env())
    if proc.returncode != 0:
        raise SelfHealError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def queue(points: list[dict[str, Any]], copy_paths: list[str]) -> list[str]:
    """Queue one experiment per point; returns the names DVC gave them."""
    copies = [arg for rel in copy_paths for arg in ("--copy-paths", rel)]
    names = []
    for point in points:
        out = _dvc(["exp", "run", "--queue", *set_param_args(point), *copies]).stdout
        found = _QUEUED.search(out)
        if not found:
            raise SelfHealError(f"dvc exp run --queue: no experiment name in its output: {out.strip()}")
        names.append(found.group(1))
    return names


def run_queue(jobs: int = 1) -> None:
    """Start the queue workers and wait until every queued experiment has finished, streaming their logs.

    The output is relayed, not inherited: DVC's worker daemon keeps the spawning process's stdout open for
    its idle timeout, and a caller reading our output (CI, a test) would wait for that too.
    """
    cmd = ["dvc", "exp", "run", "--run-all", "--jobs", str(jobs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())

    def relay() -> None:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = proc.wait()
    reader.join(timeout=2)  # what dvc wrote is already in the pipe; EOF only comes when the worker exits
    if code != 0:
        raise SelfHealError(f"{' '.join(cmd)} exited {code}; see the output above")


def results() -> dict[str, dict[str, Any]]:
    """Experiments of the current baseline, by name: {failed, metric}. A failed one carries the workspace's
    metrics from when it was queued, so failure is read from DVC's error field, never from the metrics."""
    shown = json.loads(_dvc(["exp", "show", "--json", "--no-fetch"]).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            metrics = (((rev.get("data") or {}).get("metrics") or {}).get(METRICS_FILE) or {}).get("data") or {}
            name = exp.get("name") or rev.get("name")
            if name:
                found[name] = {"failed": bool(rev.get("error")), "metric": metrics.get("metric")}
    return found


def table() -> str:
    """`dvc exp show --md` of the baseline and its experiments, best validation metric first."""
    return _dvc(
        ["exp", "show", "--md", "--no-pager", "--no-fetch", "--sort-by", SORT_BY, "--sort-order", "desc",
         "--only-changed", "--keep", KEEP, "--drop", DROP]
    ).stdout


def run_grid(grid: str | Path = GRID_FILE, jobs: int = 1) -> tuple[list[str], list[str]]:
    """Queue and run the grid; returns (names of its experiments, names of those that failed)."""
    points = load_grid(grid)
    names = queue(points, copy_paths())
    run_queue(jobs)
    done = results()
    return names, [n for n in names if n not in done or done[n]["failed"]]


def best() -> str:
    """The name of the experiment of the current baseline with the highest validation metric."""
    scored = {n: r["metric"] for n, r in results().items() if not r["failed"] and isinstance(r["metric"], (int, float))}
    if not scored:
        raise SelfHealError("no finished experiment with a validation metric to apply (run `make exp` first)")
    return max(scored, key=lambda name: scored[name])


def apply(name: str | None) -> str:
    """`dvc exp apply` the named experiment (or the best one) to the workspace; returns its name.

    DVC writes the experiment's whole params.yaml, re-serialised (`""` becomes `''`, comments and workspace edits
    are lost); params.yaml is then put back as it was with only the params the experiment set changed.
    """
    name = name or best()
    before = workspace.PARAMS.read_text(encoding="utf-8")
    committed = vcs.git("show", f"HEAD:{workspace.PARAMS}", check=False)
    _dvc(["exp", "apply", name])
    if committed:
        changed = _changed(yaml.safe_load(committed) or {}, read_yaml(workspace.PARAMS))
        atomic.write_text(workspace.PARAMS, _set_values(before, changed))
    return name


def _changed(base: dict[str, Any], new: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """{key path: new value} of the leaves that differ between two params trees."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in new.items():
        old = base.get(key) if isinstance(base, dict) else None
        if isinstance(value, dict) and isinstance(old, dict):
            out.update(_changed(old, value, (*prefix, key)))
        elif value != old or key not in base:
            out[(*prefix, key)] = value
    return out


def _set_values(text: str, changed: dict[tuple[str, ...], Any]) -> str:
    """`text` (a params.yaml) with the `changed` leaves set, everything else (quotes, comments) kept as written."""
    if not changed:
        return text
    import io

    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(text)
    for path, value in changed.items():
        node = doc
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()
