"""Training data as cached, memory-mapped Arrow datasets: reuse, invalidation, located errors in big files,
the row-by-row reference path, streaming."""

from __future__ import annotations

import json
import os
import random

import pyarrow as pa
import pytest
from helpers import pair_rows, write_recipe, write_rows

from embedtrain.errors import DataError, RecipeError
from embedtrain.io.dataset_cache import load_dataset_cached, stream_dataset
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records


def _big_pairs(path, n, bad_at=None, bad=None, blank_every=0):
    """``n`` pair rows; row ``bad_at`` (0-based) replaced by ``bad``; a blank line after every ``blank_every`` rows.
    Returns the 1-based line of the bad row."""
    line_of_bad = None
    with path.open("w", encoding="utf-8") as fh:
        line = 0
        for i in range(n):
            row = bad if i == bad_at else {"query": f"question {i} with some words", "passage": f"passage {i} text"}
            fh.write(json.dumps(row) + "\n")
            line += 1
            if i == bad_at:
                line_of_bad = line
            if blank_every and (i + 1) % blank_every == 0:
                fh.write("\n")
                line += 1
    return line_of_bad


def test_second_load_opens_the_cache_and_a_changed_file_is_prepared_again(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_rows(path, pair_rows(50))
    first = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "cache")
    again = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "cache")
    assert not first.reused and again.reused and again.folder == first.folder
    assert again.dataset.column_names == ["anchor", "positive"] and len(again.dataset) == 50
    assert again.dataset.cache_files[0]["filename"].startswith(str(tmp_path / "cache"))  # memory-mapped from disk
    other_mapping = load_dataset_cached(path, "pairs", columns={"anchor": "passage", "positive": "query"},
                                        cache_dir=tmp_path / "cache")
    assert not other_mapping.reused and other_mapping.dataset[0]["anchor"].startswith("item 0 is")
    write_rows(path, pair_rows(51))  # new content: a new entry
    changed = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "cache")
    assert not changed.reused and len(changed.dataset) == 51 and changed.folder != first.folder
    assert first.meta["fast_path"] and first.meta["distinct_rows"] == 50


@pytest.mark.parametrize("bad,field,message", [
    ({"query": "q", "passage": 7}, "passage", "expected a string, got int 7"),
    ({"query": "   ", "passage": "p"}, "query", "empty text"),
    ({"query": "q"}, "passage", "missing column 'passage'"),
    ({"query": None, "passage": "p"}, "query", "expected a string, got NoneType None"),
])
def test_bad_row_deep_in_a_big_file_names_its_line(tmp_path, bad, field, message):
    path = tmp_path / "big.jsonl"
    line = _big_pairs(path, 120_000, bad_at=117_003, bad=bad, blank_every=1000)  # blank lines shift the numbering
    assert line == 117_003 + 1 + 117  # 117 blank lines before it
    with pytest.raises(DataError) as info:
        load_dataset_cached(path, "pairs", cache_dir=tmp_path / "cache")
    assert info.value.line == line and info.value.field == field and message in str(info.value)
    assert str(path) in str(info.value)
    assert not list((tmp_path / "cache").glob("big*-*[!k]"))  # no half-written cache entry is left


def test_big_csv_and_parquet_errors_name_line_and_row(tmp_path):
    import pandas as pd

    rows = [{"anchor": f"a {i}", "positive": f"p {i}"} for i in range(30_000)]
    rows[25_000]["positive"] = ""
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "big.csv", index=False)
    with pytest.raises(DataError) as info:
        load_dataset_cached(tmp_path / "big.csv", "pairs", cache_dir=tmp_path / "c")
    assert info.value.line == 25_002 and "empty text" in str(info.value)  # header is line 1
    frame.to_parquet(tmp_path / "big.parquet", row_group_size=4096)
    with pytest.raises(DataError, match="row 25000"):
        load_dataset_cached(tmp_path / "big.parquet", "pairs", cache_dir=tmp_path / "c")


