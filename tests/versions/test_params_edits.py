"""Params edited since dvc.lock, read without DVC: only the stages that make the model, transitively."""

from __future__ import annotations

from pathlib import Path

import yaml

from selfheal.versions.params_edits import files_of, params_changed, upstream

LOCK = {
    "prepare": {"deps": [{"path": "data.csv", "md5": "d"}], "outs": [{"path": "prepared", "md5": "p.dir"}],
                "params": {"params.yaml": {"prepare.split": 0.2}}},
    "train": {"deps": [{"path": "prepared/train.csv", "md5": "t"}], "outs": [{"path": "model.pkl", "md5": "m"}],
              "params": {"params.yaml": {"train.n_est": 50}, "conf/train.yaml": {"epochs": 3}}},
    "report": {"deps": [{"path": "other.csv", "md5": "o"}], "outs": [{"path": "report.html", "md5": "r"}],
               "params": {"params.yaml": {"report.title": "x"}}},
}


def test_upstream_follows_outputs_into_directories_and_leaves_other_stages_out() -> None:
    assert sorted(upstream(LOCK, ["train"])) == ["prepare", "train"]


def test_changed_params_are_named_by_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare": {"split": 0.2}, "train": {"n_est": 1},
                                                         "report": {"title": "y"}}))
    (tmp_path / "conf/train.yaml").write_text(yaml.safe_dump({"epochs": 3}))
    edited = params_changed(upstream(LOCK, ["train"]), tmp_path)
    assert edited == ["params.yaml:train.n_est"]  # the report stage's edit is not the model's business
    assert set(files_of(edited, tmp_path)) == {"params.yaml"}
    (tmp_path / "conf/train.yaml").unlink()  # a params file gone: every key it held changed
    assert "conf/train.yaml:epochs" in params_changed(LOCK, tmp_path)
