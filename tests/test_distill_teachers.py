"""Teacher embedding store (memmap reuse, fingerprints, several teachers, 2 processes), cached pair scores,
the scored_negatives reader, the label helpers, layer-truncated students, and short trainer runs."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedtrain.distill import columns as C
from embedtrain.distill import teachers as T
from embedtrain.errors import CheckpointError, DataError
from embedtrain.io.formats import to_dataset
from embedtrain.io.readers import Records
from embedtrain.models.truncate import select_layers

torch.set_num_threads(1)
SCRIPTS = Path(__file__).parent / "dist_scripts"
sys.path.insert(0, str(SCRIPTS))
import teacher_precompute as script

DOCS = ["a cat sat on the mat", "dogs bark at night", "the stock market fell", "rain is forecast today"]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def count_encodes(monkeypatch):
    """Counts the texts handed to the teachers."""
    calls: list[int] = []
    original = T.encode_with_teachers

    def counting(texts, kinds, teachers, **kw):
        calls.append(len(texts))
        return original(texts, kinds, teachers, **kw)

    monkeypatch.setattr(T, "encode_with_teachers", counting)
    return calls


@pytest.fixture(scope="module")
def teacher_b(tiny_model_factory):
    """A second teacher: other seed, other width."""
    return tiny_model_factory(seed=1, hidden_size=48, num_heads=2)


# ---------------------------------------------------------------------------------------------- embedding store

def test_store_holds_normalised_teacher_vectors_memory_mapped(tmp_path, tiny_model_dir):
    store = T.precompute_teacher_embeddings(DOCS + DOCS[:2], [T.TeacherSpec("t", tiny_model_dir)], tmp_path / "s")
    assert len(store) == 4 and store.dim == 32  # duplicates stored once
    assert isinstance(store.vectors, np.memmap)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    expected = unit(model.encode(DOCS, convert_to_numpy=True))
    assert np.allclose(store.embeddings(DOCS), expected, atol=1e-5)
    rows = store.rows(DOCS[::-1])
    assert np.allclose(store.lookup(rows.reshape(2, 2)), expected[::-1].reshape(2, 2, 32), atol=1e-5)
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    assert index["teachers"][0]["dim"] == 32 and index["rows"] == 4
    clone = pickle.loads(pickle.dumps(store))  # e.g. into a dataloader worker: the path travels, not the data
    assert len(pickle.dumps(store)) < 4000 and np.allclose(clone.embeddings(DOCS), expected, atol=1e-5)
    with pytest.raises(KeyError):
        store.rows(["never seen"])


def test_store_is_reused_and_extended_not_recomputed(tmp_path, tiny_model_dir, count_encodes):
    spec = [T.TeacherSpec("t", tiny_model_dir)]
    first = T.precompute_teacher_embeddings(DOCS, spec, tmp_path)
    before = np.array(first.vectors)
    assert count_encodes == [4]
    again = T.precompute_teacher_embeddings(list(reversed(DOCS)), spec, tmp_path)
    assert count_encodes == [4]  # nothing encoded a second time
    assert np.array_equal(np.array(again.vectors), before)
    more = T.precompute_teacher_embeddings(DOCS + ["a brand new text", "and another"], spec, tmp_path)
    assert count_encodes == [4, 2]  # only the two new texts
    assert len(more) == 6 and np.array_equal(np.array(more.vectors[:4]), before)  # old rows keep their place
    assert [p.name for p in tmp_path.glob("embeddings-*.npy")] == [more.index["embeddings"]]  # old file removed
    assert not list(tmp_path.glob("shards-*"))


def test_fingerprint_change_recomputes(tmp_path, tiny_model_factory, tiny_model_dir, count_encodes):
    T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", tiny_model_dir)], tmp_path)
    fp = T.TeacherEmbeddings(tmp_path).fingerprint
    other = tiny_model_factory(seed=7)  # same architecture, other weights
    store = T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", other)], tmp_path)
    assert count_encodes == [4, 4] and store.fingerprint != fp
    expected = unit(SentenceTransformer(str(other), device="cpu").encode(DOCS))
    assert np.allclose(store.embeddings(DOCS), expected, atol=1e-5)
    T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", other, document_prompt="passage: ")], tmp_path)
    assert count_encodes == [4, 4, 4]  # a prompt is part of the fingerprint
    T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", other, document_prompt="passage: ")], tmp_path,
                                    dtype="float16")
    assert count_encodes == [4, 4, 4, 4] and T.TeacherEmbeddings(tmp_path).vectors.dtype == np.float16


def test_model_fingerprint_follows_the_weights(tmp_path, tiny_model_dir):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert T.model_fingerprint(copy) == T.model_fingerprint(tiny_model_dir)  # content, not path or mtime
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert T.model_fingerprint(copy) != T.model_fingerprint(tiny_model_dir)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    fp = T.model_fingerprint(model)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert T.model_fingerprint(model) != fp


def test_several_teachers_are_weighted_and_concatenated(tmp_path, tiny_model_dir, teacher_b):
    items = [(d, "document") for d in DOCS] + [("is it raining", "query")]
    specs = [T.TeacherSpec("a", tiny_model_dir, weight=1.0, query_prompt="query: "),
             T.TeacherSpec("b", teacher_b, weight=3.0)]
    store = T.precompute_teacher_embeddings(items, specs, tmp_path)
    assert store.dim == 32 + 48 and store.teacher_slice("b") == slice(32, 80)
    a = SentenceTransformer(str(tiny_model_dir), device="cpu")
    b = SentenceTransformer(str(teacher_b), device="cpu")
    ua, ub = unit(a.encode(DOCS)), unit(b.encode(DOCS))
    vec = store.embeddings(DOCS)
    assert np.allclose(vec[:, :32], np.sqrt(0.25) * ua, atol=1e-5)
    assert np.allclose(vec[:, 32:], np.sqrt(0.75) * ub, atol=1e-5)
    assert np.allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    # dot products of the concatenation = weight-averaged teacher cosines
    assert np.allclose(vec @ vec.T, 0.25 * ua @ ua.T + 0.75 * ub @ ub.T, atol=1e-5)
    # the query kind used teacher a's query prompt; teacher b has none
    q = store.embeddings(["is it raining"], kind="query")[0]
    assert np.allclose(q[:32], 0.5 * unit(a.encode(["query: is it raining"]))[0], atol=1e-5)
    assert np.allclose(q[32:], np.sqrt(0.75) * unit(b.encode(["is it raining"]))[0], atol=1e-5)
    assert ("is it raining", "query") in store and "is it raining" not in store


def test_teacher_specs_are_checked(tmp_path, tiny_model_dir):
    with pytest.raises(DataError, match="unique"):
        T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", tiny_model_dir)] * 2, tmp_path)
    with pytest.raises(DataError, match="weight"):
        T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", tiny_model_dir, weight=0)], tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        T.precompute_teacher_embeddings(DOCS, [T.TeacherSpec("t", tmp_path / "nope")], tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_build_the_same_store_and_scores_as_one(tmp_path, tiny_model_dir, teacher_b):
    """torchrun, 2 CPU processes (gloo): each rank encodes / scores half; the result equals one process."""
    out = tmp_path / "ranks.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(SCRIPTS / "teacher_precompute.py"), str(tiny_model_dir),
           str(teacher_b), str(tmp_path / "store2"), str(tmp_path / "cache2"), str(out)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    distinct = 23 + 6
    assert sorted(r["encoded"] for r in ranks) == [14, 15]  # the 29 distinct texts split over the two ranks
    assert sum(r["scored"] for r in ranks) == 15  # 15 distinct pairs, each scored once, on one rank or the other
    assert all(r["rows"] == distinct for r in ranks)

    specs = [T.TeacherSpec("a", tiny_model_dir, weight=1.0, query_prompt="query: "),
             T.TeacherSpec("b", teacher_b, weight=3.0)]
    single = T.precompute_teacher_embeddings(script.texts(), specs, tmp_path / "store1")
    double = T.TeacherEmbeddings(tmp_path / "store2")
    assert double.fingerprint == single.fingerprint and double.index["keys"] == single.index["keys"]
    assert np.allclose(np.array(double.vectors), np.array(single.vectors), atol=1e-5)
    queries, documents = script.pairs()
    scorer = T.BiEncoderScorer(tiny_model_dir, query_prompt="query: ")
    one = T.score_pairs(queries, documents, scorer, T.PairScoreCache(tmp_path / "cache1", scorer.fingerprint))
    for r in ranks:
        assert np.allclose(r["scores"], one, atol=1e-5)
    cache2 = T.PairScoreCache(tmp_path / "cache2", scorer.fingerprint)
    assert len(cache2) == 15


# ---------------------------------------------------------------------------------------------- pair scores

def test_bi_encoder_scores_are_cached(tmp_path, tiny_model_dir):
    scorer = T.BiEncoderScorer(tiny_model_dir, query_prompt="q: ")
    calls = []

    def counting(q, d):
        calls.append(len(q))
        return scorer(q, d)

    cache = T.PairScoreCache(tmp_path, scorer.fingerprint)
    queries, docs = ["cats?", "dogs?", "cats?"], [DOCS[0], DOCS[1], DOCS[0]]
    scores = T.score_pairs(queries, docs, counting, cache)
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    q = unit(model.encode(["q: cats?", "q: dogs?"]))
    d = unit(model.encode(DOCS[:2]))
    assert np.allclose(scores, [q[0] @ d[0], q[1] @ d[1], q[0] @ d[0]], atol=1e-5)
    assert calls == [2] and len(cache) == 2  # the repeated pair was scored once
    again = T.score_pairs(queries + ["birds?"], docs + [DOCS[2]], counting, cache)
    assert calls == [2, 1] and np.allclose(again[:3], scores)
    other = T.BiEncoderScorer(tiny_model_dir, query_prompt="question: ")
    assert other.fingerprint != scorer.fingerprint  # another prompt, another cache file
    assert T.PairScoreCache(tmp_path, other.fingerprint).path != cache.path


def test_cross_encoder_scorer(tmp_path, minilm_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path / "ce")
    AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(tmp_path / "ce")
    scorer = T.CrossEncoderScorer(tmp_path / "ce")
    pairs = [("cats?", DOCS[0]), ("dogs?", DOCS[1])]
    expected = CrossEncoder(str(tmp_path / "ce"), local_files_only=True).predict(pairs)
    cache = T.PairScoreCache(tmp_path / "cache", scorer.fingerprint)
    scores = T.score_pairs([p[0] for p in pairs], [p[1] for p in pairs], scorer, cache)
    assert np.allclose(scores, expected, atol=1e-5) and len(cache) == 2


# ---------------------------------------------------------------------------------------------- data columns

MINED = [
    {"anchor": "q1", "positive": "p1", "positive_score": 7.5,
     "negatives": [{"text": "n11", "score": 2.0}, {"text": "n12", "score": -1.0}, {"text": "n13", "score": -3.0}]},
    {"anchor": "q2", "positive": "p2", "positive_score": 1.0,
     "negatives": [{"text": "n21", "score": 0.5}, {"text": "n22", "score": 0.25}]},
]


def _records(rows, name="mined.jsonl"):
    return Records(Path(name), rows, list(range(1, len(rows) + 1)))


def scored(rows, **kw):
    return to_dataset(_records(rows), "scored_negatives", kw.pop("columns", None), **kw).to_dict()


def test_mined_rows_become_score_columns():
    cols = scored(MINED)
    assert cols == {"anchor": ["q1", "q2"], "positive": ["p1", "p2"], "negative_1": ["n11", "n21"],
                    "negative_2": ["n12", "n22"], "label": [[7.5, 2.0, -1.0], [1.0, 0.5, 0.25]]}
    one = scored(MINED, num_negatives=1)
    assert one["label"] == [[7.5, 2.0], [1.0, 0.5]] and "negative_2" not in one
    explicit = [{"query": "q", "pos": "p", "negatives": ["a", "b"], "scores": [3, 1, 2]}]
    cols = scored(explicit)
    assert cols["label"] == [[3.0, 1.0, 2.0]] and cols["negative_2"] == ["b"]
    mapped = [{"q": "q", "d": "p", "negs": ["a"], "teacher": [1.0, 0.5]}]
    assert scored(mapped, columns={"anchor": "q", "positive": "d", "negatives": "negs",
                                   "scores": "teacher"})["label"] == [[1.0, 0.5]]
    unscored = scored([{"anchor": "q", "positive": "p", "negatives": ["a", {"text": "b"}]}])
    assert "label" not in unscored and unscored["negative_2"] == ["b"]  # a teacher scores these


def test_score_column_errors_name_row_and_field():
    bad = [MINED[0], {**MINED[1], "positive_score": None}]
    with pytest.raises(DataError, match=r"mined.jsonl:2, field 'positive_score': scores are incomplete"):
        scored(bad)
    mixed = [MINED[0], {"anchor": "q2", "positive": "p2", "negatives": ["n21", "n22"]}]
    with pytest.raises(DataError, match=r"mined.jsonl:2, field 'negatives': the first row has teacher scores "
                                        r"and this one has none"):
        scored(mixed)
    with pytest.raises(DataError, match=r":2, field 'negatives': has 2 negatives, num_negatives asks for 3"):
        scored(MINED, num_negatives=3)
    nan = [{**MINED[0], "negatives": [{"text": "x", "score": float("nan")}]}]
    with pytest.raises(DataError, match=r"negatives\[0\].score"):
        scored(nan)
    with pytest.raises(DataError, match="expected 3 scores"):
        scored([{"anchor": "q", "positive": "p", "negatives": ["a", "b"], "scores": [1, 2]}])
    half = [{"anchor": "q", "positive": "p", "negatives": [{"text": "a", "score": 1.0}, {"text": "b"}],
             "positive_score": 2.0}]
    with pytest.raises(DataError, match="incomplete"):
        scored(half)
    with pytest.raises(DataError, match="not a role"):
        scored(MINED, columns={"score": "x"})


def test_unscored_rows_get_teacher_scores():
    rows = [{"anchor": "q1", "positive": "p1", "negatives": ["a", "b"]},
            {"anchor": "q2", "positive": "p2", "negatives": [{"text": "c"}, {"text": "d"}]}]
    cols = to_dataset(_records(rows), "scored_negatives")
    seen = []

    def score_fn(queries, docs):
        seen.append(list(zip(queries, docs)))
        return [len(q) * 10 + len(d) for q, d in zip(queries, docs)]

    labelled = C.label_with_teacher_scores(cols, score_fn)
    assert seen == [[("q1", "p1"), ("q1", "a"), ("q1", "b"), ("q2", "p2"), ("q2", "c"), ("q2", "d")]]
    assert labelled["label"] == [[22.0, 21.0, 21.0], [22.0, 21.0, 21.0]]
    assert C.label_with_teacher_scores(cols, score_fn, margins=True)["label"] == [[1.0, 1.0], [1.0, 1.0]]
    relabelled = C.label_with_teacher_scores(labelled, lambda q, d: [0.0] * len(q))  # rescoring replaces labels
    assert relabelled.column_names.count("label") == 1 and relabelled["label"][0] == [0.0, 0.0, 0.0]


def test_attach_teacher_rows(tmp_path, tiny_model_dir):
    store = T.precompute_teacher_embeddings([(q, "query") for q in ["q1", "q2"]] + DOCS[:2],
                                            [T.TeacherSpec("t", tiny_model_dir)], tmp_path)
    cols = {"anchor": ["q1", "q2"], "positive": DOCS[:2]}
    out = C.attach_teacher_rows(cols, store, ["anchor", "positive"], kinds={"anchor": "query"})
    assert out["label"] == [[0, 2], [1, 3]]
    assert C.attach_teacher_rows(cols, store, ["positive"])["label"] == [2, 3]
    with pytest.raises(DataError, match="field 'anchor'"):
        C.attach_teacher_rows(cols, store, ["anchor"])  # stored as queries, looked up as documents


# ---------------------------------------------------------------------------------------------- students

def test_layer_truncated_student(tmp_path, tiny_model_dir):
    import copy

    from embedtrain.models.truncate import first_layers

    teacher = SentenceTransformer(str(tiny_model_dir), device="cpu")
    with first_layers(teacher, 1):
        first = teacher.encode(DOCS)
    student = copy.deepcopy(teacher)
    select_layers(student, 1)
    assert np.allclose(student.encode(DOCS), first, atol=1e-6)
    student.save(str(tmp_path / "s1"))
    reloaded = SentenceTransformer(str(tmp_path / "s1"), device="cpu")
    assert reloaded[0].auto_model.config.num_hidden_layers == 1
    assert np.allclose(reloaded.encode(DOCS), first, atol=1e-6)
    second_only = copy.deepcopy(teacher)
    select_layers(second_only, [1])
    assert not np.allclose(second_only.encode(DOCS), first, atol=1e-3)
    assert teacher[0].auto_model.config.num_hidden_layers == 2  # the teacher is untouched
    for bad in (3, [2], [0, 0], []):
        with pytest.raises(CheckpointError):
            select_layers(copy.deepcopy(teacher), bad)


# ---------------------------------------------------------------------------------------------- with the trainer

def test_trainer_runs_embedding_distillation_from_store_rows(tmp_path, tiny_model_dir, teacher_b):
    """Integer store rows travel through the sentence-transformers collator as the label."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from embedtrain.losses.embedding_distill import EmbeddingDistillLoss

    texts = [f"sentence {i} about {w}" for i, w in enumerate(["cats", "dogs", "rain", "sun"] * 4)]
    store = T.precompute_teacher_embeddings(texts, [T.TeacherSpec("b", teacher_b)], tmp_path / "store")
    data = C.attach_teacher_rows(Dataset.from_dict({"text": texts}), store)
    student = SentenceTransformer(str(tiny_model_dir), device="cpu")
    loss = EmbeddingDistillLoss(student, projection_dim=store.dim, matryoshka_dims=[32, 16],
                                teacher_lookup=store.lookup)
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
                                                num_train_epochs=3, learning_rate=1e-3, logging_steps=1,
                                                save_strategy="no", report_to=[], use_cpu=True, seed=0)
    trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=data, loss=loss)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]  # it learns the teacher on these 16 texts


