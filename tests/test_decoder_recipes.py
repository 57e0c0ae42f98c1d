"""Decoder-LLM embedders through recipes: a tiny random Llama trained by ``embedtrain.api.train`` with the
``model:`` options (last-token pooling, bidirectional attention, whole-model LoRA), saved, and reloaded with a
plain ``SentenceTransformer(path)``; GradCache and the Matryoshka family on a decoder; instruction prompts in
training and in ``embedtrain eval``; located errors for options that cannot apply.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_recipe, write_rows
from sentence_transformers import SentenceTransformer
from transformers import TrainerCallback

from embedtrain.api import train, validate
from embedtrain.errors import EmbedtrainError
from embedtrain.schema import load_recipe
from embedtrain.testing import build_tiny_decoder

pytestmark = pytest.mark.usefixtures("one_thread")

ANIMALS = ["cat", "dog", "bird", "fox"]
PLACES = ["mat", "tree", "sky"]
COLORS = ["red", "blue", "green", "brown"]
TEXTS = ["the red cat sits on the mat", "a dog", "what is the big blue sky", "the quick brown fox jumps"]


def pair_rows() -> list[dict]:
    """16 distinct in-vocabulary query/passage pairs (the tiny tokenizer knows only a few words)."""
    return [{"query": f"where is the {c} {a}", "passage": f"the {c} {a} sits on the {PLACES[i % 3]}"}
            for i, (c, a) in enumerate((c, a) for c in COLORS for a in ANIMALS)]


def scored_rows() -> list[dict]:
    return [{"sentence1": f"the {c} {a} sits", "sentence2": f"a {c} {ANIMALS[(i + j) % 4]} runs",
             "score": float((i + j) % 4)} for i, c in enumerate(COLORS) for j, a in enumerate(ANIMALS)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_decoder(tmp_path_factory.mktemp("llama"), arch="llama", num_layers=2)


class KeepModel(TrainerCallback):
    """Remembers the model the trainer trained (the object the runner then merges and saves)."""

    model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        KeepModel.model = model


def _recipe(tmp_path, model: dict, *, loss=None, datasets=None, **extra) -> dict:
    write_rows(tmp_path / "pairs.jsonl", pair_rows())
    write_rows(tmp_path / "scored.jsonl", scored_rows())
    recipe = {
        "model": {"max_seq_length": 32, **model},
        "datasets": datasets or [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": loss or {"name": "mnrl"},
        "training": {"per_device_train_batch_size": 4, "num_train_epochs": 1, "learning_rate": 5e-3,
                     "save_strategy": "no", "logging_steps": 1},
        "output_dir": str(tmp_path / "out"),
        "seed": 3,
    }
    recipe.update(extra)
    return recipe


def _load(tmp_path, recipe: dict):
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe))


def _encode(model, texts=TEXTS):
    model.eval()
    return model.encode(texts, convert_to_tensor=True, batch_size=len(texts))


# -- the round trip ----------------------------------------------------------------------------------------
def test_last_token_bidirectional_lora_recipe_trains_merges_and_reloads_plainly(tmp_path, llama_dir):
    from embedtrain.models.decoder import build_decoder_embedder

    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(llama_dir), "pooling": "last_token",
                                                "bidirectional": True, "lora": {"r": 4, "alpha": 8}}))
    result = train(recipe, callbacks=[KeepModel()])
    assert result.global_step == 4  # 16 rows / batch 4
    final = result.final_dir
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()
    assert json.loads((final / "config.json").read_text())["is_causal"] is False
    assert [m["type"].split(".")[0] for m in json.loads((final / "modules.json").read_text())] == \
        ["sentence_transformers", "sentence_transformers"]

    reloaded = SentenceTransformer(str(final), device="cpu")  # no flags, no embedtrain code
    assert reloaded.tokenizer("a dog")["input_ids"][-1] == reloaded.tokenizer.eos_token_id
    trained = _encode(KeepModel.model)
    torch.testing.assert_close(_encode(reloaded), trained, rtol=0, atol=1e-6)
    # Training changed the model, and only through the (merged) adapter: the embeddings moved.
    base = _encode(build_decoder_embedder(llama_dir, device="cpu", pooling="last_token", bidirectional=True))
    assert not torch.allclose(trained, base, atol=1e-4)


def test_lora_kept_as_an_adapter_reloads_plainly(tmp_path, llama_dir):
    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(llama_dir), "pooling": "mean",
                                                "lora": {"r": 4, "merge": False}}))
    result = train(recipe, callbacks=[KeepModel()])
    final = result.final_dir
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    reloaded = SentenceTransformer(str(final), device="cpu")
    torch.testing.assert_close(_encode(reloaded), _encode(KeepModel.model), rtol=0, atol=1e-6)


def test_lora_recipe_on_an_encoder_saves_a_plain_checkpoint(tmp_path, tiny_model_dir):
    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(tiny_model_dir),
                                                "lora": {"r": 2, "target_modules": ["query", "value"]}}))
    result = train(recipe, callbacks=[KeepModel()])
    assert not (result.final_dir / "adapter_config.json").exists()
    reloaded = SentenceTransformer(str(result.final_dir), device="cpu")
    torch.testing.assert_close(_encode(reloaded), _encode(KeepModel.model), rtol=0, atol=1e-6)
    base = _encode(SentenceTransformer(str(tiny_model_dir), device="cpu"))
    assert not torch.allclose(_encode(reloaded), base, atol=1e-4)


def test_latent_attention_recipe_round_trips_through_embedtrain_loading(tmp_path, llama_dir):
    from embedtrain.models import load_model

    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(llama_dir), "pooling": "latent_attention",
                                                "latent_attention": {"num_latents": 8, "num_heads": 4},
                                                "lora": {"r": 2}}))
    result = train(recipe, callbacks=[KeepModel()])
    pooling = KeepModel.model[1]
    assert pooling.o_proj.weight.abs().sum() > 0  # the pooling trained (it starts at zero: mean pooling)
    reloaded = load_model(result.final_dir, device="cpu")  # embedtrain's own class: no trust_remote_code
    torch.testing.assert_close(_encode(reloaded), _encode(KeepModel.model), rtol=0, atol=1e-6)
    from embedtrain.hub.card import build_card

    card = build_card(result.final_dir, "me/latent", results=[])  # the model card says how to load it
    assert "LatentAttentionPooling" in card and 'SentenceTransformer("me/latent", trust_remote_code=True)' in card


def test_resuming_a_lora_run_continues_where_it_stopped(tmp_path, llama_dir):
    """2 steps + --resume to 4 steps == 4 steps at once (the checkpoint's adapter loads back into the model)."""
    model = {"name_or_path": str(llama_dir), "pooling": "last_token", "bidirectional": True,
             "lora": {"r": 4, "dropout": 0.0}}
    training = {"per_device_train_batch_size": 4, "save_steps": 2, "learning_rate": 5e-3,
                "lr_scheduler_type": "constant", "warmup_steps": 0}  # the same schedule in both runs
    (tmp_path / "a").mkdir()
    straight = _recipe(tmp_path / "a", model, training={**training, "max_steps": 4})
    expected = _encode(SentenceTransformer(str(train(_load(tmp_path / "a", straight)).final_dir), device="cpu"))
    (tmp_path / "b").mkdir()
    first = _recipe(tmp_path / "b", model, training={**training, "max_steps": 2})
    train(_load(tmp_path / "b", first))
    first["training"]["max_steps"] = 4
    result = train(_load(tmp_path / "b", first), resume=True)
    assert result.resumed_from is not None and result.resumed_from.name == "checkpoint-2"
    assert json.loads((result.final_dir / "config.json").read_text())["is_causal"] is False
    torch.testing.assert_close(_encode(SentenceTransformer(str(result.final_dir), device="cpu")), expected,
                               rtol=1e-4, atol=1e-5)


# -- GradCache and the Matryoshka family with a decoder --------------------------------------------------------
@pytest.mark.parametrize("loss", [
    {"name": "cached_mnrl", "params": {"mini_batch_size": 2}},
    {"name": "matryoshka", "params": {"dims": [8, 16, 32]}, "inner": {"name": "cached_mnrl",
                                                                      "params": {"mini_batch_size": 2}}},
    {"name": "matryoshka2d", "params": {"layers": [1], "dims": [8, 16]}, "inner": {"name": "mnrl"}},
    {"name": "starbucks", "params": {"pairs": [[1, 8], [2, 32]]}, "inner": {"name": "mnrl"}},
], ids=lambda loss: loss["name"] + ("+" + loss["inner"]["name"] if "inner" in loss else ""))
def test_gradcache_and_matryoshka_losses_train_a_lora_decoder(tmp_path, llama_dir, loss):
    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(llama_dir), "pooling": "last_token",
                                                "bidirectional": True, "lora": {"r": 2}}, loss=loss,
                                     training={"per_device_train_batch_size": 8, "max_steps": 2,
                                               "learning_rate": 5e-3, "save_strategy": "no"}))
    result = train(recipe, callbacks=[KeepModel()])
    assert result.global_step == 2
    reloaded = SentenceTransformer(str(result.final_dir), device="cpu")
    torch.testing.assert_close(_encode(reloaded), _encode(KeepModel.model), rtol=0, atol=1e-6)


