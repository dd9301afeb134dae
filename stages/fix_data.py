"""DVC stage fix_data: data.raw (never modified) -> data.clean (parquet) + the data quality report (its record and
its declared metrics)."""

from __future__ import annotations

from selfheal.core import workspace
from selfheal.core.errors import run_main


def main() -> int:
    from selfheal.core.atomic import atomic_write
    from selfheal.core.config import load_params
    from selfheal.pipeline import metrics
    from selfheal.pipeline.checks import infer_schema, read_csv_checked
    from selfheal.pipeline.fixes import fix, summary_lines

    params = load_params()
    d = params.data
    raw = read_csv_checked(d.raw)
    schema = infer_schema(raw, d.target, d.task, d.columns, d.ranges)
    clean, report = fix(raw, schema, params.data_quality, source=d.raw)
    atomic_write(d.clean, lambda tmp: clean.to_parquet(tmp, index=False))
    report = metrics.write(workspace.DATA_QUALITY, workspace.DATA_QUALITY_METRICS, report, metrics.DATA_QUALITY)
    for line in summary_lines(report):
        print(line)
    return 0


if __name__ == "__main__":
    run_main(main)
