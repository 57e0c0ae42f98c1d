"""How a mined file was made travels with it: the run record, the model card, and a warning when
``initial_from: file`` would take scores of another model or length as the training model's."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from embedtrain.hub.card import _mining_lines
from embedtrain.mining.attach import _warn_if_scores_differ
from embedtrain.mining.offline import run_mining
from embedtrain.mining.provenance import initial_score_mismatches, read_mining_record
from embedtrain.schema.mining import OfflineMiningConfig
from tests.test_mining_offline import DOC_ANGLES, AngleModel


def _mined(write_jsonl, tmp_path, **kw):
    pairs = write_jsonl([{"query": "q", "pos": "p"}, {"query": "r", "pos": "s"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": t} for t in DOC_ANGLES], "corpus.jsonl")
    model = AngleModel({"q": 0, "p": 10, "r": 150, "s": 155, **DOC_ANGLES})
    cfg = OfflineMiningConfig(model=str(tmp_path / "models" / "my-miner"), input=str(pairs), corpus=str(corpus),
                              output=str(tmp_path / "mined.jsonl"), num_negatives=2, range_max=50, min_score=0.6,
                              max_seq_length=128, **kw)
    run_mining(cfg, model=model)
    return tmp_path / "mined.jsonl"


def test_the_mining_record_is_read_back_from_the_stats_file(write_jsonl, tmp_path):
    path = _mined(write_jsonl, tmp_path)
    record = read_mining_record(path)
    assert record["model"].endswith("my-miner") and record["max_seq_length"] == 128 and record["min_score"] == 0.6
    assert record["rows"] == 2 and record["written_rows"] == 1 and record["dropped_rows"] == 1
    assert record["incomplete_by_reason"] == {"min_score": 1}
    assert read_mining_record(tmp_path / "pairs.jsonl") is None  # not a mined file


def test_mismatches_between_mining_and_training():
    record = {"model": "/x/all-MiniLM-L6-v2", "max_seq_length": 256}
    assert initial_score_mismatches(record, model="all-MiniLM-L6-v2", max_seq_length=256) == []
    found = initial_score_mismatches(record, model="bge-small", max_seq_length=128)
    assert len(found) == 2 and "bge-small" in found[0]
    assert "max_seq_length 256, trained at max_seq_length 128" in found[1]
    found = initial_score_mismatches({"model": "m", "max_seq_length": None, "cross_encoder": "ce"}, model="m",
                                     max_seq_length=128)
    assert "the model's own length" in found[0] and "cross-encoder" in found[1]
    assert initial_score_mismatches(None, model="m", max_seq_length=1) == []
    same = {"model": "m", "max_seq_length": 128}
    assert initial_score_mismatches(same, model="m", max_seq_length=128, prompts={"query": None}) == []
    (found,) = initial_score_mismatches(same, model="m", max_seq_length=128, prompts={"query": "query: "})
    assert "mined with query_prompt None, trained with query prompt 'query: '" in found


def test_initial_from_file_warns_when_the_file_was_mined_otherwise(write_jsonl, tmp_path, caplog):
    path = _mined(write_jsonl, tmp_path)
    recipe = SimpleNamespace(model=SimpleNamespace(name_or_path="my-miner", max_seq_length=64))
    with caplog.at_level(logging.WARNING, logger="embedtrain.mining.attach"):
        _warn_if_scores_differ(path, recipe, "mined")
    assert "mined at max_seq_length 128, trained at max_seq_length 64" in caplog.text
    caplog.clear()
    recipe.model.max_seq_length = 128
    with caplog.at_level(logging.WARNING, logger="embedtrain.mining.attach"):
        _warn_if_scores_differ(path, recipe, "mined")
    assert caplog.text == ""


def test_the_card_says_how_the_negatives_were_mined_without_local_paths(write_jsonl, tmp_path):
    path = _mined(write_jsonl, tmp_path)
    recipe = {"datasets": [{"name": "mined", "format": "hard_negatives"}, {"name": "old", "format": "hard_negatives"}]}
    run = {"datasets": [{"name": "mined", "mined": read_mining_record(path)}, {"name": "old"}]}
    text = "\n".join(_mining_lines(recipe, run))
    assert "mined with `my-miner` at max_seq_length 128" in text and str(tmp_path) not in text
    assert "min score 0.6" in text and "1 of 2 pairs written, 1 dropped for too few negatives (min_score: 1)" in text
    assert "`old` were mined before training; how is not recorded" in text
    json.dumps(run)  # the record is plain JSON (it goes into embedtrain_run.json)
