"""Reading a CSV safely, inferring its schema and validating it.

The CSV is read with every column as text (pyarrow, multi-threaded): a dtype mismatch such as " 3.2 " or "?"
in a numeric column is only visible before pandas guesses types, and arrow strings keep a million rows cheap.
read_csv_typed reads columns of plain numbers as numbers straight away, the others as text.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from selfheal.core.errors import DataError
from selfheal.pipeline import numfix
from selfheal.pipeline.csvread import csv_header, numbers_table, read_csv_text
from selfheal.pipeline.schema import Parsed, Problem, Schema, fatal_shape, schema_of

# Written in place of a value by people and tools; compared after stripping, case-insensitively.
PLACEHOLDERS = ["", "n/a", "na", "?", "null", "none", "nan", "-"]
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
NUMERIC_SHARE = 0.95  # a column is numeric when this share of its non-placeholder values are numbers


def read_csv_checked(path: str | Path) -> pd.DataFrame:
    """Every column as text; a file that is absent, empty, header-only or not a CSV is a one-line DataError."""
    table = read_csv_text(path, csv_header(path), path)
    if table.num_rows == 0:
        raise DataError(f"{path}: header only, no data rows")
    return table.to_pandas()


def read_csv_typed(path: str | Path, text_columns: tuple[str, ...] = (),
                   pending: Future[pa.Table | None] | None = None) -> pd.DataFrame:
    """read_csv_checked's frame, but a column of plain finite numbers comes back as float64 (csvread.numbers_table;
    `pending`: that table, prefetched): `typed` and `infer_schema` treat it exactly as the text column it replaces
    (same values, same verdicts) at a fraction of the cost. Checks and errors as read_csv_checked."""
    table = numbers_table(path, text_columns) if pending is None else pending.result()
    if table is None:
        return read_csv_checked(path)
    if table.num_rows == 0:
        raise DataError(f"{path}: header only, no data rows")
    return table.to_pandas(split_blocks=True)


def read_parquet_checked(path: str | Path, missing_hint: str) -> pd.DataFrame:
    """Read a stage's parquet input; a missing, truncated or foreign file is one line naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: not found ({missing_hint})")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # truncated or foreign file
        raise DataError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None


def _text(series: pd.Series) -> pa.ChunkedArray:
    """The column as arrow strings with missing values as "" (zero-copy for the str columns read above)."""
    if not isinstance(series.dtype, pd.StringDtype):
        series = series.astype("str")
    arr = pa.array(series)
    return pc.fill_null(arr, "")


def _cast_numbers(s: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """The column cast straight to float64 when every non-empty cell is a plain number (the common case, ~10x
    cheaper than matching each cell); None when some cell needs the text repair below."""
    try:
        values = pc.cast(pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = values.to_numpy(zero_copy_only=False)
    # arrow also reads "nan", "inf" and "1e400", which the number pattern treats as text: leave those to it
    return out if np.isfinite(out[~np.isnan(out)]).all() and not pc.any(pc.is_nan(values)).as_py() else None


def _finite(parsed: Parsed) -> Parsed:
    """inf and -inf (1e309 in a CSV) as missing: no model can fit or predict them."""
    inf = np.isinf(parsed.values)
    if inf.any():
        parsed.values = parsed.values if parsed.values.flags.writeable else parsed.values.copy()
        parsed.values[inf] = np.nan
        parsed.nonfinite = int(inf.sum())
    return parsed


def parse_numbers(series: pd.Series) -> Parsed:
    """Numbers from a column, reading padded text (" 3.2 ") too; placeholders, garbage and inf become NaN."""
    return _finite(_parse_numbers(series))


def _parse_numbers(series: pd.Series) -> Parsed:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return Parsed(series.to_numpy(dtype="float64", na_value=np.nan))
    s = _text(series)
    fast = _cast_numbers(s)
    if fast is not None:
        return Parsed(fast)
    plain = pc.match_substring_regex(s, _NUMBER)
    values = pc.cast(pc.if_else(plain, s, pa.scalar(None, pa.string())), pa.float64()).to_numpy(zero_copy_only=False)
    text = pc.invert(pc.or_(plain, pc.equal(s, "")))
    n_text = pc.sum(text).as_py() or 0
    if not n_text:
        return Parsed(values)
    # the few text cells only: those that are numbers once stripped of spaces are converted
    where = np.flatnonzero(text.to_numpy(zero_copy_only=False))
    values = values if values.flags.writeable else values.copy()
    stripped = pc.utf8_trim_whitespace(pc.filter(s, text))
    ok = pc.match_substring_regex(stripped, _NUMBER).to_numpy(zero_copy_only=False)
    values[where[ok]] = pc.cast(pc.filter(stripped, pa.array(ok)), pa.float64()).to_numpy(zero_copy_only=False)
    converted = np.zeros(len(values), dtype=bool)
    converted[where[ok]] = True
    return Parsed(values, n_text, converted)


def categorical_values(series: pd.Series) -> pd.Series:
    """A categorical column as str with placeholders ("N/A", "?", "") as missing."""
    s = _text(series)
    missing = pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(s)), value_set=pa.array(PLACEHOLDERS))
    return pd.Series(pc.if_else(missing, pa.scalar(None, pa.string()), s), index=series.index, dtype="str")