def test_type_change_late_in_the_file_continues_row_by_row_with_the_same_result(tmp_path):
    path = tmp_path / "mixed.jsonl"
    with path.open("w") as fh:  # negatives switch from plain strings to mined {"text", "score"} items
        for i in range(40_000):
            negs = [f"n{i}a", f"n{i}b"] if i < 30_000 else [{"text": f"n{i}a", "score": 0.1}, f"n{i}b"]
            fh.write(json.dumps({"query": f"q {i}", "positive": f"p {i}", "negatives": negs}) + "\n")
    cached = load_dataset_cached(path, "hard_negatives", cache_dir=tmp_path / "c")
    assert not cached.meta["fast_path"]
    reference = to_dataset(read_records(path), "hard_negatives")
    assert cached.dataset.column_names == reference.column_names
    assert cached.dataset[29_999] == reference[29_999] and cached.dataset[39_999] == reference[39_999]
    assert cached.dataset["negative_2"][-3:] == reference["negative_2"][-3:]


def test_cache_is_not_python_lists(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_rows(path, pair_rows(20))
    ds = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "c").dataset
    assert isinstance(ds.data.table, pa.Table) and ds.cache_files  # Arrow, backed by a file


def test_prepared_file_has_few_large_record_batches(tmp_path, monkeypatch):
    """Opening a memory-mapped IPC stream reads every batch header (and maps the pages around it): the prepared
    file holds batches of BATCH_ROWS rows, not one per 512 KB block read from the source."""
    from embedtrain.io import dataset_cache, sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 4096)  # many small blocks read from the source
    monkeypatch.setattr(dataset_cache, "BATCH_ROWS", 1000)
    path = tmp_path / "pairs.jsonl"
    _big_pairs(path, 4500)
    ds = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "c").dataset
    with pa.memory_map(ds.cache_files[0]["filename"]) as mm:
        sizes = [b.num_rows for b in pa.ipc.open_stream(mm)]
    assert sum(sizes) == 4500 and 4 <= len(sizes) <= 5 and min(sizes[:-1]) >= 1000
    assert ds[4499] == {"anchor": "question 4499 with some words", "positive": "passage 4499 text"}


def _resident_mb(filename: str) -> float:
    """Resident size of this process's mappings of ``filename`` (/proc/self/smaps)."""
    kb, current = 0, None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if parts and "-" in parts[0] and not parts[0].endswith(":"):
                current = parts[5] if len(parts) > 5 else ""
            elif parts and parts[0] == "Rss:" and current == filename:
                kb += int(parts[1])
    return kb / 1024


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or not os.path.exists("/proc/self/smaps"),
                    reason="page-cache release and smaps are Linux-only")
def test_reading_a_few_rows_of_a_freshly_prepared_file_maps_little_of_it(tmp_path):
    """Right after preparation the file's pages sit in the page cache in large folios, and a memory-mapped row
    read maps the whole folio around it (16 random rows mapped ~45 MB of a 1M-pair file per rank); the cache
    entry is flushed and its pages dropped once written, so a row read maps only the readahead around it."""
    path = tmp_path / "pairs.jsonl"
    words = " ".join(f"word{i}" for i in range(90))
    with path.open("w", encoding="utf-8") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"query": f"question {i}", "passage": f"{i} {words}"}) + "\n")
    ds = load_dataset_cached(path, "pairs", cache_dir=tmp_path / "c").dataset
    filename = ds.cache_files[0]["filename"]
    size_mb = os.path.getsize(filename) / 2**20
    assert size_mb > 30
    rng = random.Random(0)
    for _ in range(16):
        i = rng.randrange(len(ds))
        assert ds[i]["anchor"] == f"question {i}"
    assert _resident_mb(filename) < 0.25 * size_mb


