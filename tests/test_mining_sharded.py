"""Mining at scale: split across 2 processes it writes the same file as one process; embeddings are reused by a
later run; approximate (faiss IVF / HNSW) search reports its recall against exact search."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from embedtrain.mining.embeddings import BLOCK
from embedtrain.mining.offline import run_mining
from embedtrain.schema.mining import OfflineMiningConfig

WORDS = ("red blue green black white brown pink gray gold silver orange purple cyan olive navy teal "
         "maroon lime coral amber").split()


def _data(tmp_path, n_pairs=300, n_docs=BLOCK + 900):
    """Pairs and a corpus; every 5th anchor text is also a corpus document (a query that takes its corpus vector)."""
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as fh:
        for i in range(n_pairs):  # every 7th anchor repeats: a query with several positives
            a = i - i % 7 if i % 7 == 3 else i
            fh.write(json.dumps({"anchor": _anchor(a), "positive": f"a {WORDS[i % 20]} vehicle called {i}"}) + "\n")
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as fh:
        for j in range(n_docs):
            text = _anchor(j) if j % 5 == 0 and j < n_pairs else \
                f"some {WORDS[j % 20]} thing {j // 20} of kind {WORDS[(j // 7) % 20]}"
            fh.write(json.dumps({"text": text}) + "\n")
    return pairs, corpus


def _anchor(i: int) -> str:
    return f"the {WORDS[i % 20]} car number {i}" + " and more words" * (i % 3)


def _config(tmp_path, model_dir, pairs, corpus, output, **extra):
    return OfflineMiningConfig(model=str(model_dir), input=str(pairs), corpus=str(corpus), output=str(output),
                               num_negatives=3, candidates=2, range_max=30, query_chunk_size=64,
                               **{"embeddings_dir": str(tmp_path / "emb"), **extra})


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(tmp_path, tiny_model_dir, repo_root):
    pairs, corpus = _data(tmp_path)
    baseline = tmp_path / "baseline.jsonl"
    run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, baseline))
    # a score floor that leaves about half the rows short of 3 negatives: they are dropped, counted and kept aside
    third = sorted(row["negatives"][2]["score"] for row in _rows(baseline))
    floor = third[len(third) // 2]
    single = tmp_path / "single.jsonl"
    run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, single, min_score=floor, keep_dropped=True))
    sharded = tmp_path / "sharded.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29571",
           "-m", "embedtrain", "mine", "--model", str(tiny_model_dir), "--input", str(pairs), "--corpus", str(corpus),
           "--output", str(sharded), "--num-negatives", "3", "--candidates", "2", "--range-max", "30",
           "--query-chunk-size", "64", "--embeddings-dir", str(tmp_path / "emb-sharded"),
           "--min-score", repr(floor), "--keep-dropped"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mined ") == 1  # one process reports
    written, dropped = _rows(single), _rows(tmp_path / "single.jsonl.dropped.jsonl")
    assert _rows(sharded) == written and 0 < len(dropped) < 300 and len(written) + len(dropped) == 300
    assert _rows(tmp_path / "sharded.jsonl.dropped.jsonl") == dropped
    assert {row["reason"] for row in dropped} == {"min_score"}
    stats = json.loads((tmp_path / "sharded.jsonl.stats.json").read_text())
    one = json.loads((tmp_path / "single.jsonl.stats.json").read_text())
    assert stats["processes"] == 2 and stats["written_rows"] == len(written)
    assert stats["dropped_rows"] == one["dropped_rows"] == len(dropped)
    assert stats["incomplete_by_reason"] == one["incomplete_by_reason"] == {"min_score": len(dropped)}
    assert not list(tmp_path.glob("sharded.jsonl*.part-*"))  # parts joined and removed
    # both runs encoded the corpus: the embedding files are the same bytes (blocks are world-size independent)
    [a] = (tmp_path / "emb").glob("corpus-*.f32")
    [b] = (tmp_path / "emb-sharded").glob("corpus-*.f32")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert stats["queries_from_corpus"] == one["queries_from_corpus"] > 0  # the gathered query file, on 2 ranks


def test_embeddings_are_reused_by_the_next_run(tmp_path, tiny_model_dir):
    pairs, corpus = _data(tmp_path, n_pairs=60, n_docs=500)
    first = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "a.jsonl"))
    second = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "b.jsonl", range_min=1))
    assert not first.stats.embeddings_reused and second.stats.embeddings_reused
    rows_a, rows_b = _rows(tmp_path / "a.jsonl"), _rows(tmp_path / "b.jsonl")
    assert [r["negatives"][1:3] for r in rows_a] == [r["negatives"][:2] for r in rows_b]  # range_min=1: shifted
    assert [r["positive_score"] for r in rows_a] == [r["positive_score"] for r in rows_b]
    # another prompt is another set of embeddings
    third = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "c.jsonl", query_prompt="q: "))
    assert not third.stats.embeddings_reused


def test_queries_that_are_documents_take_the_corpus_vector(tmp_path, tiny_model_dir, monkeypatch):
    """A query whose text is in the corpus is not encoded again; the mined file is what encoding every query
    gives (same negatives, scores equal to float precision); another query prompt turns the sharing off."""
    from embedtrain.mining import search

    pairs, corpus = _data(tmp_path, n_pairs=60, n_docs=500)
    encoded = []
    original = search.encode_texts
    monkeypatch.setattr(search, "encode_texts", lambda m, texts, **kw: encoded.append(len(texts)) or original(
        m, texts, **kw))
    shared = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "shared.jsonl"))
    shared_count, encoded[:] = sum(encoded), []
    every = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "every.jsonl",
                               share_query_vectors=False, embeddings_dir=str(tmp_path / "emb-every")))
    every_count = sum(encoded)
    anchors = {json.loads(line)["anchor"] for line in pairs.read_text().splitlines()}
    queries, in_corpus = len(anchors), len(anchors & {json.loads(line)["text"] for line in corpus.open()})
    assert in_corpus == 10  # anchors 0, 5, ..., 55 but 10 and 45 (those rows repeat an earlier anchor)
    assert shared.stats.queries_from_corpus == in_corpus and every.stats.queries_from_corpus == 0
    assert shared.stats.queries == every.stats.queries == queries
    # the check encodes the sampled shared texts twice (as queries and as documents); then only the rest
    assert shared_count == every_count - in_corpus + 2 * in_corpus
    a, b = _rows(tmp_path / "shared.jsonl"), _rows(tmp_path / "every.jsonl")
    assert [[n["text"] for n in r["negatives"]] for r in a] == [[n["text"] for n in r["negatives"]] for r in b]
    def scores(rows):
        return [s for r in rows for s in [r["positive_score"], *(n["score"] for n in r["negatives"])]]

    assert scores(a) == pytest.approx(scores(b), abs=1e-5)
    # the next run reuses the gathered file (nothing encoded, no check)
    encoded[:] = []
    again = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "again.jsonl"))
    assert again.stats.embeddings_reused and again.stats.queries_from_corpus == in_corpus and sum(encoded) == 0
    assert _rows(tmp_path / "again.jsonl") == a
    # queries embedded with another prompt than documents: every query is encoded
    prompted = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "p.jsonl", query_prompt="q: ",
                                  precision="bf16"))
    assert prompted.stats.queries_from_corpus == 0
    # the precision the texts were encoded in is reported
    assert again.stats.precision == "fp32" and prompted.stats.precision == "bf16"
    assert json.loads((tmp_path / "p.jsonl.stats.json").read_text())["precision"] == "bf16"


def test_same_vectors_check_sees_prompts_and_side_routing(tiny_model_dir):
    from embedtrain.mining.search import effective_prompt, same_query_and_document_vectors
    from embedtrain.models.resolve import load_model

    model = load_model(str(tiny_model_dir), device="cpu")
    texts = ["a short one", "a much longer text " * 5]
    assert same_query_and_document_vectors(model, texts, query_prompt=None, document_prompt=None)
    assert same_query_and_document_vectors(model, texts, query_prompt="x: ", document_prompt="x: ")
    assert not same_query_and_document_vectors(model, texts, query_prompt="q: ", document_prompt=None)
    model.prompts = {"query": "query: ", "passage": "passage: "}
    assert effective_prompt(model, "query", None) == "query: " and effective_prompt(model, "document", None) == \
        "passage: " and effective_prompt(model, "document", "d: ") == "d: "
    assert not same_query_and_document_vectors(model, texts, query_prompt=None, document_prompt=None)
    model.prompts = {}
    original = model.encode_query  # a model that routes queries elsewhere (a Router, task adapters...)

    def routed(inputs, **kw):
        return original(inputs, **kw) * 0.5 + 0.1

    model.encode_query = routed
    assert not same_query_and_document_vectors(model, texts, query_prompt=None, document_prompt=None)


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_search_reports_recall_against_exact(tmp_path, tiny_model_dir, index):
    pairs, corpus = _data(tmp_path, n_pairs=120, n_docs=3000)
    exact = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "exact.jsonl"))
    approx = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / f"{index}.jsonl", index=index,
                                ivf_lists=16, ivf_probe=4, hnsw_ef_search=64, recall_sample=100))
    assert exact.stats.recall_at_k is None
    # k = range_max + the most positives of a query + its own text
    assert 0.3 < approx.stats.recall_at_k <= 1.0 and approx.stats.recall_k == 30 + 2 + 1
    stats = json.loads((tmp_path / f"{index}.jsonl.stats.json").read_text())
    assert stats["index"] == index and stats["recall_at_k"] == approx.stats.recall_at_k
    # wider probing finds everything exact search finds
    full = run_mining(_config(tmp_path, tiny_model_dir, pairs, corpus, tmp_path / "full.jsonl", index=index,
                              ivf_lists=16, ivf_probe=16, hnsw_ef_search=3000, recall_sample=100))
    assert full.stats.recall_at_k > 0.99
    def texts(path):  # faiss and torch scores differ in the last digit; the lists agree
        return [[n["text"] for n in r["negatives"]] for r in _rows(path)]

    assert texts(tmp_path / "full.jsonl") == texts(tmp_path / "exact.jsonl")


def test_blocks_group_texts_of_similar_length_and_balance_the_processes():
    import numpy as np

    from embedtrain.mining.embeddings import block_size, plan_blocks

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 400, size=5000)
    plans = {w: plan_blocks(5000, lengths, 1024, w) for w in (1, 2, 3, 8)}
    blocks = plans[1][0]
    for w, (bs, owner) in plans.items():  # the same blocks whatever the number of processes
        assert [b.tolist() for b in bs] == [b.tolist() for b in blocks] and len(owner) == len(bs)
        assert set(owner) == set(range(min(w, len(bs))))
    assert sorted(np.concatenate(blocks).tolist()) == list(range(5000))
    assert [len(b) for b in blocks] == [1024] * 4 + [904]
    for longer, shorter in zip(blocks, blocks[1:]):  # runs of decreasing length: each call pads little
        assert lengths[longer].min() >= lengths[shorter].max()
    # 2 processes: loads (characters) differ by less than the cheapest block, not 3 blocks against 2 by count
    bs, owner = plans[2]
    load = [sum(int(lengths[b].sum()) for b, o in zip(bs, owner) if o == r) for r in (0, 1)]
    assert abs(load[0] - load[1]) < min(int(lengths[b].sum()) for b in bs)
    # without lengths: input order, blocks by count
    plain, _ = plan_blocks(10, None, 4, 2)
    assert [b.tolist() for b in plain] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert block_size(64) == 1024 and block_size(1024) == 8192


def test_each_encode_call_gets_one_run_of_similar_lengths(tmp_path):
    import numpy as np

    from embedtrain.mining.collective import current_collective
    from embedtrain.mining.embeddings import encode_to_file

    texts = [("w " * int(n)).strip() for n in np.random.default_rng(1).integers(1, 60, size=2500)]
    calls = []

    def fake_encode(model, batch, kind, prompt, batch_size):
        calls.append([len(t) for t in batch])
        return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

    emb, reused = encode_to_file(None, lambda ids: [texts[i] for i in ids], len(texts), tmp_path / "e.f32",
                                 kind="document", prompt=None, batch_size=64, collective=current_collective(),
                                 lengths=np.array([len(t) for t in texts]), encode_fn=fake_encode)
    assert not reused and np.array_equal(emb[:, 0], [len(t) for t in texts])  # every row at its place
    runs = calls[1:]  # the first call finds the width
    assert [len(c) for c in runs] == [1024, 1024, 452]
    assert min(runs[0]) >= max(runs[1]) and min(runs[1]) >= max(runs[2])