def _looks_numeric(series: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return True
    sample = series.iloc[:: max(1, len(series) // 200_000)]  # plenty to tell numbers from words
    stripped = pc.utf8_trim_whitespace(_text(sample))
    present = pc.invert(pc.is_in(pc.utf8_lower(stripped), value_set=pa.array(PLACEHOLDERS)))
    n_present = pc.sum(present).as_py() or 0
    n_numbers = pc.sum(pc.and_(present, pc.match_substring_regex(stripped, _NUMBER))).as_py() or 0
    return n_present == 0 or n_numbers >= NUMERIC_SHARE * n_present


def infer_schema(
    df: pd.DataFrame, target: str, task: str = "regression", overrides: dict | None = None, ranges: dict | None = None
) -> Schema:
    """Numeric when >= 95% of a column's non-placeholder values are numbers; `overrides` (data.columns) win."""
    return schema_of(list(df.columns), lambda c: _looks_numeric(df[c]), target, task, overrides, ranges)


def typed(df: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, dict[str, Parsed]]:
    """The frame with numeric columns as float64 and categorical ones as str (placeholders -> missing)."""
    cols, parsed = {}, {}
    for col, kind in schema.columns.items():
        if kind == "numeric":
            p = parsed[col] = parse_numbers(df[col])
            p.values = p.values if p.values.flags.writeable else p.values.copy()  # callers write into it (partitioned)
            cols[col] = pd.Series(p.values, index=df.index, copy=False)
        else:
            cols[col] = categorical_values(df[col])
    return pd.DataFrame(cols, index=df.index, copy=False), parsed  # one block per column: no 2-D copy


def out_of_range(values: pd.Series, bounds: tuple[float, float]) -> pd.Series:
    return (values < bounds[0]) | (values > bounds[1])


class SeriesText:
    """numfix.TextColumns on the str Series of a typed frame (missing as NA)."""

    def missing(self, values: pd.Series) -> np.ndarray:
        return values.isna().to_numpy()

    def hash(self, values: pd.Series) -> np.ndarray:
        return pd.util.hash_pandas_object(values, index=False).to_numpy()

    def take(self, values: pd.Series, keep: np.ndarray) -> pd.Series:
        return values[keep]

    def fill(self, values: pd.Series) -> tuple[pd.Series, str]:
        mode = values.mode().iloc[0]
        return values.fillna(mode), str(mode)


def as_columns(frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """A typed frame's columns as numfix takes them: numeric ones as float64 arrays, text ones as Series."""
    return {c: frame[c].to_numpy() if kind == "numeric" else frame[c] for c, kind in schema.columns.items()}


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's values (the index left out; the same as pandas.util.hash_pandas_object's)."""
    text = SeriesText()
    return numfix.combine_hashes((numfix.hash_numbers(s.to_numpy()) if s.dtype == np.float64 else text.hash(s)
                                  for _, s in frame.items()), frame.shape[1])


def problems(frame: pd.DataFrame, parsed: dict[str, Parsed], schema: Schema) -> list[Problem]:
    """The findings on a frame already typed by `typed` (so a caller that needs both parses only once)."""
    return numfix.problems(as_columns(frame, schema), schema, parsed, SeriesText())


def validate(df: pd.DataFrame, schema: Schema) -> list[Problem]:
    """Everything wrong with `df` under `schema`; duplicates are counted on the typed values."""
    fatal = fatal_shape(list(df.columns), len(df), schema)
    if fatal:
        return [fatal]
    return problems(*typed(df, schema), schema)