def test_model_card_examples_come_from_the_head_of_the_data(tmp_path, tiny_model_dir, monkeypatch):
    """sentence-transformers reads 1,000 random rows of the whole training set for the model card's widget (on a
    memory-mapped file of millions of rows that maps most of the file); embedtrain hands it the head instead."""
    from sentence_transformers.base.model_card import BaseModelCardData

    from embedtrain.api import train
    from embedtrain.train import card

    monkeypatch.setattr(card, "WIDGET_WINDOW", 30)
    seen = []
    original = BaseModelCardData.set_widget_examples

    def spy(self, dataset):
        seen.append({name: len(ds) for name, ds in dataset.items()})
        return original(self, dataset)

    monkeypatch.setattr(BaseModelCardData, "set_widget_examples", spy)
    rows = [{"anchor": f"head question {i}", "positive": f"head answer {i}"} for i in range(30)]
    rows += [{"anchor": f"TAIL question {i}", "positive": f"TAIL answer {i}"} for i in range(170)]
    write_rows(tmp_path / "pairs.jsonl", rows)
    recipe = {"model": {"name_or_path": str(tiny_model_dir)},
              "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
              "loss": {"name": "mnrl"}, "training": {"per_device_train_batch_size": 8, "max_steps": 1},
              "output_dir": str(tmp_path / "out")}
    result = train(write_recipe(tmp_path / "r.yaml", recipe))
    assert seen == [{"p": 30}]  # once, on the head; the trainer found the widget filled and skipped its pass
    readme = (result.final_dir / "README.md").read_text()
    assert "head question" in readme or "head answer" in readme
    assert "TAIL" not in readme


def test_streaming_checks_rows_as_they_are_read(tmp_path):
    path = tmp_path / "s.jsonl"
    _big_pairs(path, 30, bad_at=25, bad={"query": "q", "passage": ""})
    ds = stream_dataset(path, "pairs")
    assert ds.column_names == ["anchor", "positive"]
    assert next(iter(stream_dataset(path, "pairs", max_samples=10))) == {
        "anchor": "question 0 with some words", "positive": "passage 0 text"}
    with pytest.raises(DataError) as info:  # the batch holding the bad row stops the iteration
        list(ds)
    assert info.value.line == 26
    with pytest.raises(DataError, match="num_negatives"):
        stream_dataset(tmp_path / "s.jsonl", "hard_negatives", columns={"anchor": "query", "positive": "passage",
                                                                         "negatives": "passage"})


def test_streaming_recipe_limits_are_checked_before_training(tmp_path, tiny_model_dir):
    from embedtrain.api import train, validate

    write_rows(tmp_path / "pairs.jsonl", pair_rows(40))
    recipe = {"model": {"name_or_path": str(tiny_model_dir)},
              "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs", "streaming": True}],
              "loss": {"name": "mnrl"}, "training": {"per_device_train_batch_size": 8},
              "output_dir": str(tmp_path / "out")}
    with pytest.raises(RecipeError, match="max_steps") as info:
        validate(write_recipe(tmp_path / "r.yaml", recipe))
    assert info.value.field.endswith("streaming")
    recipe["training"]["max_steps"] = 3
    result = train(write_recipe(tmp_path / "r.yaml", recipe))
    assert result.global_step == 3 and (result.final_dir / "model.safetensors").exists()


def _jsonl(path, rows):
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


