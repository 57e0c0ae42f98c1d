"""Offline hard-negative mining: retrieval, rank window, margins, rescoring, output files, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import load_script

from embedtrain.errors import DataError
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import read_records
from embedtrain.mining.filtering import FilterCounts, select_negatives
from embedtrain.mining.offline import mine, run_mining
from embedtrain.mining.search import top_k
from embedtrain.schema.mining import NegativeFilter, OfflineMiningConfig


class AngleModel:
    """Stands in for a SentenceTransformer: every text has a fixed 2-D direction (degrees).

    Cosines are cos(angle difference), so which documents are near a query is known exactly.
    """

    training = False

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles
        self.prompts_seen: list[str | None] = []

    def encode(self, texts, prompt=None, **kwargs):
        self.prompts_seen.append(prompt)
        rad = np.radians([self.angles[t] for t in texts])
        return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)

    encode_query = encode_document = encode

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def get_embedding_dimension(self) -> int:
        return 2


def cos_deg(d: float) -> float:
    return math.cos(math.radians(d))


# One query at 0 degrees, its positive at 10 (cosine 0.985); documents d1..d9 at increasing angles.
DOC_ANGLES = {f"d{i}": a for i, a in enumerate([5, 8, 20, 30, 40, 50, 60, 70, 80, 170], start=0)}


@pytest.fixture
def pairs_and_corpus(write_jsonl):
    pairs = write_jsonl([{"query": "q", "pos": "p"}], "pairs.jsonl")
    corpus = write_jsonl([{"text": t} for t in DOC_ANGLES], "corpus.jsonl")
    model = AngleModel({"q": 0, "p": 10, **DOC_ANGLES})
    return pairs, corpus, model


def _cfg(pairs, corpus, tmp_path, **kw):
    base = dict(model="unused", input=str(pairs), output=str(tmp_path / "mined.jsonl"), corpus=str(corpus),
                num_negatives=2, range_max=50)
    return OfflineMiningConfig(**{**base, **kw})


def _texts(entries):
    return [e["text"] for e in entries]


def test_negatives_are_the_nearest_non_positive_documents(pairs_and_corpus, tmp_path):
    pairs, corpus, model = pairs_and_corpus
    result = mine(_cfg(pairs, corpus, tmp_path, candidates=3), model=model)
    (row,) = result.rows
    assert row["anchor"] == "q" and row["positive"] == "p"
    assert row["positive_score"] == pytest.approx(cos_deg(10), abs=1e-5)
    assert _texts(row["negatives"]) == ["d0", "d1"]          # 5 and 8 degrees; p (10) is excluded
    assert _texts(row["candidates"]) == ["d2", "d3", "d4"]   # the next ranked documents
    assert row["negatives"][0]["score"] == pytest.approx(cos_deg(5), abs=1e-5)
    assert result.stats.corpus_size == len(DOC_ANGLES) + 1 and result.stats.queries == 1


def test_rank_window_skips_the_top_ranks(pairs_and_corpus, tmp_path):
    pairs, corpus, model = pairs_and_corpus
    (row,) = mine(_cfg(pairs, corpus, tmp_path, range_min=3, range_max=6), model=model).rows
    assert _texts(row["negatives"]) == ["d3", "d4"]
    with pytest.raises(ValueError, match="does not fit"):
        _cfg(pairs, corpus, tmp_path, range_min=3, range_max=5, candidates=5)
    with pytest.raises(ValueError, match="range_min"):
        NegativeFilter(range_min=5, range_max=5)


def test_margins_drop_likely_false_negatives(pairs_and_corpus, tmp_path):
    pairs, corpus, model = pairs_and_corpus
    pos = cos_deg(10)
    # absolute: score must be <= pos - 0.05 -> d0 (5 deg, 0.996) d1 (8) d2 (20 deg, 0.940 > 0.935) go
    (row,) = mine(_cfg(pairs, corpus, tmp_path, absolute_margin=0.05), model=model).rows
    assert all(n["score"] <= pos - 0.05 for n in row["negatives"])
    assert _texts(row["negatives"]) == ["d3", "d4"]
    # relative 0.1: score must be <= 0.9 * pos = 0.886 -> d3 (30 deg, 0.866) is the first kept
    result = mine(_cfg(pairs, corpus, tmp_path, relative_margin=0.1), model=model)
    assert _texts(result.rows[0]["negatives"]) == ["d3", "d4"]
    assert result.stats.counts.relative_margin == 3
    # max_score / min_score bounds
    (row,) = mine(_cfg(pairs, corpus, tmp_path, max_score=0.7, min_score=0.5), model=model).rows
    assert _texts(row["negatives"]) == ["d5", "d6"]  # 50 deg 0.643, 60 deg 0.5


def test_rows_without_enough_negatives_are_dropped_or_kept(pairs_and_corpus, tmp_path):
    pairs, corpus, model = pairs_and_corpus
    result = mine(_cfg(pairs, corpus, tmp_path, min_score=0.9), model=model)  # only d0..d2 pass, all 3
    assert len(result.rows) == 1
    result = mine(_cfg(pairs, corpus, tmp_path, min_score=0.995, num_negatives=2), model=model)  # only d0
    assert result.rows == [] and result.stats.incomplete_rows == 1
    kept = mine(_cfg(pairs, corpus, tmp_path, min_score=0.995, keep_incomplete=True), model=model)
    assert _texts(kept.rows[0]["negatives"]) == ["d0"]
    with pytest.raises(DataError, match="no row got enough negatives"):
        run_mining(_cfg(pairs, corpus, tmp_path, min_score=0.995), model=model)


def test_repeated_anchor_positives_and_query_text_are_never_negatives(write_jsonl, tmp_path):
    pairs = write_jsonl([{"anchor": "q", "positive": "p1"}, {"anchor": "q", "positive": "p2"},
                         {"anchor": "r", "positive": "q"}], "pairs.jsonl")
    model = AngleModel({"q": 0, "p1": 3, "p2": 6, "r": 2, "x": 12, "y": 40})
    corpus = write_jsonl([{"text": "x"}, {"text": "y"}, {"text": "r"}], "corpus.jsonl")
    result = mine(_cfg(pairs, corpus, tmp_path, num_negatives=2), model=model)
    by_pos = {row["positive"]: _texts(row["negatives"]) for row in result.rows}
    # for query q, p1 and p2 are both positives (never negatives); r (2 deg) is a document
    assert by_pos["p1"] == by_pos["p2"] == ["r", "x"]
    # for query r the corpus contains r itself: excluded unless exclude_query_text=False
    assert "r" not in by_pos["q"]
    again = mine(_cfg(pairs, corpus, tmp_path, num_negatives=2, exclude_query_text=False), model=model)
    assert _texts(again.rows[2]["negatives"])[0] == "r"


def test_select_negatives_counts_what_each_filter_skipped():
    ids = np.array([7, 3, 5, 9, -1])
    scores = np.array([0.9, 0.8, 0.7, 0.1, -np.inf])
    counts = FilterCounts()
    picked = select_negatives(ids, scores, exclude={3}, positive_score=0.85,
                              flt=NegativeFilter(range_min=1, range_max=10, absolute_margin=0.1), counts=counts)
    assert picked == [(5, 0.7), (9, 0.1)]  # 7 is rank 0 (skipped), 3 is a positive
    assert counts.above_range_min == 1 and counts.absolute_margin == 0 and counts.considered == 3


@pytest.mark.parametrize("use_faiss", [False, True])
def test_chunked_top_k_matches_brute_force(use_faiss):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(37, 8)).astype(np.float32)
    c = rng.normal(size=(203, 8)).astype(np.float32)
    scores, ids = top_k(q, c, 10, query_chunk_size=5, corpus_chunk_size=17, use_faiss=use_faiss)
    full = q @ c.T
    expected = np.argsort(-full, axis=1)[:, :10]
    assert (ids == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5, atol=1e-5)
    small_s, small_i = top_k(q[:2], c[:4], 6, corpus_chunk_size=3)  # fewer documents than k: padded
    assert (small_i[:, 4:] == -1).all() and np.isinf(small_s[:, 4:]).all()


def test_rescorer_reranks_and_margins_use_its_scores(pairs_and_corpus, tmp_path):
    pairs, corpus, model = pairs_and_corpus
    calls = []

    def rescorer(queries, docs):  # prefers far documents: score = angle / 100, positive gets 2.0
        calls.append(len(docs))
        return np.array([2.0 if d == "p" else DOC_ANGLES[d] / 100 for d in docs], dtype=np.float32)

    (row,) = mine(_cfg(pairs, corpus, tmp_path, absolute_margin=0.2), model=model, rescorer=rescorer).rows
    assert _texts(row["negatives"]) == ["d9", "d8"]  # reranked by angle; d9 (1.70) <= 2.0 - 0.2 is kept
    assert row["positive_score"] == pytest.approx(2.0)
    (row,) = mine(_cfg(pairs, corpus, tmp_path, absolute_margin=0.4), model=model, rescorer=rescorer).rows
    assert _texts(row["negatives"]) == ["d8", "d7"]  # d9 (1.70 > 2.0 - 0.4) is a false negative now
    assert calls


def test_cross_encoder_rescorer_loads_a_local_cross_encoder(tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedtrain.mining.rescore import cross_encoder_rescorer
    from embedtrain.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path("all-MiniLM-L6-v2")))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    CrossEncoder(str(tmp_path / "ce"), num_labels=1).save(str(tmp_path / "ce"))
    rescore = cross_encoder_rescorer(tmp_path / "ce")
    scores = rescore(["a query", "a query"], ["doc one", "another doc"])
    assert scores.shape == (2,) and np.isfinite(scores).all() and scores[0] != scores[1]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_output_round_trips_through_the_hard_negatives_format(pairs_and_corpus, tmp_path, suffix):
    pairs, corpus, model = pairs_and_corpus
    cfg = _cfg(pairs, corpus, tmp_path, candidates=2, output=str(tmp_path / f"out{suffix}"))
    result = run_mining(cfg, model=model)
    ds = to_dataset(read_records(cfg.output), "hard_negatives")
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert ds[0]["negative_1"] == "d0" and ds[0]["negative_2"] == "d1"
    stats = json.loads((tmp_path / f"out{suffix}.stats.json").read_text())
    assert stats["written_rows"] == result.stats.written_rows == 1 and stats["corpus_docs_per_s"] > 0
    assert result.rows == []  # rows are streamed to the file, not held
    with pytest.raises(DataError, match="output must end"):
        run_mining(_cfg(pairs, corpus, tmp_path, output=str(tmp_path / "out.csv")), model=model)


def test_engines_agree_on_a_tiny_model(tiny_model_dir, write_jsonl, tmp_path):
    """The built-in engine selects what sentence-transformers' mine_hard_negatives selects."""
    from embedtrain.models.resolve import load_model

    words = "red blue green black white brown pink gray gold silver orange purple".split()
    pairs = write_jsonl([{"anchor": f"the {w} car", "positive": f"a {w} vehicle"} for w in words[:6]], "p.jsonl")
    corpus = write_jsonl([{"text": f"some {w} thing {i}"} for w in words for i in range(3)], "c.jsonl")
    model = load_model(tiny_model_dir)
    for extra in ({"range_min": 2, "range_max": 100}, {"relative_margin": 0.01, "range_max": 100},
                  {"absolute_margin": 0.002, "max_score": 0.99, "range_max": 100}):
        picks = {}
        for engine in ("embedtrain", "sentence-transformers"):
            cfg = _cfg(pairs, corpus, tmp_path, num_negatives=3, candidates=4, engine=engine, **extra)
            picks[engine] = [(_texts(r["negatives"]), _texts(r["candidates"])) for r in mine(cfg, model=model).rows]
        assert picks["embedtrain"] == picks["sentence-transformers"], extra
        assert picks["embedtrain"]


