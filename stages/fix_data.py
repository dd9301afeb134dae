"""DVC stage fix_data: data.raw (never modified) -> data.clean (parquet) + metrics/data_quality.json."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python stages/fix_data.py` without an install

from selfheal.errors import run_main  # noqa: E402

METRICS = "metrics/data_quality.json"


def main() -> int:
    from selfheal.config import load_params
    from selfheal.io import atomic_write, write_json
    from selfheal.quality import fix, summary_lines
    from selfheal.tabular import infer_schema, read_csv_checked

    params = load_params()
    d = params.data
    raw = read_csv_checked(d.raw)
    schema = infer_schema(raw, d.target, d.task, d.columns, d.ranges)
    clean, report = fix(raw, schema, params.data_quality, source=d.raw)
    atomic_write(d.clean, lambda tmp: clean.to_parquet(tmp, index=False))
    write_json(METRICS, report)
    for line in summary_lines(report):
        print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
