"""Task adapters on a tiny model: routing per task, prompts, save/load, safe loading, export, MTEB mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from embedtrain.adapters.checkpoint import attach_tasks, is_task_checkpoint
from embedtrain.adapters.export import export_task
from embedtrain.adapters.mteb_map import mteb_task_scope
from embedtrain.errors import CheckpointError
from embedtrain.models import load_model
from embedtrain.schema.tasks import LoraSpec, TaskConfig

TEXTS = ["a cat sits on the mat", "the weather is lovely today", "stock prices fell sharply"]
LORA = LoraSpec(r=4, alpha=8, target_modules=["query", "value"])


def _tasks() -> list[TaskConfig]:
    return [
        TaskConfig(name="retrieval.query", prompt="query: ", aliases=["query"], lora=LORA),
        TaskConfig(name="retrieval.passage", prompt="passage: ", aliases=["document"], lora=LORA),
        TaskConfig(name="text-matching", lora=LORA),
        TaskConfig(name="classification", lora=LORA),
    ]


def _randomise_adapters(module, seed: int = 0) -> None:
    """LoRA B starts at zero (adapter == base); give every adapter distinct non-zero weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5)


@pytest.fixture
def task_model(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu")
    module = attach_tasks(model, _tasks())
    _randomise_adapters(module)
    return model


@pytest.fixture
def saved_task_model(task_model, tmp_path):
    path = tmp_path / "ckpt"
    task_model.save(str(path))
    return task_model, path


def test_each_task_routes_to_its_adapter_and_alias_and_default(task_model, tiny_model_dir):
    base = load_model(tiny_model_dir, device="cpu").encode(TEXTS)
    by_task = {t: task_model.encode(TEXTS, task=t) for t in ("retrieval.query", "retrieval.passage",
                                                             "text-matching", "classification")}
    names = list(by_task)
    for i, a in enumerate(names):
        assert not np.allclose(by_task[a], base, atol=1e-4), a
        for b in names[i + 1:]:
            assert not np.allclose(by_task[a], by_task[b], atol=1e-4), (a, b)
    np.testing.assert_allclose(task_model.encode(TEXTS), base, atol=1e-6)  # no task: adapters off
    np.testing.assert_allclose(task_model.encode_query(TEXTS), by_task["retrieval.query"], atol=1e-6)
    np.testing.assert_allclose(task_model.encode_document(TEXTS), by_task["retrieval.passage"], atol=1e-6)
    np.testing.assert_allclose(task_model.encode(TEXTS, task="query"), by_task["retrieval.query"], atol=1e-6)
    with pytest.raises(ValueError, match="unknown task 'nope'.*retrieval.query"):
        task_model.encode(TEXTS, task="nope")


def test_task_prompt_is_prepended_unless_a_prompt_is_given(task_model):
    module = task_model[0]
    tokens = lambda texts, **kw: module.preprocess(texts, **kw)["input_ids"].tolist()  # noqa: E731
    assert tokens(TEXTS, task="retrieval.query") == tokens(["query: " + t for t in TEXTS])
    assert tokens(TEXTS, task="text-matching") == tokens(TEXTS)  # a task without a prompt
    assert tokens(TEXTS, task="retrieval.query", prompt="other: ") == tokens(["other: " + t for t in TEXTS])
    explicit = task_model.encode(TEXTS, task="retrieval.query", prompt="other: ")
    assert not np.allclose(explicit, task_model.encode(TEXTS, task="retrieval.query"), atol=1e-4)


def test_save_load_round_trip_is_identical_and_base_folder_is_adapter_free(saved_task_model, tiny_model_dir):
    model, path = saved_task_model
    assert is_task_checkpoint(path)
    files = json.loads((path / "task_adapters.json").read_text())
    assert files["aliases"] == {"query": "retrieval.query", "document": "retrieval.passage"}
    assert files["mteb"]["STS"] == "text-matching" and files["mteb"]["Retrieval:query"] == "retrieval.query"
    base = load_file(str(path / "model.safetensors"))
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert set(base) == set(original) and all(torch.equal(base[k], original[k]) for k in base)
    for adapter in ("retrieval_query", "retrieval_passage", "text-matching", "classification"):
        config = json.loads((path / "adapters" / adapter / "adapter_config.json").read_text())
        assert config["r"] == 4 and config["base_model_name_or_path"] is None
        assert all("lora_" in k for k in load_file(str(path / "adapters" / adapter / "adapter_model.safetensors")))

    loaded = load_model(path, device="cpu")
    assert type(loaded[0]).__name__ == "TaskAdapterTransformer"
    for task in (None, "retrieval.query", "retrieval.passage", "text-matching", "classification"):
        np.testing.assert_array_equal(loaded.encode(TEXTS, task=task), model.encode(TEXTS, task=task))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_loading_needs_trust_and_refuses_other_custom_code(saved_task_model, tmp_path):
    model, path = saved_task_model
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(path), local_files_only=True)
    trusted = SentenceTransformer(str(path), local_files_only=True, trust_remote_code=True)
    np.testing.assert_array_equal(trusted.encode(TEXTS, task="text-matching"), model.encode(TEXTS, task="text-matching"))

    modules = json.loads((path / "modules.json").read_text())
    modules[1]["type"] = "evil_package.Pooling"
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="evil_package.Pooling"):
        load_model(path)
    modules[1]["type"] = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
    (path / "modules.json").write_text(json.dumps(modules))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    with pytest.raises(CheckpointError, match="auto_map"):
        load_model(path)


