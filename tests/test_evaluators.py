"""In-training evaluators of every kind: retrieval (equal to `embedtrain eval`), classification, STS; the metric
names metric_for_best_model may use; recipe errors."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from helpers import pair_rows, scored_rows, write_recipe, write_rows

from embedtrain.errors import DataError, RecipeError
from embedtrain.evaluation.evaluators import build_evaluators, metric_names, run_evaluators
from embedtrain.schema import load_recipe

WORDS = ["apple", "river", "stone", "cloud", "music", "engine", "garden", "paper", "silver", "winter", "doctor",
         "ocean", "forest", "window", "market", "planet"]


def _beir(folder, n_docs: int = 40, n_queries: int = 12, seed: int = 0):
    """A small BEIR folder: titled documents, queries with 1-3 relevant documents (and a 0-score qrel)."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"{WORDS[i % 16]} notes" if i % 3 else "",
             "text": " ".join(rng.choice(WORDS) for _ in range(8))} for i in range(n_docs)]
    write_rows(folder / "corpus.jsonl", docs)
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for q in range(n_queries):
        words = rng.sample(WORDS, 3)
        queries.append({"_id": f"q{q}", "text": "what about " + " ".join(words)})
        for d in rng.sample(range(n_docs), rng.randint(1, 3)):
            qrels.append(f"q{q}\td{d}\t1")
        qrels.append(f"q{q}\td{(q * 7) % n_docs}\t0")  # judged not relevant
    write_rows(folder / "queries.jsonl", queries + [{"_id": "unjudged", "text": "a query without qrels"}])
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def _recipe(tmp_path, model_dir, evaluators, **training):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(16))
    data = {"model": {"name_or_path": str(model_dir)},
            "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
            "loss": {"name": "mnrl"}, "evaluators": evaluators,
            "training": {"per_device_train_batch_size": 8, "max_steps": 2, "logging_steps": 1, **training},
            "output_dir": str(tmp_path / "out")}
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", data))


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory, tiny_model_dir):
    """The tiny model with query/document prompts (retrieval must apply them the way mteb does)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.prompts = {"query": "query: ", "document": "passage: "}
    out = tmp_path_factory.mktemp("prompted") / "model"
    model.save(str(out))
    return out


def test_retrieval_evaluator_equals_embedtrain_eval(tmp_path, prompted_model):
    from sentence_transformers import SentenceTransformer

    from embedtrain.api import evaluate

    _beir(tmp_path / "beir")
    tasks = {"tasks": [{"name": "MyRetrieval", "type": "retrieval", "beir_dir": "beir"}]}
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    recipe = _recipe(tmp_path, prompted_model, [
        {"name": "by-folder", "type": "retrieval", "path": "beir"},
        {"name": "by-task", "type": "retrieval", "task": "MyRetrieval", "task_config": "tasks.yaml"}])
    evaluators = build_evaluators(recipe)
    model = SentenceTransformer(str(prompted_model), device="cpu")
    results = {ev.name: ev(model) for ev in evaluators}
    assert results["by-folder"]["by-folder_cosine_ndcg@10"] == results["by-task"]["by-task_cosine_ndcg@10"]

    report = evaluate(prompted_model, tasks=["MyRetrieval"], task_configs=[tmp_path / "tasks.yaml"],
                      output=tmp_path / "eval", show_progress=False)
    mteb_ndcg = report.summary.scores["MyRetrieval"].value  # x 100
    assert report.summary.scores["MyRetrieval"].metric == "ndcg_at_10"
    assert 100 * results["by-folder"]["by-folder_cosine_ndcg@10"] == pytest.approx(mteb_ndcg, abs=1e-3)
    # and the score is not trivially the same whatever the prompts: without them it differs
    model.prompts = {}
    no_prompt = evaluators[0](model)["by-folder_cosine_ndcg@10"]
    assert no_prompt != pytest.approx(results["by-folder"]["by-folder_cosine_ndcg@10"], abs=1e-6)


def test_every_kind_returns_the_metric_names_recipes_may_name(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    _beir(tmp_path / "beir")
    write_rows(tmp_path / "sts.jsonl", scored_rows(20))
    labelled = [{"text": f"{w} {w} report number {i}", "label": w} for i in range(6) for w in WORDS[:4]]
    write_rows(tmp_path / "cls_train.jsonl", labelled[:16])
    write_rows(tmp_path / "cls_test.jsonl", labelled[16:])
    recipe = _recipe(tmp_path, tiny_model_dir, [
        {"name": "sts", "path": "sts.jsonl"},
        {"name": "ret", "type": "retrieval", "path": "beir", "max_samples": 5},
        {"name": "cls", "type": "classification", "path": "cls_test.jsonl", "train_path": "cls_train.jsonl"}])
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    for cfg, ev in zip(recipe.evaluators, build_evaluators(recipe)):
        result = ev(model)
        assert set(result) == set(metric_names(cfg)), cfg.type
        assert ev.primary_metric == metric_names(cfg)[0]
    scores = run_evaluators(build_evaluators(recipe), model)
    assert set(scores) == {"sts", "ret", "cls"} and all(-100 <= v <= 100 for v in scores.values())
    assert len(build_evaluators(recipe)[1].queries) == 5


def test_classification_evaluator_scores_a_linear_probe(tmp_path):
    import numpy as np

    from embedtrain.evaluation.evaluators import ClassificationEvaluator

    class Lookup:  # a "model" whose embedding of a text is its label's one-hot vector plus noise
        def __init__(self, labels):
            self.labels = labels
            self.rng = np.random.default_rng(0)

        def encode(self, texts, **kwargs):
            return np.stack([np.eye(3)[self.labels[t]] + 0.01 * self.rng.standard_normal(3) for t in texts])

    texts = [f"t{i}" for i in range(30)]
    labels = {t: i % 3 for i, t in enumerate(texts)}
    ev = ClassificationEvaluator(texts[:15], [labels[t] for t in texts[:15]], texts[15:],
                                 [labels[t] for t in texts[15:]], name="probe")
    model = Lookup(labels)
    model.model_card_data = type("Card", (), {"set_evaluation_metrics": lambda *a, **k: None})()
    assert ev(model) == {"probe_accuracy": 1.0, "probe_f1": 1.0}
    wrong = ClassificationEvaluator(texts[:15], [labels[t] for t in texts[:15]], texts[15:],
                                    [(labels[t] + 1) % 3 for t in texts[15:]], name="probe")
    assert wrong(model)["probe_accuracy"] == 0.0


def test_bundled_task_by_name_reads_the_data_dir(tmp_path, tiny_model_dir, shared_data_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, [
        {"name": "stsb", "task": "STSBenchmark", "data_dir": str(shared_data_dir), "max_samples": 50},
        {"name": "scifact", "type": "retrieval", "task": "SciFact", "data_dir": str(shared_data_dir),
         "max_samples": 3}])
    sts, ret = build_evaluators(recipe)
    assert len(sts.sentences1) == 50 and len(ret.queries) == 3 and len(ret.corpus) > 5000


def test_recipe_errors_name_the_evaluator(tmp_path, tiny_model_dir):
    _beir(tmp_path / "beir")
    with pytest.raises(RecipeError, match=r"evaluators\[0\].*'path'.*'task'"):
        _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "retrieval"}])
    with pytest.raises(RecipeError, match=r"evaluators\[0\].*train_path"):
        _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "classification", "path": "a.jsonl"}])
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "retrieval", "path": "missing"}])
    with pytest.raises(DataError, match=r"evaluators\[0\]\.path"):
        build_evaluators(recipe)
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "sts", "task": "STSBenchmrk"}])
    with pytest.raises(RecipeError, match=r"Did you mean 'STSBenchmark'"):
        build_evaluators(recipe)
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "sts", "task": "SciFact"}])
    with pytest.raises(RecipeError, match=r"retrieval task.*evaluators\[0\]\.type|evaluators\[0\]\.type"):
        build_evaluators(recipe)
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "x", "type": "retrieval", "path": "beir",
                                                 "split": "dev"}])
    with pytest.raises(DataError, match="qrels/dev.tsv"):
        build_evaluators(recipe)


def test_retrieval_evaluator_runs_during_training(tmp_path, tiny_model_dir):
    from embedtrain.api import train

    _beir(tmp_path / "beir")
    recipe = _recipe(tmp_path, tiny_model_dir, [{"name": "ret", "type": "retrieval", "path": "beir"}],
                     eval_strategy="steps", eval_steps=1, save_steps=1)
    result = train(recipe)
    record = json.loads((result.final_dir / "embedtrain_run.json").read_text())
    steps = [e["step"] for e in record["log_history"] if "eval_ret_cosine_ndcg@10" in e]
    assert steps == [1, 2]
    assert set(result.scores_after) == {"ret"}
