"""Distillation through recipes and ``embedtrain.api.train``: one run per loss family on tiny random models.

* score distillation: ``margin_mse`` on mined rows that carry scores (a contrastive recipe), ``listwise_kl`` on
  rows without scores, scored once by a bi-encoder teacher and cached (``stage: distill``);
* embedding distillation: ``embed_distill`` on plain text with a student cut from a deeper model, a
  projection to a wider teacher (saved beside or appended), the teacher store reused by the next run;
* self-distillation: ``self_distill`` around ``cosent`` keeps the model near its start;
* the checks that run before any model is loaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import scored_rows, write_recipe, write_rows
from sentence_transformers import SentenceTransformer

from embedtrain.api import train, validate
from embedtrain.distill import teachers as T
from embedtrain.distill.projection import PROJECTION_DIR, load_projection
from embedtrain.errors import DataError, RecipeError
from embedtrain.schema import load_recipe

TOPICS = ["cats", "dogs", "rain", "stocks", "music", "football", "bread", "trains"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def mined_rows(n: int, scored: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        negs = [f"a note about {TOPICS[(i + j) % len(TOPICS)]} number {i + j}" for j in (1, 2, 3)]
        row = {"anchor": f"question {i} about {topic}", "positive": f"answer {i}: all about {topic}"}
        if scored:
            row["positive_score"] = 0.9
            row["negatives"] = [{"text": t, "score": 0.5 - 0.1 * j} for j, t in enumerate(negs)]
        else:
            row["negatives"] = negs
        rows.append(row)
    return rows


def text_rows(n: int) -> list[dict]:
    return [{"text": f"sentence {i} is about {TOPICS[i % len(TOPICS)]} and {TOPICS[(3 * i) % len(TOPICS)]}"}
            for i in range(n)]


def recipe_file(tmp_path, model, datasets, loss, *, distill=None, name="recipe.yaml", output="out", **extra):
    recipe = {"model": model if isinstance(model, dict) else {"name_or_path": str(model)},
              "datasets": datasets, "loss": loss,
              "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 1e-3,
                           "logging_steps": 1, "save_steps": 1000},
              "output_dir": str(tmp_path / output), "seed": 3, **extra}
    if distill is not None:
        recipe["stage"] = "distill"
        recipe["distill"] = distill
    return write_recipe(tmp_path / name, recipe)


def encode(path, texts):
    return SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True)


# ---------------------------------------------------------------------------------------------- score distillation

def test_margin_mse_recipe_trains_on_mined_scores(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "mined.jsonl", mined_rows(16))
    path = recipe_file(tmp_path, tiny_model_dir,
                       [{"name": "mined", "path": "mined.jsonl", "format": "scored_negatives", "num_negatives": 2}],
                       {"name": "margin_mse", "params": {"similarity": "cosine", "scale": 2.0}})
    report = validate(path)
    assert "columns ['anchor', 'positive', 'negative_1', 'negative_2', 'label'], loss margin_mse" in report.lines[0]
    result = train(path)
    assert result.global_step == 2
    before, after = encode(tiny_model_dir, ["question 1 about dogs"]), encode(result.final_dir, ["question 1 about dogs"])
    assert not np.allclose(before, after, atol=1e-5)


def test_listwise_kl_scores_unscored_rows_once_and_caches_them(tmp_path, tiny_model_dir, monkeypatch):
    calls: list[int] = []
    original = T.BiEncoderScorer.__call__

    def counting(self, queries, documents):
        calls.append(len(queries))
        return original(self, queries, documents)

    monkeypatch.setattr(T.BiEncoderScorer, "__call__", counting)
    write_rows(tmp_path / "rows.jsonl", mined_rows(16, scored=False))
    distill = {"scorer": {"kind": "bi_encoder", "model": str(tiny_model_dir), "query_prompt": "query: "},
               "cache_dir": "cache"}
    dataset = [{"name": "rows", "path": "rows.jsonl", "format": "scored_negatives"}]
    loss = {"name": "listwise_kl", "params": {"temperature": 0.05, "teacher_temperature": 0.05,
                                              "infonce_weight": 0.5}}
    result = train(recipe_file(tmp_path, tiny_model_dir, dataset, loss, distill=distill))
    assert result.global_step == 2
    assert calls == [16 * 4]  # every (anchor, candidate) pair scored once
    caches = list((tmp_path / "cache" / "pair_scores").glob("pair_scores-*.sqlite"))
    assert len(caches) == 1
    # a second run (another output folder) finds every pair in the cache
    train(recipe_file(tmp_path, tiny_model_dir, dataset, loss, distill=distill, name="again.yaml", output="out2"))
    assert calls == [16 * 4, 0]


def test_rows_without_scores_need_a_scorer(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "rows.jsonl", mined_rows(4, scored=False))
    path = recipe_file(tmp_path, tiny_model_dir, [{"name": "rows", "path": "rows.jsonl", "format": "scored_negatives"}],
                       {"name": "margin_mse"})
    with pytest.raises(DataError) as info:
        validate(path)
    assert "no teacher scores" in str(info.value) and info.value.field == "datasets[0]"
    assert info.value.line is not None


# ---------------------------------------------------------------------------------------------- embedding distillation

@pytest.fixture(scope="module")
def wide_teacher(tiny_model_factory):
    """A teacher wider (48 dims) than the students (32 dims)."""
    return tiny_model_factory(seed=5, hidden_size=48, num_heads=2)


def test_embed_distill_recipe_cuts_the_student_keeps_the_projection_and_reuses_the_store(
        tmp_path, tiny4, wide_teacher, monkeypatch):
    encoded: list[int] = []
    original = T.encode_with_teachers

    def counting(texts, kinds, teachers, **kw):
        encoded.append(len(texts))
        return original(texts, kinds, teachers, **kw)

    monkeypatch.setattr(T, "encode_with_teachers", counting)
    write_rows(tmp_path / "texts.jsonl", text_rows(24))
    distill = {"teachers": [{"name": "wide", "model": str(wide_teacher)}], "cache_dir": "cache"}
    dataset = [{"name": "texts", "path": "texts.jsonl", "format": "text"}]
    loss = {"name": "embed_distill", "params": {"matryoshka_dims": [32, 16]}}
    model = {"name_or_path": str(tiny4), "keep_layers": 2}
    path = recipe_file(tmp_path, model, dataset, loss, distill=distill)
    assert any(line.startswith("teacher wide:") for line in validate(path).lines)
    result = train(path)
    assert result.global_step == 3 and encoded == [24]
    student = SentenceTransformer(str(result.final_dir), device="cpu")
    assert student[0].auto_model.config.num_hidden_layers == 2  # cut from the 4-layer model
    assert student.get_embedding_dimension() == 32  # the student keeps its own width ...
    projection = load_projection(result.final_dir / PROJECTION_DIR)  # ... the projection is saved beside it
    assert (projection.in_features, projection.out_features) == (32, 48)
    stores = list((tmp_path / "cache").glob("teachers-*"))
    assert len(stores) == 1 and len(T.TeacherEmbeddings(stores[0])) == 24

    # Again, appending the projection: the store is reused (nothing encoded), the model outputs 48 dims.
    distill["append_projection"] = True
    result = train(recipe_file(tmp_path, model, dataset, loss, distill=distill, name="append.yaml", output="out2"))
    assert encoded == [24]
    appended = SentenceTransformer(str(result.final_dir), device="cpu")
    assert appended.get_embedding_dimension() == 48
    assert not (result.final_dir / PROJECTION_DIR).exists()


def test_embed_distill_learns_the_teacher(tmp_path, tiny_model_factory, tiny_model_dir):
    """Student and teacher share the width: no projection; training brings the student closer to the teacher."""
    teacher = tiny_model_factory(seed=9)
    rows = text_rows(32)
    write_rows(tmp_path / "texts.jsonl", rows)
    path = recipe_file(tmp_path, tiny_model_dir, [{"name": "texts", "path": "texts.jsonl", "format": "text"}],
                       {"name": "embed_distill", "params": {"cosine_weight": 1.0, "similarity_weight": 10.0,
                                                            "ranking_weight": 0.0}},
                       distill={"teachers": [{"model": str(teacher)}], "cache_dir": "cache"},
                       training={"per_device_train_batch_size": 8, "num_train_epochs": 4, "learning_rate": 3e-3,
                                 "save_steps": 1000})
    result = train(path)
    texts = [r["text"] for r in rows]
    target = encode(teacher, texts)

    def mean_cos(path):
        got = encode(path, texts)
        return float(np.mean(np.sum(got * target, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(target, axis=1)))

    assert not (result.final_dir / PROJECTION_DIR).exists()
    assert mean_cos(result.final_dir) > mean_cos(tiny_model_dir) + 0.05


def test_embedding_losses_need_teachers_and_a_fitting_student(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "texts.jsonl", text_rows(8))
    dataset = [{"name": "texts", "path": "texts.jsonl", "format": "text"}]
    with pytest.raises(RecipeError, match="stage: distill") as info:
        validate(recipe_file(tmp_path, tiny_model_dir, dataset, {"name": "embed_distill"}))
    assert info.value.field == "loss.name"
    with pytest.raises(RecipeError, match="cannot keep 5 layers of a 2-layer model") as info:
        validate(recipe_file(tmp_path, {"name_or_path": str(tiny_model_dir), "keep_layers": 5}, dataset,
                             {"name": "embed_distill"}, distill={"teachers": [{"model": str(tiny_model_dir)}]}))
    assert info.value.field == "model.keep_layers" and info.value.line is not None
    with pytest.raises(RecipeError) as info:
        validate(recipe_file(tmp_path, tiny_model_dir, dataset,
                             {"name": "embed_distill", "params": {"matryoshka_dims": [64]}},
                             distill={"teachers": [{"model": str(tiny_model_dir)}]}))
    assert info.value.field == "loss.params.matryoshka_dims"
    with pytest.raises(RecipeError, match="used twice"):
        load_recipe(recipe_file(tmp_path, tiny_model_dir, dataset, {"name": "embed_distill"},
                                distill={"teachers": [{"name": "a", "model": "x"}, {"name": "a", "model": "y"}]}))
    with pytest.raises(RecipeError, match="cannot train on 'text'"):  # a contrastive loss on plain text
        validate(recipe_file(tmp_path, tiny_model_dir, dataset, {"name": "mnrl"}))


# ---------------------------------------------------------------------------------------------- self-distillation

def test_self_distill_keeps_the_model_near_its_start(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "sts.jsonl", scored_rows(32))
    texts = [r["sentence1"] for r in scored_rows(32)]
    start = encode(tiny_model_dir, texts)
    moved = {}
    for weight in (0.0, 50.0):
        path = recipe_file(tmp_path, tiny_model_dir, [{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}],
                           {"name": "self_distill", "params": {"weight": weight}, "inner": {"name": "cosent"}},
                           name=f"r{weight}.yaml", output=f"out{weight}",
                           training={"per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 2e-3,
                                     "save_steps": 1000})
        result = train(path)
        after = encode(result.final_dir, texts)
        moved[weight] = float(np.mean(1 - np.sum(after * start, 1) / np.linalg.norm(after, axis=1)
                                      / np.linalg.norm(start, axis=1)))
    assert moved[0.0] > 0.01  # cosent alone moves the model ...
    assert moved[50.0] < moved[0.0] / 3  # ... the self-distillation pull keeps it close to where it started


def test_self_distill_params_are_checked_before_training(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "sts.jsonl", scored_rows(8))
    dataset = [{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}]
    with pytest.raises(RecipeError, match="wraps another one"):
        validate(recipe_file(tmp_path, tiny_model_dir, dataset, {"name": "self_distill"}))
    with pytest.raises(RecipeError) as info:
        validate(recipe_file(tmp_path, tiny_model_dir, dataset,
                             {"name": "self_distill", "params": {"weight": -1}, "inner": {"name": "cosent"}}))
    assert info.value.field == "loss.params.weight"
    with pytest.raises(RecipeError, match="cannot train on 'scored_pairs'"):  # the inner loss's formats apply
        validate(recipe_file(tmp_path, tiny_model_dir, dataset, {"name": "self_distill", "inner": {"name": "mnrl"}}))


def test_smae_refuses_keep_layers(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "texts.jsonl", text_rows(8))
    path = write_recipe(tmp_path / "smae.yaml", {
        "stage": "smae", "model": {"name_or_path": str(tiny_model_dir), "keep_layers": 1},
        "datasets": [{"name": "t", "path": "texts.jsonl"}], "output_dir": str(tmp_path / "o")})
    with pytest.raises(RecipeError, match="export") as info:
        load_recipe(path)
    assert info.value.field == "model.keep_layers"


def test_projection_is_checkpointed_and_restored_on_resume(tmp_path, tiny_model_dir, wide_teacher):
    write_rows(tmp_path / "texts.jsonl", text_rows(32))
    path = recipe_file(tmp_path, tiny_model_dir, [{"name": "texts", "path": "texts.jsonl", "format": "text"}],
                       {"name": "embed_distill"}, distill={"teachers": [{"model": str(wide_teacher)}]},
                       training={"per_device_train_batch_size": 8, "max_steps": 2, "save_steps": 2,
                                 "learning_rate": 1e-2})
    first = train(path)
    saved = load_projection(first.output_dir / "checkpoint-2" / PROJECTION_DIR)
    assert torch.allclose(saved.weight, load_projection(first.final_dir).weight)
    from embedtrain.train import distill as mode_module

    restored = {}
    original = mode_module.restore_projection

    def spy(target, folder):
        original(target, folder)
        restored["weight"] = target.weight.detach().clone()

    mode_module.restore_projection = spy
    try:
        train(path, ["training.max_steps=3"], resume=True)
    finally:
        mode_module.restore_projection = original
    assert torch.allclose(restored["weight"], saved.weight)


def test_bundled_distillation_recipe_validates(repo_root):
    report = validate(repo_root / "recipes" / "distill_student.yaml")
    assert report.recipe.stage == "distill" and report.recipe.model.keep_layers == 3
    assert any(line.startswith("teacher minilm:") for line in report.lines)


def test_accelerate_launch_two_processes_share_the_teacher_work(tmp_path, tiny_model_dir, wide_teacher, repo_root):
    """A distill recipe under a real 2-process launch: the store and the pair scores are built once, together."""
    import json
    import os
    import subprocess
    import sys

    write_rows(tmp_path / "texts.jsonl", text_rows(32))
    write_rows(tmp_path / "rows.jsonl", mined_rows(16, scored=False))
    path = recipe_file(
        tmp_path, tiny_model_dir,
        [{"name": "texts", "path": "texts.jsonl", "format": "text"},
         {"name": "rows", "path": "rows.jsonl", "format": "scored_negatives", "loss": {"name": "margin_mse"}}],
        {"name": "embed_distill"},
        distill={"teachers": [{"model": str(wide_teacher)}], "scorer": {"kind": "bi_encoder", "model": str(wide_teacher)},
                 "cache_dir": "cache"})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(repo_root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29541",
           "-m", "embedtrain", "train", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final model:") == 1, proc.stdout
    stores = list((tmp_path / "cache").glob("teachers-*"))
    assert len(stores) == 1 and len(T.TeacherEmbeddings(stores[0])) == 32
    index = json.loads((stores[0] / "index.json").read_text())
    single = T.precompute_teacher_embeddings([r["text"] for r in text_rows(32)], [T.TeacherSpec("teacher0", wide_teacher)],
                                             tmp_path / "single")
    assert index["keys"] == single.index["keys"] and index["fingerprint"] == single.fingerprint
    assert np.allclose(np.array(T.TeacherEmbeddings(stores[0]).vectors), np.array(single.vectors), atol=1e-5)
    caches = list((tmp_path / "cache" / "pair_scores").glob("*.sqlite"))
    assert len(caches) == 1
    assert (tmp_path / "out" / "final" / PROJECTION_DIR).is_dir()
