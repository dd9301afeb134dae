"""The DVC remote as a real, shared one: an S3-compatible server (moto_server from the lock file) started on a
loopback port. The README's remote commands as written, promote pushes, the cache is cleared, and the rollback
restores production from the remote and keeps the failed model where it says. Marked `remote`: not in
`make test`; `make test-remote` (and CI) run it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.core.atomic import md5_file
from tests.doc_blocks import block_with, run_block
from tests.heal_support import model_md5, production_of, read, run, selfheal, set_max_iter
from tests.moto_support import CREDENTIALS, moto_server, s3_client

pytestmark = [pytest.mark.remote, pytest.mark.slow]

BUCKET = "selfheal"


@pytest.fixture()
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server with one bucket; the environment a user of the README would export."""
    with moto_server(tmp_path) as endpoint:
        env = {**CREDENTIALS, "DVC_REMOTE_URL": f"s3://{BUCKET}/store", "DVC_REMOTE_ENDPOINT": endpoint}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        yield env


def _keys(env: dict[str, str]) -> set[str]:
    listed = s3_client(env["DVC_REMOTE_ENDPOINT"]).list_objects_v2(Bucket=BUCKET)
    return {o["Key"] for o in listed.get("Contents", [])}


def _key(md5: str) -> str:
    return f"store/files/md5/{md5[:2]}/{md5[2:]}"


@pytest.mark.timeout(900)  # three pipeline runs and S3 transfers: minutes on a loaded 2-core machine
def test_rollback_restores_production_from_the_s3_remote_after_the_cache_is_cleared(
    built_project: Path, tmp_path: Path, s3: dict[str, str]
) -> None:
    repo = tmp_path / "project"
    shutil.copytree(built_project, repo, symlinks=True)
    run_block(block_with("dvc remote add"), repo, **s3)  # the README's commands: the remote, then `dvc push`
    raw_md5 = md5_file(repo / "data/raw/housing.csv")
    assert _key(raw_md5) in _keys(s3)  # the raw data's version is on the remote too

    promoted = selfheal("promote", cwd=repo).stdout
    assert "pushed to DVC remote 'shared'" in promoted
    production = production_of(repo)
    assert _key(production["md5"]) in _keys(s3)

    set_max_iter(repo, 1)  # a much worse candidate
    run(["dvc", "repro", "validate"], repo)
    candidate = model_md5(repo)
    assert read(repo, str(workspace.VALIDATION))["passed"] is False and candidate != production["md5"]
    shutil.rmtree(repo / ".dvc/cache")  # nothing local: only the S3 remote has production's bytes
    assert not (repo / ".dvcstore").exists()

    out = selfheal("rollback", cwd=repo).stdout
    assert model_md5(repo) == production["md5"]
    kept = re.search(r"the failed model (\S+) is kept in the DVC cache: (\S+) \(and pushed to DVC remote 'shared'\)",
                     out)
    assert kept, out
    assert md5_file(repo / kept.group(2)) == candidate  # the message is true: the bytes are there...
    assert _key(candidate) in _keys(s3)  # ... and on the remote, so they survive the next cleared cache
    entry = audit.entries(repo / workspace.ROLLBACK_LOG)[-1]
    assert entry["failed_remote"] == "shared" and entry["failed_md5"] == candidate
