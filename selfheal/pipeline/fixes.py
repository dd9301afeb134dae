"""The data fixes on a pandas frame: text to numbers, out-of-range and missing values, duplicates, outliers.

Frame in, frame out, no DVC: the fix_data stage and the in-place `selfheal fix-data` command share it. The fixes
themselves are numfix.fix_columns (numpy for the numbers); this module types the frame and gives it the
operations on text columns.
"""

from __future__ import annotations

import pandas as pd

from selfheal.core.config import DataQualityParams
from selfheal.core.errors import DataError
from selfheal.pipeline.checks import Schema, SeriesText, as_columns, typed
from selfheal.pipeline.fixreport import summary_lines as summary_lines  # the stage and heal print them from here
from selfheal.pipeline.numfix import fix_columns
from selfheal.pipeline.schema import fatal_shape

HAD_MISSING = "selfheal_had_missing"  # DataFrame.attrs key: the features that had missing values before fixing


def fix(df: pd.DataFrame, schema: Schema, dq: DataQualityParams, source: str = "data") -> tuple[pd.DataFrame, dict]:
    """numfix.fix_columns on a frame (see there for the fixes and their order); returns the typed, fixed frame
    and the report (metrics/records/data_quality.json)."""
    shape = fatal_shape(list(df.columns), len(df), schema)
    if shape:
        raise DataError(f"{source}: {shape.message}")
    frame, parsed = typed(df, schema)
    fixed, report, had_missing = fix_columns(as_columns(frame, schema), schema, dq, source, parsed, SeriesText())
    out = pd.DataFrame({c: v.reset_index(drop=True) if isinstance(v, pd.Series) else v for c, v in fixed.items()},
                       copy=False)
    # carried in the parquet file's metadata to train, which records these columns as nullable in model.json
    out.attrs[HAD_MISSING] = had_missing
    return out, report