def test_cached_mnrl_on_a_decoder_matches_mnrl(tmp_path, llama_dir):
    """GradCache changes memory, not maths: one step of each from the same start gives the same model."""
    from embedtrain.models.decoder import build_decoder_embedder

    encodings = []
    for i, loss in enumerate(({"name": "mnrl"}, {"name": "cached_mnrl", "params": {"mini_batch_size": 2}})):
        folder = tmp_path / str(i)
        folder.mkdir()
        recipe = _load(folder, _recipe(folder, {"name_or_path": str(llama_dir), "pooling": "last_token",
                                                "bidirectional": True, "lora": {"r": 2, "dropout": 0.0}},
                                       loss=loss, training={"per_device_train_batch_size": 8, "max_steps": 1,
                                                            # SGD: the step is the gradient itself (Adam's
                                                            # first step is only its sign)
                                                            "optim": "sgd", "learning_rate": 0.5,
                                                            "warmup_steps": 0, "save_strategy": "no"},
                                       speed={"precision": "fp32"}))  # an exactness test: no bf16 rounding
        encodings.append(_encode(SentenceTransformer(str(train(recipe).final_dir), device="cpu")))
    base = _encode(build_decoder_embedder(llama_dir, device="cpu", pooling="last_token", bidirectional=True))
    assert not torch.allclose(encodings[0], base, atol=1e-3)  # the step moved the model
    torch.testing.assert_close(encodings[1], encodings[0], rtol=1e-4, atol=1e-5)


