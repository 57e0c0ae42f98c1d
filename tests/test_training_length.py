"""The length a model trains at is not silently the length it is saved with; comparisons flag mismatches (issue 19)."""

from __future__ import annotations

import json
import shutil

from helpers import scored_rows, write_recipe, write_rows

from embedtrain.api import train
from embedtrain.evaluation.results import EvalSummary, TaskScore, weights_fingerprint


def _recipe(tmp_path, model_dir, **model):
    write_rows(tmp_path / "sts.jsonl", scored_rows(24))
    return write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": str(model_dir), "max_seq_length": 16, **model},
        "datasets": [{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}],
        "loss": {"name": "cosent"}, "training": {"max_steps": 2, "per_device_train_batch_size": 8},
        "output_dir": str(tmp_path / "out")})


def _saved_length(folder):
    from embedtrain.models.resolve import load_model

    return load_model(folder, device="cpu").max_seq_length


def test_training_length_is_not_the_saved_length(tmp_path, tiny_model_dir, caplog, one_thread):
    start = _saved_length(tiny_model_dir)
    assert start != 16
    with caplog.at_level("INFO"):
        result = train(_recipe(tmp_path, tiny_model_dir))
    assert _saved_length(result.final_dir) == start  # the start model's own length
    assert f"trained at max_seq_length 16; saved with {start}" in caplog.text
    shutil.rmtree(tmp_path / "out")
    result = train(_recipe(tmp_path, tiny_model_dir, saved_max_seq_length=24))
    assert _saved_length(result.final_dir) == 24  # asked for explicitly


def test_fingerprint_covers_the_saved_length(tmp_path, tiny_model_dir):
    at_128 = shutil.copytree(tiny_model_dir, tmp_path / "at128")
    config = json.loads((at_128 / "tokenizer_config.json").read_text())
    (at_128 / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8}))
    assert weights_fingerprint(at_128) != weights_fingerprint(tiny_model_dir)  # same weights, another model


def test_results_written_inside_a_checkpoint_do_not_change_its_fingerprint(tmp_path, tiny_model_dir):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    before = weights_fingerprint(model)
    for folder in ("eval_full", "eval"):  # what `embedtrain eval CKPT -o CKPT/<folder>` writes
        (model / folder / "results" / "embedtrain__model" / before).mkdir(parents=True)
        (model / folder / "results" / "embedtrain__model" / before / "SciFact.json").write_text("{}")
        (model / folder / "scores.json").write_text(json.dumps({"SciFact": 60.0}))
    (model / "eval_running" / "results" / "embedtrain__model").mkdir(parents=True)  # an evaluation under way
    (model / "eval_running" / "results" / "embedtrain__model" / "model_meta.json").write_text("{}")
    shutil.copytree(tiny_model_dir, model / "merged_0.30")  # another model saved inside it
    assert weights_fingerprint(model) == before  # scoring (or a variant saved beside it) is not the model
    (model / "adapters" / "retrieval").mkdir(parents=True)  # task adapters are the model's own weights
    (model / "adapters" / "retrieval" / "adapter_model.safetensors").write_bytes(b"lora")
    with_adapter = weights_fingerprint(model)
    assert with_adapter != before
    modules = json.loads((model / "modules.json").read_text())
    pooling = model / next(m["path"] for m in modules if m.get("path")) / "config.json"
    pooling.write_text(pooling.read_text() + " ")  # a module folder's config is the model's too
    assert weights_fingerprint(model) != with_adapter


def test_compare_flags_different_encoding_settings():
    def summary(label, length, prompts):
        return EvalSummary(label, label, "f" * 12, {"SciFact": TaskScore("SciFact", "ndcg_at_10", 60.0)}, None,
                           {"max_seq_length": length, "pooling": "mean", "prompts": prompts})

    same = compare_summaries([summary("a", 256, {}), summary("b", 256, {})])
    assert same.warnings == []
    mixed = compare_summaries([summary("base", 256, {}), summary("tuned", 128, {"query": "q: "})])
    assert mixed.warnings == ["max_seq_length differs (base: 256, tuned: 128)",
                              "prompts differs (base: {}, tuned: {'query': 'q: '})"]
    assert "Not comparable as is:** max_seq_length differs" in mixed.markdown()


def compare_summaries(summaries):
    from embedtrain.evaluation.compare import compare as compare_loaded

    return compare_loaded(summaries)