def test_trainer_runs_score_distillation_from_mined_rows(tmp_path, tiny_model_dir):
    """Mined rows -> score columns -> the collator's float-list label -> both score losses train."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    from embedtrain.losses.listwise_kl import ListwiseDistillLoss
    from embedtrain.losses.margin_mse import MarginMSEDistillLoss

    rows = [{"anchor": f"question {i}", "positive": f"answer {i}", "positive_score": 5.0 + i % 3,
             "negatives": [{"text": f"other {i + j}", "score": float(j - i % 2)} for j in range(3)]}
            for i in range(16)]
    data = to_dataset(_records(rows), "scored_negatives", num_negatives=2)
    for name, make in [("margin", lambda m: MarginMSEDistillLoss(m, similarity="cosine", scale=4.0)),
                       ("listwise", lambda m: ListwiseDistillLoss(m, infonce_weight=0.5))]:
        student = SentenceTransformer(str(tiny_model_dir), device="cpu")
        args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=8,
                                                    num_train_epochs=2, learning_rate=1e-3, logging_steps=1,
                                                    save_strategy="no", report_to=[], use_cpu=True, seed=0)
        trainer = SentenceTransformerTrainer(model=student, args=args, train_dataset=data, loss=make(student))
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        assert len(losses) == 4 and all(np.isfinite(losses)), name