# -- instructions ----------------------------------------------------------------------------------------------
INSTRUCT = "Instruct: {instruction}\nQuery: "


def test_instructions_become_training_prompts_and_checkpoint_prompts(tmp_path, llama_dir):
    from embedtrain.train.runner import prepare

    recipe = _load(tmp_path, _recipe(
        tmp_path, {"name_or_path": str(llama_dir), "pooling": "last_token"},
        datasets=[{"name": "qa", "path": "pairs.jsonl", "format": "pairs", "instruction": "Find the place"},
                  {"name": "sts", "path": "scored.jsonl", "format": "scored_pairs",
                   "instruction": "Retrieve similar text", "symmetric": True, "loss": {"name": "cosent"}}],
        instructions={"task_types": {"STS": "Retrieve similar text"}},
        training={"per_device_train_batch_size": 4, "max_steps": 2, "save_strategy": "no"}))
    mode = prepare(recipe)
    prompts = {p.config.name: p.prompts for p in mode.prepared}
    assert prompts["qa"] == {"anchor": INSTRUCT.format(instruction="Find the place")}  # the passage side: none
    sts_prompt = INSTRUCT.format(instruction="Retrieve similar text")
    assert prompts["sts"] == {"sentence1": sts_prompt, "sentence2": sts_prompt}

    result = train(recipe)
    saved = SentenceTransformer(str(result.final_dir), device="cpu").prompts
    assert saved["STS"] == sts_prompt and saved["qa-query"] == INSTRUCT.format(instruction="Find the place")
    assert saved["Retrieval-query"].startswith("Instruct: Given a query") and saved["Retrieval-document"] == ""
    assert saved["sts-query"] == saved["sts-document"] == sts_prompt


