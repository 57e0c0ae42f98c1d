"""Data readers and formats: every reader, every format, and errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from embedtrain.errors import DataError
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records


def test_jsonl_pairs_with_aliases(write_jsonl):
    path = write_jsonl([{"query": "q1", "pos": "p1"}, {"query": "q2", "pos": "p2"}])
    ds = to_dataset(read_records(path), "pairs")
    assert ds.column_names == ["anchor", "positive"] and ds["positive"] == ["p1", "p2"]


def test_column_mapping(write_jsonl):
    path = write_jsonl([{"a": "x", "b": "y", "c": 0.5}])
    ds = to_dataset(read_records(path), "scored_pairs", {"sentence1": "a", "sentence2": "b", "score": "c"})
    assert ds[0] == {"sentence1": "x", "sentence2": "y", "score": 0.5}


def test_malformed_jsonl_line_number(write_jsonl):
    path = write_jsonl([{"anchor": "a", "positive": "b"}, "", '{"anchor": "a", "positive": ', {"anchor": "c"}])
    with pytest.raises(DataError) as info:
        read_records(path)
    assert info.value.line == 3 and "malformed JSON" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_column_lists_available(write_jsonl):
    path = write_jsonl([{"anchor": "a", "text": "b"}])
    with pytest.raises(DataError) as info:
        to_dataset(read_records(path), "pairs")
    msg = str(info.value)
    assert info.value.field == "positive" and info.value.line == 1 and "['anchor', 'text']" in msg


def test_mapped_column_missing(write_jsonl):
    path = write_jsonl([{"anchor": "a", "positive": "b"}])
    with pytest.raises(DataError) as info:
        to_dataset(read_records(path), "pairs", {"positive": "doc"})
    assert info.value.field == "doc"


def test_unknown_role_in_mapping(write_jsonl):
    path = write_jsonl([{"anchor": "a", "positive": "b"}])
    with pytest.raises(DataError, match="not a role"):
        to_dataset(read_records(path), "pairs", {"postive": "b"})


def test_bad_row_reports_its_line(write_jsonl):
    rows = [{"anchor": "a", "positive": "b"}] * 3 + [{"anchor": "a", "positive": 5}]
    with pytest.raises(DataError) as info:
        to_dataset(read_records(write_jsonl(rows)), "pairs")
    assert info.value.line == 4 and info.value.field == "positive" and "expected a string" in str(info.value)


def test_empty_text_and_bad_score(write_jsonl):
    with pytest.raises(DataError, match="empty text"):
        to_dataset(read_records(write_jsonl([{"anchor": " ", "positive": "b"}])), "pairs")
    rows = [{"sentence1": "a", "sentence2": "b", "score": "high"}]
    with pytest.raises(DataError) as info:
        to_dataset(read_records(write_jsonl(rows, "s.jsonl")), "scored_pairs")
    assert info.value.field == "score" and "must be a number" in str(info.value)


def test_json_list_records_know_their_lines(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n  {"anchor": "a", "positive": "b"},\n  {"anchor": "c",\n   "positive": null}\n]\n')
    records = read_records(path)
    assert records.positions == [2, 3]
    with pytest.raises(DataError) as info:
        to_dataset(records, "pairs")
    assert info.value.line == 3


def test_malformed_json_list(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"anchor": "a", "positive": "b"}\n {"anchor": "c", "positive": "d"}\n]')
    with pytest.raises(DataError) as info:
        read_records(path)
    assert info.value.line == 3


def test_csv_and_parquet_and_hf_disk(tmp_path):
    import datasets
    import pandas as pd

    df = pd.DataFrame({"anchor": ["a", "b"], "positive": ["c", "d"], "negative": ["e", "f"]})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    datasets.Dataset.from_pandas(df).save_to_disk(str(tmp_path / "hf"))
    for name in ("t.csv", "t.parquet", "hf"):
        ds = to_dataset(read_records(tmp_path / name), "triplets")
        assert ds["negative"] == ["e", "f"], name
    bad = pd.DataFrame({"anchor": ["a", "b"], "positive": ["c", None]})
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="row 1"):
        to_dataset(read_records(tmp_path / "bad.parquet"), "pairs")
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as info:
        to_dataset(read_records(tmp_path / "bad.csv"), "pairs")
    assert info.value.line == 3  # header is line 1


def test_hard_negatives_list_numbered_and_mined_dicts(write_jsonl):
    listed = write_jsonl([{"query": "q", "positive": "p", "negatives": ["n1", "n2", "n3"]}], "l.jsonl")
    ds = to_dataset(read_records(listed), "hard_negatives", num_negatives=2)
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    numbered = write_jsonl([{"anchor": "q", "positive": "p", "negative_2": "b", "negative_1": "a"}], "n.jsonl")
    assert to_dataset(read_records(numbered), "hard_negatives")[0]["negative_1"] == "a"
    mined = write_jsonl([{"query": "q", "positive": "p", "negatives": [{"text": "m", "score": 0.3}]}], "m.jsonl")
    assert to_dataset(read_records(mined), "hard_negatives")[0]["negative_1"] == "m"


def test_too_few_negatives_names_line(write_jsonl):
    rows = [{"query": "q", "positive": "p", "negatives": ["a", "b"]},
            {"query": "q2", "positive": "p2", "negatives": ["a"]}]
    with pytest.raises(DataError) as info:
        to_dataset(read_records(write_jsonl(rows)), "hard_negatives", num_negatives=2)
    assert info.value.line == 2 and "has 1 negatives" in str(info.value)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_records(tmp_path / "missing.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="file type"):
        read_records(tmp_path / "d.txt")


def test_non_object_line(write_jsonl):
    with pytest.raises(DataError) as info:
        read_records(write_jsonl([json.dumps(["a", "b"])]))
    assert info.value.line == 1