def test_export_task_equals_encode_with_that_task(saved_task_model, tmp_path):
    model, path = saved_task_model
    for task in ("query", "text-matching"):
        out = export_task(path, task, tmp_path / f"export-{task}")
        modules = json.loads((out / "modules.json").read_text())
        assert all(m["type"].startswith("sentence_transformers.") for m in modules)
        assert not (out / "adapters").exists() and not (out / "task_adapters.json").exists()
        plain = SentenceTransformer(str(out), local_files_only=True)  # no trust_remote_code needed
        np.testing.assert_allclose(plain.encode(TEXTS), model.encode(TEXTS, task=task), atol=1e-5)
    with pytest.raises(CheckpointError, match="unknown task 'nope'"):
        export_task(path, "nope", tmp_path / "bad")
    with pytest.raises(CheckpointError, match="not empty"):
        export_task(path, "query", tmp_path / "export-query")


def test_export_task_cli(saved_task_model, tmp_path, capsys):
    from embedtrain.cli.app import run_app

    model, path = saved_task_model
    run_app(["export-task", str(path), str(tmp_path / "cli-out"), "--task", "retrieval.passage"])
    plain = SentenceTransformer(str(tmp_path / "cli-out"), local_files_only=True)
    np.testing.assert_allclose(plain.encode(TEXTS), model.encode(TEXTS, task="retrieval.passage"), atol=1e-5)
    run_app(["tasks", str(path)])
    printed = capsys.readouterr().out
    assert "retrieval.passage" in printed and "passage: " in printed


def test_mteb_task_types_pick_adapters(task_model, tiny_model_dir):
    expected = {t: task_model.encode(TEXTS, task=t) for t in ("text-matching", "classification",
                                                              "retrieval.query", "retrieval.passage")}
    with mteb_task_scope(task_model, "STS"):
        np.testing.assert_allclose(task_model.encode(TEXTS), expected["text-matching"], atol=1e-6)
    with mteb_task_scope(task_model, "Classification"):
        np.testing.assert_allclose(task_model.encode(TEXTS), expected["classification"], atol=1e-6)
    with mteb_task_scope(task_model, "Retrieval"):
        np.testing.assert_allclose(task_model.encode_query(TEXTS), expected["retrieval.query"], atol=1e-6)
        np.testing.assert_allclose(task_model.encode_document(TEXTS), expected["retrieval.passage"], atol=1e-6)
    base = load_model(tiny_model_dir, device="cpu")
    np.testing.assert_allclose(task_model.encode(TEXTS), base.encode(TEXTS), atol=1e-6)  # scope restored
    with mteb_task_scope(base, "STS"):  # plain models: no-op
        np.testing.assert_allclose(base.encode(TEXTS), task_model.encode(TEXTS), atol=1e-6)


def test_mteb_harness_encoder_uses_the_mapping(task_model):
    """The harness encoder with task routing: each MTEB task type (and side) gets its mapped adapter."""
    from datasets import Dataset
    from mteb.types import PromptType

    from embedtrain.evaluation.encoder import make_encoder

    encoder = make_encoder(task_model, label="x", fingerprint="f", cache={})
    loader = torch.utils.data.DataLoader(Dataset.from_dict({"text": TEXTS}), batch_size=2)

    def meta(name, kind):
        return type("Meta", (), {"name": name, "type": kind})

    cases = [(meta("SciFact", "Retrieval"), PromptType.query, "retrieval.query"),
             (meta("SciFact", "Retrieval"), PromptType.document, "retrieval.passage"),
             (meta("STSBenchmark", "STS"), None, "text-matching"),
             (meta("Banking77Classification", "Classification"), None, "classification")]
    for metadata, prompt_type, task in cases:
        got = encoder.encode(loader, task_metadata=metadata, hf_split="test", hf_subset="default",
                             prompt_type=prompt_type)
        np.testing.assert_allclose(np.asarray(got), task_model.encode(TEXTS, task=task), atol=1e-5,
                                   err_msg=f"{metadata.type} {prompt_type}")
    # outside the encoder the model is back to its default (the base model here)
    assert task_model[0].default_task is None


def test_eval_cli_scores_sts_with_the_text_matching_adapter(saved_task_model, tmp_path, shared_data_dir,
                                                             tiny_model_dir, capsys):
    """``embedtrain eval`` of a task checkpoint on STSBenchmark equals the score of the exported
    text-matching model (the adapter is routed by MTEB task type), not the base model's."""
    from embedtrain.cli.app import run_app
    from embedtrain.evaluation.results import load_summary
    from embedtrain.evaluation.runner import evaluate_checkpoint

    _, path = saved_task_model
    run_app(["eval", str(path), "--tasks", "STSBenchmark", "--data-dir", str(shared_data_dir),
             "--output", str(tmp_path / "routed")])
    assert "STSBenchmark" in capsys.readouterr().out
    routed = load_summary(tmp_path / "routed").scores["STSBenchmark"].value
    exported = export_task(path, "text-matching", tmp_path / "tm")
    merged = evaluate_checkpoint(exported, tasks=["STSBenchmark"], data_dir=shared_data_dir,
                                 output=tmp_path / "merged", show_progress=False).summary.scores["STSBenchmark"].value
    base = evaluate_checkpoint(tiny_model_dir, tasks=["STSBenchmark"], data_dir=shared_data_dir,
                               output=tmp_path / "plain", show_progress=False).summary.scores["STSBenchmark"].value
    assert routed == pytest.approx(merged, abs=1e-3)
    assert abs(routed - base) > 1e-2  # the adapter really changed the embeddings