EQUIVALENCE_CASES = {
    "aliases": ([{"query": "q1", "pos": "p1"}, {"query": "q2", "pos": "p2"}], "pairs", {}, None),
    "mapping": ([{"a": "x", "b": "y", "c": 0.5}], "scored_pairs", {"sentence1": "a", "sentence2": "b", "score": "c"},
                None),
    "malformed": ([{"anchor": "a", "positive": "b"}, "", '{"anchor": "a", "positive": ', {"anchor": "c"}], "pairs",
                  {}, None),
    "missing_column": ([{"anchor": "a", "text": "b"}], "pairs", {}, None),
    "unknown_role": ([{"anchor": "a", "positive": "b"}], "pairs", {"postive": "b"}, None),
    "int_text": ([{"anchor": "a", "positive": "b"}] * 3 + [{"anchor": "a", "positive": 5}], "pairs", {}, None),
    "blank": ([{"anchor": " ", "positive": "b"}], "pairs", {}, None),
    "text_score": ([{"sentence1": "a", "sentence2": "b", "score": "high"}], "scored_pairs", {}, None),
    "nan_score": ([{"sentence1": "a", "sentence2": "b", "score": 1}, {"sentence1": "a", "sentence2": "b",
                                                                     "score": float("nan")}], "scored_pairs", {}, None),
    "neg_list": ([{"query": "q", "positive": "p", "negatives": ["n1", "n2", "n3"]}], "hard_negatives", {}, 2),
    "numbered": ([{"anchor": "q", "positive": "p", "negative_2": "b", "negative_1": "a"}], "hard_negatives", {},
                 None),
    "mined": ([{"query": "q", "positive": "p", "negatives": [{"text": "m", "score": 0.3}]}], "hard_negatives", {},
              None),
    "too_few": ([{"query": "q", "positive": "p", "negatives": ["a", "b"]},
                 {"query": "q2", "positive": "p2", "negatives": ["a"]}], "hard_negatives", {}, 2),
    "shortest": ([{"query": "q", "positive": "p", "negatives": ["a", "b"]},
                  {"query": "q2", "positive": "p2", "negatives": ["a"]}], "hard_negatives", {}, None),
    "mixed_items": ([{"query": "q", "positive": "p", "negatives": ["a", {"text": "b"}]},
                     {"query": "q2", "positive": "p2", "negatives": ["a", " "]}], "hard_negatives", {}, None),
    "no_negatives": ([{"query": "q", "positive": "p", "negatives": ["a"]},
                      {"query": "q2", "positive": "p2", "negatives": []}], "hard_negatives", {}, None),
    "not_object": ([json.dumps(["a", "b"])], "pairs", {}, None),
    "late_missing": ([{"anchor": "a", "positive": "b"}, {"anchor": "c"}], "pairs", {}, None),
}


@pytest.mark.parametrize("case", sorted(EQUIVALENCE_CASES))
def test_same_rows_and_errors_as_the_row_by_row_reader(tmp_path, case):
    rows, fmt, columns, n = EQUIVALENCE_CASES[case]
    path = _jsonl(tmp_path / f"{case}.jsonl", rows)

    def outcome(load):
        try:
            ds = load()
            return "ok", ds.column_names, ds.to_list()
        except DataError as exc:
            return "error", str(exc), exc.line, exc.field

    reference = outcome(lambda: to_dataset(read_records(path), fmt, columns, n))
    cached = outcome(lambda: load_dataset_cached(path, fmt, columns=columns, num_negatives=n,
                                                 cache_dir=tmp_path / "c").dataset)
    assert cached == reference


def test_bom_bad_utf8_csv_quoting(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes('\ufeff{"anchor": "a", "positive": "b"}\n'.encode())
    assert load_dataset_cached(tmp_path / "bom.jsonl", "pairs", cache_dir=tmp_path / "c").dataset[0]["anchor"] == "a"
    (tmp_path / "bad.jsonl").write_bytes(b'{"anchor": "a", "positive": "b"}\n{"anchor": "c\xff", "positive": "d"}\n')
    with pytest.raises(DataError, match="not UTF-8") as info:
        load_dataset_cached(tmp_path / "bad.jsonl", "pairs", cache_dir=tmp_path / "c")
    assert info.value.line == 2
    (tmp_path / "q.csv").write_bytes('\ufeffanchor,positive\n"multi\nline",b\n\nc,\n'.encode())
    with pytest.raises(DataError) as info:  # the quoted record spans lines 2-3, a blank line, then line 5
        load_dataset_cached(tmp_path / "q.csv", "pairs", cache_dir=tmp_path / "c")
    assert info.value.line == 5 and "empty text" in str(info.value)