def test_embedtrain_eval_uses_the_checkpoint_instruction_of_each_task_type(tmp_path, llama_dir, monkeypatch):
    from eval_helpers import write_task_config

    from embedtrain.api import evaluate
    from embedtrain.models.decoder import build_decoder_embedder
    from embedtrain.models.instructions import instruction_prompts
    from embedtrain.schema import InstructionsConfig

    model = build_decoder_embedder(llama_dir, device="cpu", pooling="last_token")
    model.prompts = instruction_prompts(InstructionsConfig(task_types={"STS": "Judge similarity"}))
    model.save(str(tmp_path / "ckpt"))
    seen: list[tuple[int, str | None]] = []
    original = SentenceTransformer.encode

    def spy(self, inputs, *args, prompt=None, **kwargs):
        seen.append((len(inputs), prompt))
        return original(self, inputs, *args, prompt=prompt, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", spy)
    config = write_task_config(tmp_path / "tasks")
    evaluate(tmp_path / "ckpt", tasks=["TinySTS", "TinyRetrieval"], task_configs=[config],
             output=tmp_path / "eval", show_progress=False)
    prompts = {prompt for _, prompt in seen}
    assert "Instruct: Judge similarity\nQuery: " in prompts  # TinySTS: the STS instruction on both sides
    retrieval_query = INSTRUCT.format(instruction="Given a query, retrieve relevant passages that answer the query")
    assert retrieval_query in prompts and "" in prompts  # retrieval: queries instructed, documents not
    assert None not in prompts


# -- located errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "extra", "field", "message"), [
    ({"lora": {"quantization": "4bit"}}, {}, "model.lora.quantization", "QLoRA"),
    ({"gradient_checkpointing": True}, {"training": {"gradient_checkpointing": True}},
     "training.gradient_checkpointing", "gradient checkpointing is set twice"),
    ({"pooling": "latent_attention", "latent_attention": {"num_heads": 5}}, {}, "model.latent_attention.num_heads",
     "must divide the model width 32"),
    ({"pooling": "mean", "latent_attention": {"num_heads": 4}}, {}, "model.latent_attention",
     "pooling is not 'latent_attention'"),
    ({"bidirectional": True, "lora": {"merge": False}}, {}, "model.lora.merge", "bidirectional"),
    ({"pooling": "last_token"}, {"datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs",
                                              "instruction": "x", "query_prompt": "q: "}]},
     "datasets[0].instruction", "not both"),
], ids=["qlora", "checkpointing-twice", "latent-heads", "latent-without-pooling", "adapter-bidirectional",
        "instruction-and-prompt"])
def test_option_errors_are_one_located_line(tmp_path, llama_dir, model, extra, field, message):
    if "quantization" in model.get("lora", {}) and torch.cuda.is_available():
        pytest.skip("checks the refusal on a machine without a GPU")
    recipe = _recipe(tmp_path, {"name_or_path": str(llama_dir), **model})
    recipe.update(extra)
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    with pytest.raises(EmbedtrainError) as info:
        validate(path)
    text = str(info.value)
    assert "\n" not in text and message in text
    assert text.startswith(f"{path}:") and f"field '{field}'" in text


