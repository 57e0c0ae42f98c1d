"""Mining a BEIR folder (title + text, as mteb embeds it), positives never their own negatives, dropped rows."""

from __future__ import annotations

import json
import logging

import pytest

from embedtrain.errors import DataError
from embedtrain.evaluation.local_data import document_text
from embedtrain.mining.filtering import FilterCounts, drop_reason, is_positive_copy
from embedtrain.mining.offline import mine, run_mining
from embedtrain.schema.mining import OfflineMiningConfig
from tests.test_mining_offline import AngleModel

DOCS = [  # _id, title, text, angle of title + text
    ("d1", "Aspirin and the heart", "Aspirin lowers the risk of a second heart attack in adults.", 10),
    ("d2", "Statins", "Statins reduce cholesterol and cardiovascular events in trials.", 20),
    ("d3", "", "Exercise improves blood pressure in older adults over a year.", 30),
    ("d4", "Sleep", "Short sleep is associated with weight gain in children.", 40),
    ("d5", "Salt", "Dietary salt raises blood pressure in most people studied.", 50),
]
QUERIES = {"q1": ("aspirin prevents heart attacks", 0), "q2": ("salt and blood pressure", 55)}


@pytest.fixture
def beir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x, _ in DOCS), "utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items()), "utf-8")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td5\t1\nq2\td3\t0\n",
                                                "utf-8")
    angles = {document_text(t, x): a for _, t, x, a in DOCS}
    angles.update({text: a for text, a in QUERIES.values()})
    for _, t, x, a in DOCS:  # the text alone points the same way as title + text
        angles.setdefault(x, a)
    return folder, AngleModel(angles)


def _cfg(tmp_path, **kw):
    base = dict(model="unused", output=str(tmp_path / "mined.jsonl"), num_negatives=2, range_max=50)
    return OfflineMiningConfig(**{**base, **kw})


def test_document_text_is_mtebs_join():
    from mteb._create_dataloaders import _corpus_to_dict

    for title, text in (("A title", "the text"), ("", " the text "), ("  ", "x"), ("T", "")):
        row = {"id": "1", "title": title, "text": text}
        assert document_text(title, text) == _corpus_to_dict(row)["text"], (title, text)


def test_a_beir_folder_is_mined_with_title_and_text(beir, tmp_path):
    folder, model = beir
    result = mine(_cfg(tmp_path, input=str(folder)), model=model)
    rows = {r["anchor"]: r for r in result.rows}
    assert set(rows) == {"aspirin prevents heart attacks", "salt and blood pressure"}  # score-0 qrel left out
    q1 = rows["aspirin prevents heart attacks"]
    assert q1["positive"] == "Aspirin and the heart Aspirin lowers the risk of a second heart attack in adults."
    assert [n["text"] for n in q1["negatives"]] == [document_text(t, x) for _, t, x, _ in DOCS[1:3]]
    assert rows["salt and blood pressure"]["negatives"][0]["text"] == document_text(DOCS[3][1], DOCS[3][2])
    # the positives are the corpus entries themselves: the corpus has exactly the folder's documents
    assert result.stats.corpus_size == len(DOCS)
    # the same folder given as corpus only (pairs from a file) is read the same way
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"anchor": q1["anchor"], "positive": q1["positive"]}) + "\n", "utf-8")
    again = mine(_cfg(tmp_path, input=str(pairs), corpus=str(folder)), model=model)
    assert again.rows[0]["negatives"] == q1["negatives"]


def test_a_missing_qrels_split_is_named(beir, tmp_path):
    folder, model = beir
    with pytest.raises(DataError, match=r"no qrels/test.tsv .*splits here: \['train'\]"):
        mine(_cfg(tmp_path, input=str(folder), split="test"), model=model)


