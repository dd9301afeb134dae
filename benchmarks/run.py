"""Run every benchmarks/bench_*.py and write their figures to metrics/bench.json.

`python -m benchmarks.run [name ...]` runs only the named ones (e.g. `pipeline service`); results of the others
already in metrics/bench.json are kept, so one area can be re-measured alone.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
from pathlib import Path

from selfheal.core import atomic, workspace

OUT = workspace.BENCH


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in Path(__file__).parent.glob("bench_*.py"))
    results = atomic.read_json(OUT, {}) or {}
    failed = False
    for name in names:
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        try:
            figures = importlib.import_module(f"benchmarks.bench_{name}").run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            figures, failed = {"error": f"{type(exc).__name__}: {exc}"}, True
        figures["bench_seconds"] = round(time.perf_counter() - started, 2)
        results[name] = figures
        print(json.dumps(figures, indent=2), flush=True)
    results["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}
    atomic.write_json(OUT, results)
    print(f"wrote {OUT}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