def test_options_a_stage_cannot_apply_are_refused(tmp_path, llama_dir):
    write_rows(tmp_path / "pairs.jsonl", pair_rows())
    tasks = {"model": {"name_or_path": str(llama_dir), "lora": {"r": 2}}, "output_dir": str(tmp_path / "o"),
             "loss": {"name": "mnrl"},
             "tasks": [{"name": "t", "datasets": [{"name": "d", "path": "pairs.jsonl", "format": "pairs"}]}]}
    with pytest.raises(EmbedtrainError, match=r"field 'model.lora'.*tasks recipe cannot apply model.lora"):
        load_recipe(write_recipe(tmp_path / "tasks.yaml", tasks))
    write_rows(tmp_path / "text.jsonl", [{"text": "a cat"}])
    smae = {"stage": "smae", "model": {"name_or_path": str(llama_dir), "pooling": "mean"},
            "datasets": [{"name": "t", "path": "text.jsonl"}], "output_dir": str(tmp_path / "s")}
    with pytest.raises(EmbedtrainError, match=r"field 'model.pooling'.*smae recipe cannot apply model.pooling"):
        load_recipe(write_recipe(tmp_path / "smae.yaml", smae))


def test_a_tasks_recipe_applies_the_decoder_options_to_its_base(tmp_path, llama_dir):
    from embedtrain.models import load_model

    write_rows(tmp_path / "pairs.jsonl", pair_rows())
    recipe = {"model": {"name_or_path": str(llama_dir), "max_seq_length": 32, "pooling": "last_token",
                        "bidirectional": True},
              "tasks": [{"name": "retrieval", "lora": {"r": 2},
                         "datasets": [{"name": "d", "path": "pairs.jsonl", "format": "pairs"}]}],
              "loss": {"name": "mnrl"}, "output_dir": str(tmp_path / "out"),
              "training": {"per_device_train_batch_size": 8, "max_steps": 1, "save_strategy": "no"}}
    result = train(load_recipe(write_recipe(tmp_path / "tasks.yaml", recipe)))
    assert json.loads((result.final_dir / "config.json").read_text())["is_causal"] is False
    model = load_model(result.final_dir, device="cpu")
    assert model.tokenizer("a dog")["input_ids"][-1] == model.tokenizer.eos_token_id
    assert _encode(model).shape == (len(TEXTS), 32)


def test_explicit_recipe_prompts_win_over_instruction_defaults(tmp_path, llama_dir):
    from embedtrain.train.prepare import checkpoint_prompts

    recipe = _load(tmp_path, _recipe(tmp_path, {"name_or_path": str(llama_dir)},
                                     instructions={"use_defaults": False, "task_types": {"Retrieval": "Find it"}},
                                     prompts={"query": "q: "}))
    prompts = checkpoint_prompts(recipe)
    assert prompts["query"] == "q: " and prompts["document"] == ""
    assert prompts["Retrieval-query"] == INSTRUCT.format(instruction="Find it") and "STS" not in prompts


@pytest.mark.slow
def test_lora_decoder_recipe_under_a_two_process_launch(tmp_path, llama_dir, repo_root):
    """DDP with a LoRA adapter, bidirectional attention and GradCache: one merged, reloadable final model."""
    import os
    import subprocess
    import sys

    recipe = _recipe(tmp_path, {"name_or_path": str(llama_dir), "pooling": "last_token", "bidirectional": True,
                                "lora": {"r": 2}},
                     loss={"name": "cached_mnrl", "params": {"mini_batch_size": 2, "gather_across_devices": True}},
                     training={"per_device_train_batch_size": 4, "max_steps": 2, "save_strategy": "no"})
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(repo_root / "recipes" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29541",
           "-m", "embedtrain", "train", str(path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = tmp_path / "out" / "final"
    assert not (final / "adapter_config.json").exists()
    assert json.loads((final / "config.json").read_text())["is_causal"] is False
    assert _encode(SentenceTransformer(str(final), device="cpu")).shape == (len(TEXTS), 32)
