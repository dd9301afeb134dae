"""Reading CSVs safely, schema inference and validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from selfheal.core.errors import ConfigError, DataError
from selfheal.pipeline.checks import infer_schema, parse_numbers, read_csv_checked, validate


def write(tmp_path, text: str | bytes, name: str = "in.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "file not found"),
        ("", "file is empty"),
        ("a,y\n", "header only"),
        (b"\x7fELF\x02\x01\x00\x00binary", "not a CSV (binary content)"),
        ("just some words\nmore words\n", "not a CSV (found 1 column"),
        ("a,a,y\n1,2,3\n", "duplicate column name(s) 'a'"),
        ("a,y\n1,2\n3,4,5\n", "not a valid CSV"),
        (b"a,y\n1,2\n\xff\xfe,3\n", "row 3, column 1 ('a'): not UTF-8 text"),
    ],
)
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, content, problem) -> None:
    path = tmp_path / "in.csv" if content is None else write(tmp_path, content)
    with pytest.raises(DataError) as exc:
        read_csv_checked(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_columns_are_read_as_text_so_mismatches_stay_visible(tmp_path) -> None:
    df = read_csv_checked(write(tmp_path, "\ufeffx,name,y\r\n1.5, 2 ,a\r\n?,b,3\r\n,c,4\r\n"))
    assert list(df.columns) == ["x", "name", "y"]
    assert df.x.tolist() == ["1.5", "?", ""] and df.name.tolist() == [" 2 ", "b", "c"]


def test_parse_numbers_counts_text_and_converts_padded_numbers() -> None:
    parsed = parse_numbers(pd.Series(["1", " 2.5 ", "N/A", "?", "", "abc", "-3e2", ".5"], dtype="str"))
    assert parsed.text == 4 and parsed.n_converted == 1
    assert parsed.values.tolist()[:2] == [1.0, 2.5] and parsed.values.tolist()[-2:] == [-300.0, 0.5]
    assert pd.isna(parsed.values[2:6]).all()


def test_infer_schema_numeric_categorical_and_overrides() -> None:
    df = pd.DataFrame({
        "num": ["1"] * 97 + ["?", "N/A", " 3 "],  # placeholders don't count against a numeric column
        "few_words": ["1"] * 94 + ["x"] * 6,  # 6% words -> categorical
        "city": ["LA", "SF"] * 50,
        "zip": ["90210"] * 100,
        "y": ["1.0"] * 100,
    }, dtype="str")
    schema = infer_schema(df, "y", overrides={"zip": "categorical"})
    assert schema.columns == {"num": "numeric", "few_words": "categorical", "city": "categorical",
                              "zip": "categorical", "y": "numeric"}
    assert schema.features == ["num", "few_words", "city", "zip"]


def test_infer_schema_rejects_ranges_and_overrides_it_cannot_apply() -> None:
    df = pd.DataFrame({"x": ["1", "2"], "c": ["a", "b"], "y": ["1", "2"]}, dtype="str")
    with pytest.raises(ConfigError, match="unknown column"):
        infer_schema(df, "y", overrides={"nope": "numeric"})
    with pytest.raises(ConfigError, match="c is categorical"):
        infer_schema(df, "y", ranges={"c": [0, 1]})
    with pytest.raises(ConfigError, match="lower bound"):
        infer_schema(df, "y", ranges={"x": [5, 1]})


def test_validate_lists_every_problem_with_counts() -> None:
    df = pd.DataFrame({
        "x": ["1", " 2 ", "?", "", "500", "1"],
        "c": ["a", "N/A", "b", "b", "a", "a"],
        "y": ["1", "2", "3", "", "5", "1"],
    }, dtype="str")
    schema = infer_schema(df, "y", ranges={"x": [0, 100]})
    found = {(p.column, p.kind): p.count for p in validate(df, schema)}
    assert found == {
        ("x", "dtype_mismatch"): 2,
        ("x", "missing"): 2,
        ("x", "out_of_range"): 1,
        ("c", "missing"): 1,
        ("y", "missing"): 1,
        (None, "duplicates"): 1,
    }
    assert not any(p.fatal for p in validate(df, schema))


def test_validate_fatal_problems() -> None:
    df = pd.DataFrame({"x": ["", "N/A"], "y": ["1", "2"]}, dtype="str")
    [problem] = [p for p in validate(df, infer_schema(df, "y")) if p.fatal]
    assert problem.kind == "empty_column" and "'x' is entirely empty" in problem.message
    [missing] = validate(df, infer_schema(df, "target"))
    assert missing.fatal and missing.kind == "target_missing" and "'target' not found" in missing.message
    words = pd.DataFrame({"x": ["1", "2"], "y": ["cat", "dog"]}, dtype="str")
    [text] = validate(words, infer_schema(words, "y"))
    assert text.fatal and text.kind == "target_not_numeric"
    assert validate(words, infer_schema(words, "y", task="classification")) == []


@pytest.mark.parametrize(("content", "says"), [
    (b"MedInc,Hous\xe9Age,MedHouseVal\n1,2,3\n", "the header, column 2: not UTF-8 text (b'Hous\\xe9Age')"),
    (b"MedInc,HouseAge,MedHouseVal\n1,2,3\n4,\xe9,5\n", "row 3, column 2 ('HouseAge'): not UTF-8 text (b'\\xe9')"),
])
def test_text_that_is_not_utf8_is_one_line_naming_file_row_and_column(tmp_path: Path, content: bytes,
                                                                        says: str) -> None:
    from selfheal.pipeline.checks import read_csv_typed

    path = tmp_path / "latin1.csv"
    path.write_bytes(content)
    for read in (read_csv_checked, read_csv_typed):  # the text reading and the fast numbers reading
        with pytest.raises(DataError) as err:
            read(path)
        assert str(err.value) == f"{path}: {says}; save the file as UTF-8"


def test_tab_separated_text_is_read_like_a_csv(tmp_path: Path) -> None:
    """example-get-started's data is TSV: data checks and drift read it (data.fix stays CSV and parquet)."""
    from selfheal.core.project import DriftSection

    path = tmp_path / "data.tsv"
    path.write_text("label\tscore\ttext\n1\t3.5\thow to plot\n0\t1.0\tread a, b\n")
    frame = read_csv_checked(path)
    assert list(frame.columns) == ["label", "score", "text"] and frame["text"].tolist() == ["how to plot", "read a, b"]
    assert DriftSection(reference="data/train.tsv", current="data/new.tsv").current == "data/new.tsv"
    one_column = tmp_path / "wrong.tsv"
    one_column.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="expected tab-separated columns"):
        read_csv_checked(one_column)
