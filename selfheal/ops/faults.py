"""The drill's fault catalogue: what each fault does to a healthy, promoted project, and what should follow.

Every fault is deterministic for a seed (numpy's Generator), touches only the throwaway copy it is given, and
knows its expected outcome:
- healed: selfheal repairs it without a person (fixes the data, refuses the bad model and keeps production,
  restores the model file, retrains on real drift, brings the service back);
- escalated: selfheal must not act on its own (a schema change, a foreign process on the port, a broken
  config): it stops, says why, exits non-zero, and production keeps serving;
- left_alone: nothing is wrong enough to act on (drift in one column of eight).
Data faults are written into the raw CSV (params data.raw), the way bad data arrives in real projects.

Each fault declares what it `needs` of a project; the drill enables it when the project offers all of it
(`capabilities`). Either kind offers `model`, `data_fix_csv` (a CSV heal cleans: our data.raw, a configured
project's CSV under data.fix) and `service_start` (a service heal can start: ours, or service.health and
service.start). Our own pipeline also offers `selfheal` (its raw data, params.yaml and /predict); a configured
project (selfheal.yaml, kind dvc) offers `dvc`, every optional section its selfheal.yaml has (`data`, `drift`,
`service`, ...), `output_dir` when a version stage writes a directory, `tabular_data` when the pipeline reads a
CSV/TSV no stage produces, and `drift_columns` (drift.current a CSV whose compared numeric columns make drift in
3/4 of them reach drift_threshold and drift in one not). A fault for a new section declares e.g.
`needs=frozenset({"dvc", "drift"})` and is picked up. The drift kinds exist once per kind under one name: ours
is measured by the monitor stage after a repro, a configured project's by heal itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml

from selfheal.core import atomic, workspace

Expected = Literal["healed", "escalated", "left_alone"]
Group = Literal["data", "model", "drift", "service", "config"]


@dataclass(frozen=True)
class Project:
    """What a fault needs to know of the copy it works on."""

    root: Path
    raw: Path  # data.raw
    current: Path  # data.current
    target: str
    service_pid: int | None = None  # the running service, for service faults
    port: int | None = None
    model_outs: tuple[Path, ...] = (workspace.MODEL,)  # the model's outputs, files or directories
    dir_outs: tuple[Path, ...] = ()  # directory outputs of the version stages (a guarded project's eval/)
    label_sep: str = ","  # the raw data's delimiter
    fix_file: Path | None = None  # the CSV heal cleans (ours: data.raw; a guarded project's under data.fix)
    compared: tuple[str, ...] = ()  # the columns a drift fault may shift (not drifted at baseline); (): all
    degrade: tuple[tuple[str, str, object], ...] = ()  # (params file, dotted key, value): a candidate to refuse


@dataclass(frozen=True)
class Fault:
    name: str
    group: Group
    expected: Expected
    inject: Callable[[Project, np.random.Generator], str]  # returns a one-line description of what it did
    under_watch: bool = False  # a service fault handled by `recover --watch` (the others by `heal`)
    then_repro: bool = False  # `dvc repro` runs after the fault, as CI's reproduce step does before heal
    needs: frozenset[str] = frozenset({"selfheal"})  # what the project must offer (see the module docstring)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(path: Path, df: pd.DataFrame) -> None:
    atomic.atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))


def _features(df: pd.DataFrame, target: str) -> list[str]:
    return [c for c in df.columns if c != target and pd.to_numeric(df[c], errors="coerce").notna().mean() > 0.9]


def numeric_columns(df: pd.DataFrame, target: str, among: tuple[str, ...] = ()) -> list[str]:
    """The columns a data fault writes into and a drift fault shifts: mostly numbers, not the target, among the
    given ones (all when empty)."""
    return [c for c in _features(df, target) if not among or c in among]


def _cells(df: pd.DataFrame, cols: list[str], share: float, rng: np.random.Generator) -> list[tuple[int, str]]:
    n = max(1, round(share * len(df) * len(cols)))
    picks = rng.choice(len(df) * len(cols), size=n, replace=False)
    return [(int(i) // len(cols), cols[int(i) % len(cols)]) for i in picks]


Change = Callable[[pd.DataFrame, str, np.random.Generator], "tuple[pd.DataFrame, str]"]


def _raw(p: Project) -> Path:
    return p.raw


def _fix_file(p: Project) -> Path:
    if p.fix_file is None:
        raise FileNotFoundError("no CSV heal cleans to inject the fault into")
    return p.fix_file


def _data_fault(change: Change, into: Callable[[Project], Path] = _raw) -> Callable[[Project, np.random.Generator], str]:
    def inject(p: Project, rng: np.random.Generator) -> str:
        path = into(p)
        df, what = change(_read(path), p.target, rng)
        _write(path, df)
        return f"{path.relative_to(p.root)}: {what}"

    return inject


def _missing(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    cells = _cells(df, _features(df, target), 0.03, rng)
    for r, c in cells:
        df.at[r, c] = ""
    return df, f"{len(cells)} feature cells emptied"


def _outliers(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    cells = _cells(df, _features(df, target), 0.005, rng)
    for r, c in cells:
        q = pd.to_numeric(df[c], errors="coerce")
        df.at[r, c] = repr(round(float(q.quantile(0.75) + rng.uniform(20, 60) * (q.quantile(0.75) - q.quantile(0.25))), 4))
    return df, f"{len(cells)} cells set 20-60 IQR above Q3"


def _duplicates(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    rows = rng.choice(len(df), size=max(1, len(df) // 50), replace=False)
    out = pd.concat([df, df.iloc[rows]], ignore_index=True)
    return out.iloc[rng.permutation(len(out))], f"{len(rows)} rows duplicated"


def _as_text(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    cells = _cells(df, _features(df, target), 0.01, rng)
    for r, c in cells:
        df.at[r, c] = str(rng.choice(["N/A", "?", "-"])) if rng.random() < 0.5 else f" {df.at[r, c]} "
    return df, f"{len(cells)} numbers written as text"


def _infinite(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    cells = _cells(df, _features(df, target), 0.002, rng)
    for r, c in cells:
        df.at[r, c] = str(rng.choice(["inf", "-inf", "1e309"]))
    return df, f"{len(cells)} infinite values"


def _rename(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    col = str(rng.choice(_features(df, target)))
    return df.rename(columns={col: f"{col}_v2"}), f"column {col} renamed to {col}_v2"


def _retype(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    col = str(rng.choice(_features(df, target)))
    df[col] = [f"id-{v}" for v in df[col]]
    return df, f"column {col} made text (every value prefixed 'id-')"


def _constant_target(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    value = df[target].iloc[int(rng.integers(len(df)))]
    df[target] = value
    return df, f"every {target} set to {value}"


def _shuffled_target(df: pd.DataFrame, target: str, rng: np.random.Generator) -> tuple[pd.DataFrame, str]:
    df[target] = df[target].to_numpy()[rng.permutation(len(df))]
    return df, f"{target} shuffled across rows"


def _shift(columns: Callable[[list[str], np.random.Generator], list[str]]) -> Callable[
        [Project, np.random.Generator], str]:
    def inject(p: Project, rng: np.random.Generator) -> str:
        df = _read(p.current)
        cols = columns(numeric_columns(df, p.target, p.compared), rng)
        for c in cols:
            values = pd.to_numeric(df[c], errors="coerce")
            df[c] = (values + 1.5 * values.std()).round(6).astype(str)
        _write(p.current, df)
        return f"current batch ({p.current.relative_to(p.root)}): {', '.join(cols)} shifted by 1.5 std"

    return inject


def _params(change: Callable[[dict], str]) -> Callable[[Project, np.random.Generator], str]:
    def inject(p: Project, rng: np.random.Generator) -> str:
        path = p.root / workspace.PARAMS
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
        what = change(params)
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        return what

    return inject


def _weak_candidate(params: dict) -> str:
    params["train"]["model"] = "hist_gradient_boosting"
    params["train"]["hist_gradient_boosting"]["max_iter"] = 1
    return "train.hist_gradient_boosting.max_iter = 1 (a candidate far below the threshold)"


def _invalid_param(params: dict) -> str:
    params["train"]["test_size"] = 2
    return "train.test_size = 2 (must be between 0 and 1)"


def _files(root: Path, outs: tuple[Path, ...]) -> list[Path]:
    """The files of some outputs: a file itself, a directory every file under it (sorted: deterministic)."""
    found: list[Path] = []
    for out in outs:
        path = root / out
        if path.is_dir():
            found += sorted(f for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            found.append(path)
    return found


def _pick(files: list[Path], rng: np.random.Generator, what: str) -> Path:
    if not files:
        raise FileNotFoundError(f"no {what} to inject the fault into")
    return files[int(rng.integers(len(files)))] if len(files) > 1 else files[0]  # one file: no draw (same stream)


def _corrupt(outs: Callable[[Project], tuple[Path, ...]], what: str) -> Callable[[Project, np.random.Generator], str]:
    def inject(p: Project, rng: np.random.Generator) -> str:
        target = _pick(_files(p.root, outs(p)), rng, what)
        data = bytearray(target.read_bytes())
        for i in rng.choice(len(data), size=min(64, len(data)), replace=False):
            data[int(i)] ^= 0xFF
        atomic.write_bytes(target, bytes(data))
        return f"{min(64, len(data))} bytes of {target.relative_to(p.root)} flipped"

    return inject


def _delete(outs: Callable[[Project], tuple[Path, ...]], what: str) -> Callable[[Project, np.random.Generator], str]:
    def inject(p: Project, rng: np.random.Generator) -> str:
        target = _pick(_files(p.root, outs(p)), rng, what)
        target.unlink()
        return f"{target.relative_to(p.root)} deleted"

    return inject


def _model_outs(p: Project) -> tuple[Path, ...]:
    return p.model_outs


def _dir_outs(p: Project) -> tuple[Path, ...]:
    return p.dir_outs


def label_column(df: pd.DataFrame) -> str:
    """The column a model learns: one named like a label, else the one with the fewest distinct values."""
    named = [c for c in df.columns if c.lower() in ("label", "labels", "target", "y", "class")]
    if named:
        return str(named[0])
    return str(min((c for c in df.columns if df[c].nunique() > 1), key=lambda c: df[c].nunique()))


def _labels_shuffled(p: Project, rng: np.random.Generator) -> str:
    """The data the pipeline trains on arrives with its labels scrambled: the candidate learns noise."""
    df = pd.read_csv(p.raw, sep=p.label_sep, dtype=str, keep_default_na=False)
    col = label_column(df)
    df[col] = df[col].to_numpy()[rng.permutation(len(df))]
    atomic.atomic_write(p.raw, lambda tmp: df.to_csv(tmp, sep=p.label_sep, index=False, lineterminator="\n"))
    return f"{p.raw.relative_to(p.root)}: column {col!r} shuffled across rows, then `dvc repro`"


def _degraded(p: Project, rng: np.random.Generator) -> str:
    """The project's own params set to what its selfheal.yaml names as degrading (drill.degrade): a candidate the
    gate must refuse, made by the pipeline itself, whatever the format of its data."""
    done = []
    for file, key, value in p.degrade:
        path = p.root / file
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        node = doc
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        done.append(f"{file}:{key} = {value!r}")
    return f"{', '.join(done)} (drill.degrade), then `dvc repro`"


def _invalid_project_value(p: Project, rng: np.random.Generator) -> str:
    path = p.root / "selfheal.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["gate"]["direction"] = "up"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return "selfheal.yaml gate.direction = 'up' (must be max or min)"


def _signal(sig: int, what: str) -> Callable[[Project, np.random.Generator], str]:
    """`sig` to the whole service: its process group (our master and its workers; a started command's group)."""
    def inject(p: Project, rng: np.random.Generator) -> str:
        assert p.service_pid is not None
        os.killpg(os.getpgid(p.service_pid), sig)
        return f"service pid {p.service_pid} and its process group: {what}"

    return inject


def _no_model(p: Project, rng: np.random.Generator) -> str:
    """The service restarted while production's model bytes were gone from the workspace and the DVC cache (only
    the DVC remote has them): it answers 503."""
    from selfheal.service import procs
    from selfheal.versions import vcs

    assert p.service_pid is not None and p.port is not None
    model = p.root / workspace.MODEL
    vcs.cache_path(atomic.md5_file(model), p.root).unlink(missing_ok=True)
    model.unlink()
    procs.terminate(p.service_pid, 3.0)
    procs.spawn(procs.service_argv("127.0.0.1", p.port), p.root)
    _wait_answering(f"http://127.0.0.1:{p.port}/health")
    return f"{workspace.MODEL} deleted from the workspace and the DVC cache, service restarted without it (503)"


def _wait_answering(url: str, timeout: float = 90.0) -> None:
    """Until `url` answers at all (any status): the restarted service is up."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the service at {url} did not start within {timeout:g} s")


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


def _foreign_port(p: Project, rng: np.random.Generator) -> str:
    """Our service is gone and another project's HTTP service (a plain server answering /health 200) holds the
    port."""
    assert p.service_pid is not None and p.port is not None
    os.kill(p.service_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:  # the killed service's socket may linger for a moment
        proc = subprocess.Popen([sys.executable, "-c", _FOREIGN, str(p.port)], cwd=p.root, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        if proc.poll() is None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return f"service killed; a foreign HTTP service answers /health on port {p.port}"


MODEL = frozenset({"model"})  # our pipeline and a guarded project alike
DATA_FIX = frozenset({"data_fix_csv"})  # a CSV heal cleans: our data.raw, a configured project's under data.fix
DRIFT = frozenset({"dvc", "drift", "drift_columns"})  # drift.current a CSV; shifting 3/4 of its compared
# numeric columns reaches drift_threshold, one does not
SERVICE = frozenset({"service_start"})  # a service heal can start: ours, or service.health and service.start

CATALOGUE: list[Fault] = [
    Fault("missing_values", "data", "healed", _data_fault(_missing, _fix_file), needs=DATA_FIX),
    Fault("outliers", "data", "healed", _data_fault(_outliers)),
    Fault("duplicates", "data", "healed", _data_fault(_duplicates, _fix_file), needs=DATA_FIX),
    Fault("numbers_as_text", "data", "healed", _data_fault(_as_text, _fix_file), needs=DATA_FIX),
    Fault("infinite_values", "data", "healed", _data_fault(_infinite)),
    Fault("column_renamed", "data", "escalated", _data_fault(_rename)),
    Fault("column_type_changed", "data", "escalated", _data_fault(_retype)),
    Fault("constant_target", "data", "healed", _data_fault(_constant_target)),
    Fault("shuffled_target", "data", "healed", _data_fault(_shuffled_target)),
    Fault("candidate_below_threshold", "model", "healed", _params(_weak_candidate), then_repro=True),
    Fault("corrupted_model_file", "model", "healed", _corrupt(_model_outs, "model file"), needs=MODEL),
    Fault("deleted_model_file", "model", "healed", _delete(_model_outs, "model file"), needs=MODEL),
    Fault("drift_most_columns", "drift", "healed", _shift(lambda cols, rng: cols[: max(1, len(cols) * 3 // 4)]),
          then_repro=True),
    Fault("drift_one_column", "drift", "left_alone", _shift(lambda cols, rng: [str(rng.choice(cols))]),
          then_repro=True),
    Fault("service_crash", "service", "healed", _signal(signal.SIGKILL, "SIGKILL"), under_watch=True, needs=SERVICE),
    Fault("service_hang", "service", "healed", _signal(signal.SIGSTOP, "SIGSTOP"), under_watch=True, needs=SERVICE),
    Fault("service_unhealthy", "service", "healed", _no_model),
    Fault("port_taken_by_foreign_process", "service", "escalated", _foreign_port),
    Fault("invalid_params_value", "config", "escalated", _params(_invalid_param)),
    # a guarded project (selfheal.yaml, kind dvc)
    Fault("candidate_below_gate", "model", "healed", _labels_shuffled, then_repro=True,
          needs=frozenset({"dvc", "tabular_data"})),
    Fault("candidate_from_degraded_params", "model", "healed", _degraded, then_repro=True,
          needs=frozenset({"dvc", "drill_degrade"})),
    Fault("corrupted_file_in_output_dir", "model", "healed", _corrupt(_dir_outs, "file in a directory output"),
          needs=frozenset({"dvc", "output_dir"})),
    Fault("deleted_file_in_output_dir", "model", "healed", _delete(_dir_outs, "file in a directory output"),
          needs=frozenset({"dvc", "output_dir"})),
    Fault("invalid_selfheal_yaml_value", "config", "escalated", _invalid_project_value, needs=frozenset({"dvc"})),
    # ... and its drift section: heal measures drift itself (ours in the monitor stage, after a repro)
    Fault("drift_most_columns", "drift", "healed", _shift(lambda cols, rng: cols[: max(1, len(cols) * 3 // 4)]),
          needs=DRIFT),
    Fault("drift_one_column", "drift", "left_alone", _shift(lambda cols, rng: [str(rng.choice(cols))]), needs=DRIFT),
]
BY_NAME = {f.name: f for f in reversed(CATALOGUE)}  # a name shared by our pipeline and a guarded project: ours
OURS = frozenset({"selfheal", "model", "data_fix_csv", "service_start"})  # what our own pipeline offers


def applicable(capabilities: frozenset[str]) -> list[Fault]:
    """The faults whose needs the project offers, in catalogue order."""
    return [f for f in CATALOGUE if f.needs <= capabilities]


def _kind(capabilities: frozenset[str]) -> str:
    """The project kind whose faults apply: `dvc` for a guarded project, else our own pipeline's."""
    return "dvc" if "dvc" in capabilities else "selfheal"


def skipped(capabilities: frozenset[str]) -> dict[str, str]:
    """{fault: what this project lacks for it} of the faults of its kind the drill cannot run, for the scorecard."""
    other = "selfheal" if _kind(capabilities) == "dvc" else "dvc"
    usable = {f.name for f in applicable(capabilities)}
    return {f.name: ", ".join(sorted(f.needs - capabilities)) for f in CATALOGUE
            if other not in f.needs and f.name not in usable}


GROUPS = ("data", "model", "drift", "service", "config")  # as `selfheal drill --help` names them


def select(spec: str, capabilities: frozenset[str] = OURS) -> list[Fault]:
    """`all`, a group name (data, model, drift, service, config) or comma-separated fault names, among the faults
    that apply to a project offering `capabilities`."""
    from selfheal.core.errors import SelfHealError

    usable = applicable(capabilities)
    groups = sorted({f.group for f in usable})
    chosen: list[Fault] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part == "all":
            chosen += usable
        elif part in groups:
            chosen += [f for f in usable if f.group == part]
        elif part in GROUPS:  # a group `--help` lists, with no fault this project can take
            kind = _kind(capabilities)
            needs = sorted({n for f in CATALOGUE if (f.group == part and kind in f.needs) or (f.group == part
                            and not f.needs & {"dvc", "selfheal"}) for n in f.needs - capabilities})
            raise SelfHealError(f"--faults: no fault of group {part!r} applies to this project (they need: "
                                f"{', '.join(needs) or 'nothing more'}); applicable groups: {', '.join(groups)}")
        elif part in {f.name for f in usable}:
            chosen += [f for f in usable if f.name == part]
        elif part in BY_NAME:
            twins = [f for f in CATALOGUE if f.name == part]  # the one for this kind of project, else the nearest
            near = min(twins, key=lambda f: (not f.needs & capabilities, len(f.needs - capabilities)))
            missing = ", ".join(sorted(near.needs - capabilities))
            raise SelfHealError(f"--faults: {part!r} does not apply to this project (it needs: {missing}); "
                                f"applicable: {', '.join(f.name for f in usable)}")
        else:
            raise SelfHealError(f"--faults: unknown fault {part!r}; known: all, {', '.join(groups)}, "
                                f"{', '.join(f.name for f in usable)}")
    return list(dict.fromkeys(chosen))
