"""Reading a CSV with pyarrow alone (no pandas): its checked header, every column as text, or plain-number columns
as float64. Importing nothing heavier than pyarrow lets `selfheal fix-data` start reading (`prefetch`, on pyarrow's
threads) while the rest of the command imports pandas.
"""

from __future__ import annotations

import csv
import mmap
import re
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from selfheal.core.errors import DataError


def delimiter_of(path: str | Path) -> str:
    """The field separator of delimited text: a tab for `.tsv`, else a comma."""
    return "\t" if str(path).lower().endswith(".tsv") else ","


def csv_header(path: str | Path) -> list[str]:
    """The header of a CSV (or TSV); a file that is absent, empty, binary or has one column is a one-line
    DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        return header_of(fh.read(1 << 16), path, delimiter_of(path))


def header_of(head: bytes, path: str | Path, delimiter: str = ",") -> list[str]:
    """The header in the first bytes `head` of the CSV `path` (checked as csv_header says)."""
    if not head.strip():
        raise DataError(f"{path}: file is empty (expected a CSV with a header row)")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV (binary content)")
    raw_first = next((line for line in head.splitlines() if line.strip()), b"")
    try:
        raw_first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(_not_utf8(path, 1, raw_first, None)) from None
    try:
        first = next(line for line in head.decode("utf-8-sig", errors="replace").splitlines() if line.strip())
        header = next(csv.reader([first], delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise DataError(f"{path}: not a CSV ({exc})") from None
    dups = sorted(name for name, n in Counter(header).items() if n > 1)
    if dups:
        raise DataError(f"{path}: duplicate column name(s) {', '.join(map(repr, dups))}")
    if len(header) < 2:
        what = "tab" if delimiter == "\t" else "comma"
        raise DataError(f"{path}: not a CSV (found 1 column {header[0][:40]!r}; expected {what}-separated columns)")
    return header


def read_csv_text(source: Any, header: list[str], name: str | Path, with_header: bool = True) -> pa.Table:
    """Every column of a CSV or TSV (a path or a file object of rows; `name` says which) as arrow text;
    unreadable content is a DataError."""
    try:
        return pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=16 << 20, column_names=None if with_header else header),
            parse_options=pacsv.ParseOptions(delimiter=delimiter_of(name)),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        if isinstance(source, (str, Path)) and ("UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError)):
            where = _first_not_utf8(Path(source), header)
            if where:
                raise DataError(where) from None
        raise DataError(f"{name}: not a valid CSV ({str(exc).splitlines()[0]})") from None


def _not_utf8(path: str | Path, row: int, line: bytes, header: list[str] | None) -> str:
    """One line naming the file, the row and the column whose bytes are not UTF-8 text."""
    cells = line.rstrip(b"\r\n").split(b",")
    column = next(i for i, cell in enumerate(cells) if _bad(cell)) if any(_bad(c) for c in cells) else 0
    name = header[column] if header and column < len(header) else None
    what = "the header" if row == 1 else f"row {row}"
    return (f"{path}: {what}, column {column + 1}{f' ({name!r})' if name else ''}: not UTF-8 text "
            f"({cells[column][:40]!r}); save the file as UTF-8")


def _bad(cell: bytes) -> bool:
    try:
        cell.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _first_not_utf8(path: Path, header: list[str]) -> str | None:
    """Where the first bytes that are not UTF-8 text are (row counted from 1, the header), or None."""
    with open(path, "rb") as fh:
        for row, line in enumerate(fh, 1):
            if _bad(line):
                return _not_utf8(path, row, line, header)
    return None


def declared_text(columns: Mapping[str, str]) -> tuple[str, ...]:
    """The columns data.columns declares categorical: read as text even when they hold numbers."""
    return tuple(c for c, kind in columns.items() if kind == "categorical")


def numbers_table(path: str | Path, text_columns: tuple[str, ...] = ()) -> pa.Table | None:
    """The CSV with every column whose cells are all plain finite numbers (or empty) as float64, parsed once by
    the multi-threaded reader, and the other columns and `text_columns` as text (as read_csv_text reads them).
    None when the text reading must decide: a space or tab after the header (the reader would trim " 3.2 ", which
    the text repair must see and count), or content that is not a valid CSV. The header is checked first."""
    header = csv_header(path)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        body = data.find(b"\n") + 1
        if data.find(b" ", body) >= 0 or data.find(b"\t", body) >= 0:
            return None
    text = set(text_columns)
    while len(text) < len(header):
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=16 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() if c in text else pa.float64() for c in header},
                    null_values=[""], strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            failed = re.match(r"In CSV column #(\d+): .*CSV conversion error", str(exc))
            if failed is None or int(failed[1]) >= len(header) or header[int(failed[1])] in text:
                return None  # not a number conversion error (bytes that are not UTF-8 text...): the text reading says
            text.add(header[int(failed[1])])
            continue
        odd = [c for c in header if c not in text and not _plain(table.column(c))]  # nan, inf, 1e400: text
        if not odd:
            return table
        text.update(odd)
    return None


def _plain(column: pa.ChunkedArray) -> bool:
    """No NaN or infinite number among the values (the text repair, not the reader, decides about those)."""
    for numbers, present in map(_chunk_floats, column.chunks):
        finite = np.isfinite(numbers)
        if not (finite.all() if present is None else finite[present].all()):
            return False
    return True


def _chunk_floats(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A float64 array's numbers (read-only, in place; what an empty cell holds is undefined) and which cells
    are not empty (None: all of them), read from its buffers: pyarrow's to_numpy and compute would import
    pandas, which the all-numbers fix does without."""
    n, start = len(chunk), chunk.offset
    validity, data = chunk.buffers()
    numbers = np.frombuffer(data, np.float64, n, start * 8)
    if not chunk.null_count:
        return numbers, None
    return numbers, np.unpackbits(np.frombuffer(validity, np.uint8), count=start + n, bitorder="little")[start:] \
        .astype(bool)


def prefetch(path: str | Path, text_columns: tuple[str, ...] = ()) -> Future[pa.Table | None]:
    """numbers_table started on another thread (the reader releases the GIL): its errors surface at result()."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="selfheal-read")
    pending = pool.submit(numbers_table, path, text_columns)
    pool.shutdown(wait=False)  # the read goes on; the pool is done once it ends
    return pending


def float_columns(table: pa.Table) -> dict[str, np.ndarray] | None:
    """The table's columns as float64 arrays (empty cells as NaN) when every column is float64, else None."""
    if not all(t == pa.float64() for t in table.schema.types):
        return None
    out = {}
    for name in table.column_names:
        chunks = [_chunk_floats(chunk) for chunk in table.column(name).chunks]
        values = out[name] = np.concatenate([numbers for numbers, _ in chunks] or [np.empty(0)])
        if table.column(name).null_count:
            values[~np.concatenate([np.ones(len(v), bool) if p is None else p for v, p in chunks])] = np.nan
    return out


def table_of(columns: dict[str, np.ndarray]) -> pa.Table:
    """float64 arrays as a table, NaN as empty (null) as pandas' conversion makes it; no pandas needed."""
    arrays = []
    for values in columns.values():
        values = np.ascontiguousarray(values, dtype=np.float64)
        present = ~np.isnan(values)
        valid = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
        arrays.append(pa.Array.from_buffers(pa.float64(), len(values), [valid, pa.py_buffer(values)]))
    return pa.Table.from_arrays(arrays, names=list(columns))