def test_a_text_only_positive_is_not_mined_as_its_own_negative(beir, tmp_path):
    """The pairs give the positive without its title; the corpus entry (title + text) is the same document."""
    folder, model = beir
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"anchor": "aspirin prevents heart attacks", "positive": DOCS[0][2]}) + "\n", "utf-8")
    cfg = _cfg(tmp_path, input=str(pairs), corpus=str(folder))
    (row,) = mine(cfg, model=model).rows
    texts = [n["text"] for n in row["negatives"]]
    assert document_text(DOCS[0][1], DOCS[0][2]) not in texts
    assert texts == [document_text(t, x) for _, t, x, _ in DOCS[1:3]]
    result = mine(cfg.model_copy(update={"exclude_positive_copies": False}), model=model)
    assert result.rows[0]["negatives"][0]["text"] == document_text(DOCS[0][1], DOCS[0][2])  # the bug, when off
    assert mine(cfg, model=model).stats.counts.positive_copy == 1


def test_shared_and_repeated_positives_are_never_negatives(write_jsonl, tmp_path):
    """A text that is the positive of two queries is excluded for both; a repeated row changes nothing; another
    query's positive stays a valid negative."""
    pairs = write_jsonl([{"anchor": "q1", "positive": "shared"}, {"anchor": "q2", "positive": "shared"},
                         {"anchor": "q1", "positive": "shared"}, {"anchor": "q3", "positive": "own3"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": t} for t in ("shared", "x", "y", "z")], "corpus.jsonl")
    model = AngleModel({"q1": 0, "q2": 1, "q3": 2, "shared": 1, "own3": 3, "x": 5, "y": 7, "z": 9})
    result = mine(_cfg(tmp_path, input=str(pairs), corpus=str(corpus), num_negatives=3), model=model)
    negs = [[n["text"] for n in r["negatives"]] for r in result.rows]
    assert negs[0] == negs[1] == negs[2] == ["own3", "x", "y"]
    assert negs[3] == ["shared", "x", "y"]  # for q3, "shared" is someone else's positive: a real negative
    assert result.stats.corpus_size == 5


def test_is_positive_copy():
    assert is_positive_copy("The  Same text.", "the same TEXT.")
    long_text = "Aspirin lowers the risk of a second heart attack in adults."
    assert is_positive_copy("Aspirin and the heart " + long_text, long_text)
    assert not is_positive_copy("A review. " + long_text * 3, long_text)  # quotes it, but is mostly other text
    assert not is_positive_copy("yes, and much more text around it", "yes")  # too short to call a copy
    assert not is_positive_copy("Statins reduce cholesterol.", long_text)


def test_drop_reason_is_the_filter_that_removed_most():
    assert drop_reason(FilterCounts(considered=9, relative_margin=5, max_score=2)) == "relative_margin"
    assert drop_reason(FilterCounts(considered=1, above_range_min=1)) == "too_few_documents"


def test_dropped_rows_are_counted_by_reason_logged_and_kept_aside(write_jsonl, tmp_path, caplog):
    from tests.test_mining_offline import DOC_ANGLES

    pairs = write_jsonl([{"query": "q", "pos": "p"}, {"query": "r", "pos": "s"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": t} for t in DOC_ANGLES], "corpus.jsonl")
    model = AngleModel({"q": 0, "p": 10, "r": 150, "s": 155, **DOC_ANGLES})
    # min_score 0.6 keeps documents within 53 degrees: q (0) has plenty, r (150) only d9 (170): 1 of 2
    cfg = _cfg(tmp_path, input=str(pairs), corpus=str(corpus), min_score=0.6, keep_dropped=True)
    with caplog.at_level(logging.WARNING, logger="embedtrain.mining.offline"):
        result = run_mining(cfg, model=model)
    stats = json.loads((tmp_path / "mined.jsonl.stats.json").read_text())
    assert stats["written_rows"] == 1 and stats["dropped_rows"] == 1 and stats["incomplete_rows"] == 1
    assert stats["incomplete_by_reason"] == {"min_score": 1}
    assert stats["dropped_output"] == str(tmp_path / "mined.jsonl.dropped.jsonl")
    (dropped,) = [json.loads(line) for line in (tmp_path / "mined.jsonl.dropped.jsonl").read_text().splitlines()]
    assert dropped["anchor"] == "r" and dropped["reason"] == "min_score" and len(dropped["negatives"]) == 1
    assert dropped["skipped"]["min_score"] > 0
    assert "min_score: 1" in caplog.text and "1 dropped" in caplog.text
    assert result.stats.dropped_rows == 1
    # kept with fewer negatives instead: nothing dropped, the reason still counted
    kept = mine(cfg.model_copy(update={"keep_incomplete": True}), model=model)
    assert len(kept.rows) == 2 and kept.stats.dropped_rows == 0 and kept.stats.incomplete_reasons == {"min_score": 1}
    assert [len(r["negatives"]) for r in kept.rows] == [2, 1]


def test_cli_reports_rows_with_too_few_documents(tiny_model_dir, write_jsonl, tmp_path):
    """Whatever the model: query b has two positives, so only 2 of the 4 texts can be its negatives (3 asked)."""
    from embedtrain.cli.app import run_app

    pairs = write_jsonl([{"anchor": "a", "positive": "p1"}, {"anchor": "b", "positive": "p2"},
                         {"anchor": "b", "positive": "p3"}], "pairs.jsonl")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("d1\n", "utf-8")
    out = tmp_path / "mined.jsonl"
    run_app(["mine", "--model", str(tiny_model_dir), "--input", str(pairs), "--output", str(out), "--corpus",
             str(corpus), "--num-negatives", "3", "--range-max", "10", "--keep-dropped"])
    assert [json.loads(line)["anchor"] for line in out.read_text().splitlines()] == ["a"]
    dropped = [json.loads(line) for line in (tmp_path / "mined.jsonl.dropped.jsonl").read_text().splitlines()]
    assert [(d["anchor"], d["positive"], d["reason"]) for d in dropped] == [("b", "p2", "too_few_documents"),
                                                                           ("b", "p3", "too_few_documents")]
    stats = json.loads((tmp_path / "mined.jsonl.stats.json").read_text())
    assert stats["incomplete_by_reason"] == {"too_few_documents": 2} and stats["dropped_rows"] == 2


def test_when_no_row_is_written_the_error_says_why_and_where_the_rows_are(write_jsonl, tmp_path):
    from tests.test_mining_offline import DOC_ANGLES

    pairs = write_jsonl([{"query": "q", "pos": "p"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": t} for t in DOC_ANGLES], "corpus.jsonl")
    model = AngleModel({"q": 0, "p": 10, **DOC_ANGLES})
    cfg = _cfg(tmp_path, input=str(pairs), corpus=str(corpus), relative_margin=0.9, keep_dropped=True)
    with pytest.raises(DataError, match=r"by reason: relative_margin: 1\).*rows are in .*mined.jsonl.dropped.jsonl"):
        run_mining(cfg, model=model)
    assert not (tmp_path / "mined.jsonl").exists()
    assert json.loads((tmp_path / "mined.jsonl.dropped.jsonl").read_text())["reason"] == "relative_margin"


def test_the_sentence_transformers_engine_keeps_dropped_rows_aside_too(tiny_model_dir, write_jsonl, tmp_path):
    """It reports no per-filter tallies, so the reason is 'not_reported'; copies of the positive are removed."""
    from embedtrain.models.resolve import load_model

    pairs = write_jsonl([{"anchor": "a", "positive": "the first positive"},
                         {"anchor": "b", "positive": "the second positive"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": "one document"}, {"text": "THE FIRST  positive"}], "corpus.jsonl")
    cfg = _cfg(tmp_path, input=str(pairs), corpus=str(corpus), num_negatives=3, range_max=10,
               engine="sentence-transformers", keep_dropped=True)
    result = run_mining(cfg, model=load_model(tiny_model_dir))
    # b has 3 candidates; a has 2 once the copy of its positive is removed
    assert result.stats.written_rows == 1 and result.stats.incomplete_reasons == {"not_reported": 1}
    (dropped,) = [json.loads(line) for line in (tmp_path / "mined.jsonl.dropped.jsonl").read_text().splitlines()]
    assert dropped["anchor"] == "a" and dropped["reason"] == "not_reported"
    assert sorted(n["text"] for n in dropped["negatives"]) == ["one document", "the second positive"]
