"""DVC stage fix_data: data.raw (never modified) -> data.clean (parquet) + the data quality report (its record and
its declared metrics).

Data above scale.partition_mb (or a directory/glob of parts, or engine: dask) is fixed partition by partition
(selfheal.pipeline.partitioned) and data.clean becomes a directory of parquet parts; smaller data is fixed in
memory into one parquet file, as always.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selfheal.core import workspace
from selfheal.core.errors import run_main


def main() -> int:
    from selfheal.core.atomic import atomic_write
    from selfheal.core.config import load_params
    from selfheal.pipeline import metrics, partitioned
    from selfheal.pipeline.fixes import summary_lines
    from selfheal.pipeline.fixreport import changed_columns

    params = load_params()
    d, scale = params.data, params.scale
    if partitioned.wanted(d.raw, scale):
        report = partitioned.fix_partitioned(
            d.raw, d.clean, d.target, d.task, d.columns, d.ranges, params.data_quality, scale.engine,
            scale.partition_mb, scale.workers,
        )
    else:
        from selfheal.pipeline.checks import infer_schema, read_csv_typed
        from selfheal.pipeline.csvread import declared_text
        from selfheal.pipeline.fixes import fix

        raw = read_csv_typed(d.raw, declared_text(d.columns))
        schema = infer_schema(raw, d.target, d.task, d.columns, d.ranges)
        clean, report = fix(raw, schema, params.data_quality, source=d.raw)
        if Path(d.clean).is_dir():  # a partitioned output of a larger earlier input
            shutil.rmtree(d.clean)
        atomic_write(d.clean, lambda tmp: clean.to_parquet(tmp, index=False))
    report = metrics.write(workspace.DATA_QUALITY, workspace.DATA_QUALITY_METRICS, report, metrics.DATA_QUALITY)
    for line in summary_lines(report):
        print(line)
    changed = changed_columns(report)
    print("fix_data: changed nothing" if not changed else "\n  ".join(
        ["fix_data: changed per column (the data_quality switch in brackets turns that fix off):", *changed]))
    return 0


if __name__ == "__main__":
    run_main(main)
