"""`selfheal fix-data --data-path P`: the guide's in-place fixer, for users coming from its script.

The fixes are the fix_data stage's (selfheal.pipeline.numfix, same params; a CSV of plain numbers is fixed on
arrays without pandas, any other through fixes.fix), applied to a CSV in place: a timestamped
backup first (.selfheal/backups/), then an atomic rewrite, the guide's summary lines and an entry in
monitoring/data_fix_log.json. Inside the pipeline prefer `dvc repro`: it never rewrites data/raw.

A project guarded through selfheal.yaml gets the same fixes on the files its `data.fix` names (CSV or parquet,
an optional target column, the `data.quality` switches), with backups and the log in its records directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, backups, journal, workspace
from selfheal.core.config import DataQualityParams, Params

CHANGE_KEYS = ("converted", "outliers_capped", "missing_filled", "out_of_range")


def changes(report: dict[str, Any]) -> int:
    """How many cells or rows the fix changed (0: the file can stay as it is)."""
    cells = sum(int(c.get(k) or 0) for c in report["columns"].values() for k in CHANGE_KEYS)
    return cells + report["duplicates_removed"] + report["target_missing_dropped"]


def write_csv(data: Any, path: Path, like: Path | None = None) -> None:
    """The fixed data (a frame, or a pyarrow table from the all-numbers fix) as CSV in the style of `like`, the file
    it replaces, so a fix changes the lines it fixes and not the rest (a git-tracked CSV's diff stays readable):
    its line ends (CRLF ones inside quoted values too), and quotes only where it had them or a value needs them.
    pyarrow's writer: the same values as pandas' to_csv, ~8x faster on 1M rows (whole floats are written as 3
    rather than 3.0; every reader reads the same values)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    crlf, quoted_header, quoted = _style(like) if like is not None and like.is_file() else (False, True, True)
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    style = pacsv.WriteOptions(quoting_style="needed" if quoted else "none",
                               quoting_header="needed" if quoted_header else "none")
    try:
        pacsv.write_csv(table, path, style)
    except pa.ArrowInvalid:  # "none", and a value or name holds a delimiter, quote or line end: quote as needed
        pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    if crlf:  # pyarrow writes LF only
        lf = path.with_name(f".{path.name}.{os.getpid()}.lf{atomic.TMP_SUFFIX}")  # atomic.sweep's leftover form
        os.replace(path, lf)
        with lf.open("rb") as src, path.open("wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk.replace(b"\n", b"\r\n"))
        lf.unlink()


def _style(path: Path) -> tuple[bool, bool, bool]:
    """(CRLF line ends, a quoted header, quoted values) of a CSV, from its first 64 KiB."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    first, _, body = head.partition(b"\n")
    return first.endswith(b"\r"), first.startswith(b'"'), b'"' in body


def fix_file(path: Path, params: Params, pending: Future[Any] | None = None) -> dict[str, Any]:
    """Fix `path` in place (backup first); returns the data-fix log entry. Unfixable data raises DataError.
    `pending`: csvread.prefetch of `path`, started before anything else is imported. A file whose every column
    is plain numbers is fixed on arrays (numfix) without importing pandas; any other goes through fixes.fix."""
    from selfheal.pipeline.csvread import declared_text, float_columns, prefetch, table_of

    d = params.data
    text = declared_text(d.columns)
    pending = pending or prefetch(path, text)
    table = pending.result()
    columns = float_columns(table) if table is not None and table.num_rows else None
    if columns is not None:
        from selfheal.pipeline.numfix import fix_columns
        from selfheal.pipeline.schema import schema_of

        schema = schema_of(list(columns), lambda _: True, d.target, d.task, d.columns, d.ranges)

        def fixing() -> tuple[Any, dict[str, Any]]:
            fixed, report, _ = fix_columns(columns, schema, params.data_quality, str(path))
            return table_of(fixed), report
    else:
        from selfheal.pipeline.checks import infer_schema, read_csv_typed
        from selfheal.pipeline.fixes import fix

        raw = read_csv_typed(path, text, pending)
        schema = infer_schema(raw, d.target, d.task, d.columns, d.ranges)

        def fixing() -> tuple[Any, dict[str, Any]]:
            return fix(raw, schema, params.data_quality, source=str(path))
    return fix_in_place(path, fixing, params.data_quality, log=workspace.DATA_FIX_LOG,
                        backup_root=workspace.BACKUPS, method="selfheal fix-data (in place)")


NO_TARGET = "selfheal_no_target"  # a constant stand-in label for data without one: the fixes need a target column


def inspect(path: Path, target: str | None) -> tuple[Any, Any]:
    """(frame, schema) of a configured project's CSV or parquet data file; without a target, every column is a
    feature (a constant stand-in target is added, and dropped again before writing)."""
    from selfheal.pipeline.checks import infer_schema, read_csv_typed, read_parquet_checked

    raw = read_parquet_checked(path, "selfheal.yaml data.fix names it") if path.suffix == ".parquet" \
        else read_csv_typed(path)
    if target is None:
        raw[NO_TARGET] = 0
    schema = infer_schema(raw, target or NO_TARGET)
    if schema.columns.get(schema.target) == "categorical":
        schema.task = "classification"
    return raw, schema


def fix_configured(path: Path, target: str | None, dq: DataQualityParams, records: Path) -> dict[str, Any]:
    """Fix a configured project's data file in place: backups and the log go to its records directory."""
    from selfheal.pipeline.fixes import fix

    raw, schema = inspect(path, target)
    return fix_in_place(path, lambda: fix(raw, schema, dq, source=str(path)), dq,
                        log=records / workspace.DATA_FIX_LOG.name, backup_root=records / workspace.BACKUPS.name,
                        method="selfheal heal (selfheal.yaml data.fix)", journaled=False)


def planned(path: Path, target: str | None, dq: DataQualityParams) -> dict[str, Any]:
    """What fixing would change, without changing anything: the fix report and its count of `changes`."""
    from selfheal.pipeline.fixes import fix

    raw, schema = inspect(path, target)
    _, report = fix(raw, schema, dq, source=str(path))
    return {**report, "changes": changes(report) if dq.auto_fix_enabled else 0}


def _write(data: Any, path: Path) -> None:
    import pyarrow as pa

    if isinstance(data, pa.Table):  # from the all-numbers fix of a CSV (fix_file)
        atomic.atomic_write(path, lambda tmp: write_csv(data, tmp, like=path))
        return
    frame = data.drop(columns=[NO_TARGET], errors="ignore")
    if path.suffix == ".parquet":
        atomic.atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic.atomic_write(path, lambda tmp: write_csv(frame, tmp, like=path))


def fix_in_place(path: Path, fixing: Callable[[], tuple[Any, dict[str, Any]]], dq: DataQualityParams, *, log: Path,
                 backup_root: Path, method: str, journaled: bool = True) -> dict[str, Any]:
    """The fixes (`fixing`: the fixed data read from `path`, and the report), written back atomically after a
    backup when they change anything; the summary lines printed and an entry appended to `log`. `journaled`:
    recorded in the intent journal first (our own pipeline's heal settles it)."""
    from selfheal.pipeline.fixreport import summary_lines

    started = time.perf_counter()
    clean, report = fixing()
    n = changes(report) if dq.auto_fix_enabled else 0
    changing = journal.intent("auto_fix_data", log, f"fix-data on {path}", data_path=str(path)) \
        if n and journaled else nullcontext()
    with changing:
        backup = None
        if n:
            backup = backups.backup([path], "fix-data", root=backup_root, link=True)  # _write renames a new file in
            _write(clean, path)
        lines = summary_lines(report)
        for line in lines[:-1]:
            print(f"✅ {line}")
        print(("✅ " if report["valid_after"] else "❌ ") + lines[-1])
        if not dq.auto_fix_enabled:
            print("data_quality.auto_fix_enabled is false: the file was not changed")
        elif backup:
            print(f"Backup of the original in {backup}/")
        else:
            print(f"No issues to fix: {path} unchanged")
        return audit.append(
            log, "auto_fix_data", f"fix-data on {path}: {report['problems_before']} problem(s) found",
            bool(report["valid_after"]), data_path=str(path), method=method,
            problems_before=report["problems_before"], problems_after=report["problems_after"],
            rows_in=report["rows_in"], rows_out=report["rows_out"], changes=n, fixes=lines[:-1],
            backup=str(backup) if backup else None, duration_s=round(time.perf_counter() - started, 2),
        )