def test_cli_and_data_prep_script_mine_with_the_real_model(tmp_path, write_jsonl, repo_root):
    """Real all-MiniLM-L6-v2: the topical neighbours of a query are mined, through both entry points."""
    from embedtrain.cli.app import run_app

    foods = ["rice", "pasta", "beans", "bread"]
    pairs = write_jsonl([{"anchor": f"how do I cook {f}", "positive": f"a recipe for cooking {f}"} for f in foods],
                        "pairs.jsonl")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"a guide to {v} {f}" for f in foods for v in ("storing", "buying")), "utf-8")
    out = tmp_path / "mined.jsonl"
    run_app(["mine", "--model", "all-MiniLM-L6-v2", "--input", str(pairs), "--output", str(out),
             "--corpus", str(corpus), "--num-negatives", "2", "--candidates", "2", "--range-max", "20"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, food in zip(rows, foods):
        assert all(food in t for t in _texts(row["negatives"])), row  # same-food guides are the hardest
    module = load_script(repo_root / "data_prep" / "mine_hard_negatives.py")
    out2 = tmp_path / "mined2.parquet"
    module.main(["--model", "all-MiniLM-L6-v2", "--input", str(pairs), "--output", str(out2), "--corpus",
                 str(corpus), "--num-negatives", "2", "--range-max", "20", "--use-faiss"])
    ds = to_dataset(read_records(out2), "hard_negatives")
    assert [ds[i]["negative_1"] for i in range(4)] == [r["negatives"][0]["text"] for r in rows]


def test_mining_benchmark_search_part_reports_both_backends(repo_root):
    """The throughput script's search part runs and reports one row per backend and corpus size."""
    module = load_script(repo_root / "examples" / "mining_benchmark.py")
    rows = module.bench_search([300, 700], n_queries=20, k=10)
    assert [(r["backend"], r["corpus"]) for r in rows] == [("torch", 300), ("faiss", 300), ("torch", 700),
                                                           ("faiss", 700)]
    assert all(r["queries_per_s"] > 0 and r["queries"] == 20 for r in rows)


def test_scale_benchmark_synthetic_corpus_is_distinct_new_and_sentence_shaped(repo_root):
    """``--synthetic`` corpora: distinct sentences, none of the seed ones, word counts drawn from the seeds'."""
    module = load_script(repo_root / "examples" / "mining_scale_benchmark.py")
    seeds = ["a cat sits on the mat", "the dog runs", "a bird flies over the tree today", "red fox"]
    made = module.synthetic_sentences(seeds, 200, set(seeds))
    assert len(made) == 200 and len(set(made)) == 200 and not set(made) & set(seeds)
    seed_words = {w for s in seeds for w in s.split()}
    assert all(set(s.split()) <= seed_words for s in made)
    assert {len(s.split()) for s in made} <= {len(s.split()) for s in seeds}
    assert module.synthetic_sentences(seeds, 200, set(seeds)) == made  # seeded


def test_texts_are_taken_chunk_by_chunk_without_copying_the_column():
    """A block of corpus texts costs memory in proportion to the block: ``ChunkedArray.take`` would first join
    every chunk of the (memory-mapped) column into one new buffer, on each of the thousands of blocks."""
    import pyarrow as pa

    from embedtrain.mining.offline import take_texts

    texts = [f"document number {i} " * 3 for i in range(100_000)]
    column = pa.chunked_array([pa.array(texts[i:i + 10_000]) for i in range(0, 100_000, 10_000)])
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(len(texts), 512, replace=False))
    shuffled = rng.permutation(len(texts))[:300]
    default = pa.default_memory_pool()
    try:
        pools = []
        for take in (lambda i: take_texts(column, i), lambda i: column.take(pa.array(i)).to_pylist()):
            pools.append(pa.proxy_memory_pool(pa.system_memory_pool()))
            pa.set_memory_pool(pools[-1])
            assert take(ids) == [texts[i] for i in ids] and take(shuffled) == [texts[i] for i in shuffled]
    finally:
        pa.set_memory_pool(default)
    assert pools[0].max_memory() < column.nbytes / 100  # take_texts: the block's own bytes
    assert pools[1].max_memory() >= column.nbytes  # the join that take_texts avoids (the check can fail)
    assert take_texts(pa.chunked_array([pa.array(texts[:10])]), np.array([3, 1])) == [texts[3], texts[1]]
    assert take_texts(column, np.array([], dtype=np.int64)) == []
