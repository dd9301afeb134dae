"""Dask as users run it: a `dask scheduler` and two `dask worker` processes on 127.0.0.1, reached through
SELFHEAL_DASK_SCHEDULER. The fix_data and monitor stages run their partitions there (workers in a working
directory of their own: the stages pass absolute paths) with outputs equal to the local engine's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfheal.core import workspace
from selfheal.core.config import load_params
from selfheal.ops.sandbox import run_stage, set_params
from selfheal.pipeline.artifact import save_model
from selfheal.pipeline.engine import SCHEDULER_ENV
from selfheal.pipeline.synth import inject_faults, make_current, make_housing
from selfheal.pipeline.training import train
from selfheal.service import procs

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).parent / "dask")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """tcp://127.0.0.1:<port> of a scheduler with two single-thread workers, all real processes."""
    home = tmp_path_factory.mktemp("dask")
    spec = home / "scheduler.json"
    started = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                                 ":0", "--scheduler-file", str(spec)], cwd=home, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not spec.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        started += [subprocess.Popen([DASK, "worker", "--scheduler-file", str(spec), "--nthreads", "1",
                                      "--no-dashboard", "--name", f"w{i}"], cwd=home, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL) for i in range(2)]
        address = json.loads(spec.read_text())["address"]
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in started:
            if not procs.wait_gone(proc.pid, 15):
                proc.kill()
            proc.wait()


def _project(root: Path) -> Path:
    """params.yaml with small partitions, dirty raw data and a drifted dirty batch, a model and its reference."""
    root.mkdir()
    (root / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    set_params(root, scale={"partition_mb": 0.1, "workers": 2})
    params = load_params(root / "params.yaml")
    raw = root / params.data.raw
    raw.parent.mkdir(parents=True)
    inject_faults(make_housing(4000, seed=2), missing=0.02, outliers=0.01, duplicates=0.01, dtype_errors=0.01,
                  seed=2).to_csv(raw, index=False)
    current = root / params.data.current
    current.parent.mkdir(parents=True)
    inject_faults(make_current(3000, drift=0.5, seed=5), missing=0.01, outliers=0.0, duplicates=0.0,
                  dtype_errors=0.01, seed=5).to_csv(current, index=False)
    params.train.model = "linear"
    pipeline, meta, reference, _ = train(make_housing(2000, seed=1), params)
    save_model(pipeline, meta, root / workspace.MODEL)
    reference.to_parquet(root / workspace.REFERENCE, index=False)
    return root


def _outputs(root: Path) -> dict[str, object]:
    import pandas as pd

    clean = root / load_params(root / "params.yaml").data.clean
    quality = json.loads((root / workspace.DATA_QUALITY).read_text())
    return {"clean": pd.read_parquet(clean).sort_index(axis=1), "drift": json.loads((root / workspace.DRIFT).read_text()),
            "quality": {k: v for k, v in quality.items() if k not in ("engine", "partitions")}}


def test_fix_data_and_monitor_on_a_dask_scheduler_equal_the_local_engine(tmp_path: Path, scheduler: str) -> None:
    import pandas as pd

    local = _project(tmp_path / "local")
    remote = tmp_path / "remote"
    shutil.copytree(local, remote)
    set_params(remote, scale={"engine": "dask", "partition_mb": 0.1, "workers": 2})
    for stage in ("fix_data", "monitor"):
        ran = run_stage(stage, local)
        assert ran.returncode == 0, ran.stderr
        ran = run_stage(stage, remote, **{SCHEDULER_ENV: scheduler})
        assert ran.returncode == 0, ran.stderr
    quality = json.loads((remote / workspace.DATA_QUALITY).read_text())
    assert quality["engine"] == "dask" and quality["partitions"] >= 3
    ours, theirs = _outputs(local), _outputs(remote)
    pd.testing.assert_frame_equal(theirs.pop("clean"), ours.pop("clean"))
    assert theirs == ours
    assert ours["drift"]["current_rows"] == 3000 and ours["drift"]["drift_detected"] is True
