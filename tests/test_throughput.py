"""Throughput settings: precision choice, bucketing inside batches, length-sorted GradCache batches, the benchmark.

Speed itself is measured by examples/throughput_benchmark.py (docs/throughput.md), never here: these tests
check that the fast paths compute the same thing as the plain ones and leave batches as the sampler made them.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from embedtrain.errors import RecipeError
from embedtrain.models.precision import Precision, choose_precision, cpu_bf16
from embedtrain.train.bucketing import bucketed_forward, install, plan_chunks, uninstall


# -- precision --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("flags", "machine", "native"), [
    ({"avx2", "avx512f", "avx512_bf16"}, "x86_64", True),
    ({"avx512f", "amx_tile", "amx_bf16"}, "x86_64", True),
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", False),   # Skylake/Cascade Lake: bf16 only emulated
    ({"avx2", "fma"}, "x86_64", False),
    ({"fp", "asimd", "sve", "bf16"}, "aarch64", True),       # Graviton 3
    ({"fp", "asimd"}, "aarch64", False),
    (set(), "riscv64", False),
])
def test_cpu_bf16_is_native_bf16_only(flags, machine, native):
    ok, why = cpu_bf16(frozenset(flags), machine)
    assert ok is native and why


def test_choose_precision_explicit_request_wins(monkeypatch):
    import embedtrain.models.precision as precision

    monkeypatch.setattr(precision, "hardware_bf16", lambda device_type: (False, "no bf16 here"))
    assert choose_precision("auto", "cpu") == Precision("fp32", "cpu", "no bf16 here")
    assert choose_precision("bf16", "cpu").name == "bf16"
    monkeypatch.setattr(precision, "hardware_bf16", lambda device_type: (True, "native"))
    auto = choose_precision("auto", "cuda:1")
    assert (auto.name, auto.device_type, auto.autocast) == ("bf16", "cuda", True)
    assert choose_precision("fp32", "cpu").autocast is False
    assert not choose_precision("auto", "mps").autocast or precision.hardware_bf16("mps")[0]


def _recipe(tmp_path, training=None, speed=None, model="all-MiniLM-L6-v2"):
    from embedtrain.schema import load_recipe

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"anchor": f"q {i}", "positive": f"p {i}"}) + "\n" for i in range(8)))
    recipe = {"model": {"name_or_path": model}, "datasets": [{"name": "d", "path": str(data), "format": "pairs"}],
              "loss": {"name": "mnrl"}, "training": training or {}, "output_dir": str(tmp_path / "out")}
    if speed is not None:
        recipe["speed"] = speed
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return load_recipe(path)


def test_recipe_precision_auto_follows_the_hardware_and_training_bf16_wins(tmp_path, monkeypatch):
    import embedtrain.models.precision as precision
    from embedtrain.train.throughput import describe_speed, precision_arguments, run_precision

    monkeypatch.setattr(precision, "hardware_bf16", lambda device_type: (True, "CPU has AVX512-BF16"))
    assert precision_arguments(_recipe(tmp_path)) == {"bf16": True, "use_cpu": True} or \
        precision.device_type_of(None) != "cpu"
    assert "precision bf16 (CPU has AVX512-BF16)" in describe_speed(_recipe(tmp_path, training={"use_cpu": True}))
    assert precision_arguments(_recipe(tmp_path, training={"bf16": False})) == {}   # the recipe decides
    assert run_precision(_recipe(tmp_path, training={"bf16": False})).name == "fp32"
    assert precision_arguments(_recipe(tmp_path, training={"use_cpu": True}, speed={"precision": "fp32"})) == \
        {"bf16": False}
    monkeypatch.setattr(precision, "hardware_bf16", lambda device_type: (False, "no AVX512-BF16/AMX"))
    assert precision_arguments(_recipe(tmp_path, training={"use_cpu": True})) == {"bf16": False}
    assert precision_arguments(_recipe(tmp_path, training={"fp16": True})) == {}


def test_conflicting_precision_settings_are_a_located_error(tmp_path):
    with pytest.raises(RecipeError, match="speed.precision is fp32 but training.bf16") as err:
        _recipe(tmp_path, training={"bf16": True}, speed={"precision": "fp32"})
    assert err.value.field == "speed.precision" and err.value.line is not None
    with pytest.raises(RecipeError, match="bucketing"):
        _recipe(tmp_path, speed={"bucketing": "sometimes"})


# -- bucketing -----------------------------------------------------------------------------------------------
def _cost(groups, overhead):
    return sum(len(g) * max(g) + overhead for g in groups)


@pytest.mark.parametrize("seed", range(5))
def test_plan_chunks_is_optimal_and_holds_every_row_once(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 40, size=9)
    for overhead in (0.0, 10.0, 60.0, 1e6):
        plan = plan_chunks(lengths, overhead)
        assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
        widths = [lengths[p].max() for p in plan]
        assert widths == sorted(widths, reverse=True)                        # longest chunk first
        ordered = sorted(lengths.tolist(), reverse=True)
        best = min(_cost([ordered[a:b] for a, b in zip((0, *cuts), (*cuts, len(ordered)))], overhead)
                   for k in range(len(ordered)) for cuts in itertools.combinations(range(1, len(ordered)), k))
        assert _cost([lengths[p].tolist() for p in plan], overhead) == pytest.approx(best)
    assert len(plan_chunks(lengths, 1e6)) == 1                               # a costly pass: never split
    assert len(plan_chunks(np.array([7, 7, 7]), 0.0)) == 1                    # equal lengths: one chunk


def _features(model, texts):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model.preprocess(texts).items()}


TEXTS = ["a", "one two three four five six seven eight nine ten eleven twelve", "short one", "x y z " * 6, "b c",
         "medium length text here", "a b c d e f g"]


def test_bucketed_forward_gives_the_padded_forwards_embeddings(tiny_model_dir, one_thread):
    from embedtrain.models.resolve import load_model

    model = load_model(tiny_model_dir, device="cpu")
    model.eval()
    with torch.no_grad():
        ref = model(_features(model, TEXTS))
        assert install(model, overhead_tokens=0)                       # every distinct length its own chunk
        assert not install(model, overhead_tokens=0)
        out = model(_features(model, TEXTS))
    mask = ref["attention_mask"].bool()
    assert torch.allclose(out["sentence_embedding"], ref["sentence_embedding"], atol=1e-5)
    assert out["token_embeddings"].shape == ref["token_embeddings"].shape
    assert torch.allclose(out["token_embeddings"][mask], ref["token_embeddings"][mask], atol=1e-5)
    assert torch.equal(out["input_ids"], ref["input_ids"])              # the inputs are left as they were
    uninstall(model)
    assert "forward" not in vars(model)


def test_bucketed_forward_leaves_left_padded_and_single_row_batches_alone():
    calls = []

    def forward(features):
        calls.append(features["input_ids"].shape)
        return {**features, "sentence_embedding": features["input_ids"].float()[:, :1]}

    run = bucketed_forward(forward, overhead_tokens=0)
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    run({"input_ids": left, "attention_mask": left})
    one = torch.tensor([[1, 1, 0]])
    run({"input_ids": one, "attention_mask": one})
    assert calls == [(3, 4), (1, 3)]
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    out = run({"input_ids": right * torch.arange(1, 4).unsqueeze(1), "attention_mask": right})
    assert calls[2:] == [(1, 4), (1, 2), (1, 1)]
    assert out["sentence_embedding"].flatten().tolist() == [1.0, 2.0, 3.0]  # rows back in their order


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, loss, columns, labels=None):
    model.zero_grad()
    value = loss([_features(model, c) for c in columns], labels)
    value.backward()
    return float(value.detach()), _grads(model)


def test_bucketing_and_length_sorted_gradcache_give_the_same_loss_and_gradients(tiny_model_dir, one_thread):
    from embedtrain.losses.cached_mnrl import CachedMultipleNegativesRankingLoss
    from embedtrain.losses.mnrl import MultipleNegativesRankingLoss
    from embedtrain.models.resolve import load_model
    from embedtrain.train.throughput import sort_rows_by_length

    model = load_model(tiny_model_dir, device="cpu")
    model.eval()  # no dropout: the two paths must agree to rounding
    anchors, positives = TEXTS, [t[::-1] + " extra words" * (i % 3) for i, t in enumerate(TEXTS)]
    for loss in (MultipleNegativesRankingLoss(model), CachedMultipleNegativesRankingLoss(model, mini_batch_size=2)):
        ref_loss, ref_grads = _loss_and_grads(model, loss, [anchors, positives])
        install(model, overhead_tokens=0)
        if getattr(loss, "uses_gradient_cache", False):
            assert sort_rows_by_length(loss) and not sort_rows_by_length(loss)
        fast_loss, fast_grads = _loss_and_grads(model, loss, [anchors, positives])
        uninstall(model)
        assert fast_loss == pytest.approx(ref_loss, rel=1e-5)
        assert ref_grads.keys() == fast_grads.keys()
        for name in ref_grads:
            assert torch.allclose(ref_grads[name], fast_grads[name], atol=1e-6, rtol=1e-4), name


def _train_batches(tmp_path, tiny_model_dir, speed, datasets=1):
    """Anchor texts of every batch the loss saw, per dataset, training with ``speed``."""
    from embedtrain.schema import load_recipe
    from embedtrain.train.runner import prepare

    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)]
    specs = []
    for d in range(datasets):
        path = tmp_path / f"d{d}.jsonl"
        rows = [{"anchor": f"d{d} r{i} " + " ".join(rng.choice(words, rng.integers(1, 20))),
                 "positive": f"p{d} r{i} " + " ".join(rng.choice(words, rng.integers(1, 20)))} for i in range(24)]
        rows[5]["positive"] = rows[3]["anchor"]  # a duplicate text the no-duplicates sampler must keep apart
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        specs.append({"name": f"d{d}", "path": str(path), "format": "pairs"})
    recipe = {"model": {"name_or_path": str(tiny_model_dir)}, "datasets": specs, "loss": {"name": "mnrl"},
              "multi_dataset_sampler": "round_robin", "speed": speed,
              "training": {"max_steps": 6, "per_device_train_batch_size": 6, "save_strategy": "no",
                           "report_to": "none", "use_cpu": True},
              "output_dir": str(tmp_path / "out")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    from sentence_transformers import SentenceTransformer

    batches, forwards = [], []
    inner = SentenceTransformer.forward

    def spy_forward(self, features, *args, **kwargs):  # what bucketing hands to the real forward
        forwards.append(features["attention_mask"].sum(dim=1).tolist())
        return inner(self, features, *args, **kwargs)

    SentenceTransformer.forward = spy_forward
    try:
        mode = prepare(load_recipe(tmp_path / "r.yaml"))
        trainer = mode.build_trainer(mode.training_args(), [], None)
        tokenizer = trainer.model.tokenizer
        for name, loss in trainer.loss.items():
            def spy(features, labels=None, _forward=loss.forward, _name=name):
                decoded = tokenizer.batch_decode(features[0]["input_ids"], skip_special_tokens=True)
                batches.append((_name, tuple(decoded)))
                return _forward(features, labels)
            loss.forward = spy
        trainer.train()
    finally:
        SentenceTransformer.forward = inner
    return batches, forwards


def test_bucketing_keeps_the_samplers_random_duplicate_free_batches(tmp_path, tiny_model_dir, one_thread):
    plain, plain_forwards = _train_batches(tmp_path / "a", tiny_model_dir, {"bucketing": False, "precision": "fp32"},
                                           datasets=2)
    fast, fast_forwards = _train_batches(tmp_path / "b", tiny_model_dir,
                                         {"bucketing": True, "bucket_overhead_tokens": 1, "precision": "fp32"},
                                         datasets=2)
    assert fast == plain                                  # the same rows in the same batches, batch after batch
    assert {name for name, _ in fast} == {"d0", "d1"}     # round-robin over both datasets, one per batch
    for name, anchors in fast:
        assert len(set(anchors)) == len(anchors) and all(a.startswith(name) for a in anchors)
    assert len(fast_forwards) > len(plain_forwards)       # ...but embedded in several length-sorted chunks
    chunked = [f for f in fast_forwards if len(set(f)) == 1]
    assert chunked and sum(map(len, fast_forwards)) == sum(map(len, plain_forwards))
    # batches are not sorted by length: their lengths spread as widely as the plain run's
    spread = [max(f) - min(f) for f in plain_forwards]
    assert max(spread) > 5


# -- the benchmark --------------------------------------------------------------------------------------------
def test_throughput_benchmark_quick_runs_and_prints_the_speedup_lines(repo_root, tmp_path):
    out = subprocess.run([sys.executable, str(repo_root / "examples" / "throughput_benchmark.py"), "--quick",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines[-4:]] == [["speedup", "short_pairs"], ["speedup", "query_passage"],
                                                         ["speedup", "gradcache"], ["speedup", "encode"]]
    assert all(float(line.split()[2]) > 0 for line in lines[-4:])
    assert any(line.startswith("mining_overhead mining_(reuse)") for line in lines)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"short_pairs", "query_passage", "gradcache", "mining", "encode"}
    assert results["short_pairs"]["configs"]["embedtrain"]["peak_mib"] > 0


def test_attention_dropout_override_touches_only_attention(tiny_model_dir):
    from embedtrain.models.resolve import load_model
    from embedtrain.schema import SpeedConfig
    from embedtrain.train.throughput import prepare_model

    model = load_model(tiny_model_dir, device="cpu")
    prepare_model(model, SpeedConfig(attention_dropout=0.0, bucketing=False))
    bert = model[0].auto_model
    assert all(layer.attention.self.dropout.p == 0.0 for layer in bert.encoder.layer)
    assert all(layer.output.dropout.p == 0.1 for layer in bert.encoder.layer)      # hidden dropout kept
    assert bert.config.attention_probs_dropout_prob == 0.0 and "forward" not in vars(model)


def test_gpu_paths_choose_native_bf16_and_rare_splits(monkeypatch):
    """The CUDA branches, exercised on a CPU-only machine with torch.cuda stubbed."""
    import embedtrain.models.precision as precision
    from embedtrain.train import bucketing

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake A100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert precision.hardware_bf16("cuda") == (True, "Fake A100 has native bf16")
    assert precision.device_type_of(None) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert precision.hardware_bf16("cuda")[0] is False           # V100/T4: only emulated -> fp32

    class Stub:
        device = torch.device("cuda")

        def __init__(self):
            self.forward = lambda features: features

        def __len__(self):
            return 0

    stub = Stub()
    assert bucketing.install(stub)
    lengths = np.array([200] + [10] * 63)                         # one long outlier in a short batch
    assert len(plan_chunks(lengths, bucketing.DEFAULT_OVERHEAD_TOKENS["cuda"])) == 1
    assert len(plan_chunks(lengths, bucketing.DEFAULT_OVERHEAD_TOKENS["cpu"])) == 2


# -- fast encoding ---------------------------------------------------------------------------------------------
def test_eval_precision_bf16_is_labelled_and_stored_apart(tmp_path, tiny_model_dir, one_thread, monkeypatch):
    """``--precision bf16``: scores close to fp32, under their own label and folder; fp32 stays the default."""
    import shutil

    from eval_helpers import ANIMALS, PLACES

    import embedtrain.models.precision as precision
    from embedtrain.errors import EmbedtrainError
    from embedtrain.evaluation.runner import evaluate_checkpoint

    rows = [(f"the {a} eats in the {PLACES[i % 6]}", f"the {b} sleeps", (i * 5) % 6)
            for i, (a, b) in enumerate(zip(ANIMALS, reversed(ANIMALS)))]
    (tmp_path / "pairs.csv").write_text("left,right,gold\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    (tmp_path / "t.yaml").write_text("tasks:\n  - name: MyPairs\n    type: sts\n    files: {test: pairs.csv}\n"
                                     "    columns: {sentence1: left, sentence2: right, score: gold}\n")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    kwargs = {"tasks": ["MyPairs"], "task_configs": [tmp_path / "t.yaml"], "show_progress": False}
    exact = evaluate_checkpoint(model_dir, **kwargs)
    fast = evaluate_checkpoint(model_dir, precision="bf16", **kwargs)
    assert exact.output_dir == model_dir / "eval" and fast.output_dir == model_dir / "eval-bf16"
    assert fast.summary.label == exact.summary.label + "-bf16"
    assert fast.summary.scores["MyPairs"].value == pytest.approx(exact.summary.scores["MyPairs"].value, abs=3.0)
    monkeypatch.setattr(precision, "hardware_bf16", lambda device_type: (False, "none"))
    assert evaluate_checkpoint(model_dir, precision="auto", **kwargs).output_dir == model_dir / "eval"
    with pytest.raises(EmbedtrainError, match="grids"):
        evaluate_checkpoint(model_dir, precision="bf16", dims=[16], **kwargs)


def test_encode_texts_in_bf16_returns_float32_unit_vectors(tiny_model_dir, one_thread):
    from embedtrain.mining.search import encode_texts
    from embedtrain.models.resolve import load_model

    model = load_model(tiny_model_dir, device="cpu")
    exact = encode_texts(model, TEXTS, kind="plain")
    fast = encode_texts(model, TEXTS, kind="plain", precision=Precision("bf16", "cpu", "test"))
    assert fast.dtype == np.float32 and np.allclose(np.linalg.norm(fast, axis=1), 1, atol=1e-3)
    assert (fast * exact).sum(1).min() > 0.98 and not np.array_equal(fast, exact)


def test_offline_mining_in_bf16_is_opt_in_close_to_fp32_and_cached_apart(tiny_model_dir, write_jsonl, tmp_path,
                                                                          one_thread):
    """``embedtrain mine --precision bf16``: fp32 stays the default; bf16 scores stay close to the exact ones;
    the two precisions never share cached embeddings."""
    from embedtrain.mining.offline import mine
    from embedtrain.schema.mining import OfflineMiningConfig

    words = "red blue green black white brown pink gray gold silver orange purple".split()
    pairs = write_jsonl([{"anchor": f"the {w} car", "positive": f"a {w} vehicle"} for w in words[:6]], "p.jsonl")
    corpus = write_jsonl([{"text": f"some {w} thing {i}"} for w in words for i in range(3)], "c.jsonl")

    def cfg(**kw):
        return OfflineMiningConfig(model=str(tiny_model_dir), input=str(pairs), corpus=str(corpus), device="cpu",
                                   output=str(tmp_path / "mined.jsonl"), num_negatives=3, range_max=30,
                                   embeddings_dir=str(tmp_path / "emb"), **kw)

    assert cfg().precision == "fp32"
    exact, fast, again = mine(cfg()), mine(cfg(precision="bf16")), mine(cfg())
    assert not exact.stats.embeddings_reused and not fast.stats.embeddings_reused and again.stats.embeddings_reused
    assert len(exact.rows) == len(fast.rows) == 6
    for e, f in zip(exact.rows, fast.rows):
        assert f["positive_score"] == pytest.approx(e["positive_score"], abs=0.02)
        assert [n["score"] for n in f["negatives"]] != [n["score"] for n in e["negatives"]] or \
            f["positive_score"] != e["positive_score"]   # bf16 really ran
        assert f["negatives"][0]["score"] == pytest.approx(e["negatives"][0]["score"], abs=0.02)


# -- attention recomputation (memory) -------------------------------------------------------------------------
def _saved_bytes_and_grads(model, features, seed: int = 3) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes the forward pass keeps for the backward pass (saved-tensor hooks), and the gradients."""
    saved: dict[int, int] = {}

    def pack(t):
        if t.is_floating_point():  # one count per storage (several saved views may share one)
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks for both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(dict(features))["sentence_embedding"]
    out.pow(2).sum().backward()
    return sum(saved.values()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_recomputed_attention_keeps_less_for_backward_and_gives_the_same_gradients(tiny_model_dir, one_thread):
    from embedtrain.models import attention
    from embedtrain.models.resolve import load_model

    model = load_model(tiny_model_dir, device="cpu")
    bert = model[0].auto_model
    assert bert.config._attn_implementation == "sdpa" and bert.config.attention_probs_dropout_prob > 0
    model.train()
    features = model.preprocess([" ".join(f"word{i * 7 + j}" for j in range(10 + 5 * i)) for i in range(6)])
    plain_bytes, plain_grads = _saved_bytes_and_grads(model, features)

    assert attention.install(model)
    assert bert.config._attn_implementation == attention.NAME
    recomputed_bytes, grads = _saved_bytes_and_grads(model, features)
    assert grads.keys() == plain_grads.keys()
    for name in grads:  # the same dropout mask in the recomputation: the same gradients, to the bit
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=0, atol=0, msg=name)
    # per layer the scores, the softmax, the dropped probabilities (and the mask) are no longer kept
    batch, width = features["input_ids"].shape
    heads, layers = bert.config.num_attention_heads, bert.config.num_hidden_layers
    attention_matrix = batch * heads * width * width * 4
    assert plain_bytes - recomputed_bytes >= 2 * layers * attention_matrix, (plain_bytes, recomputed_bytes)

    model.eval()  # inference is plain sdpa: the same embeddings either way
    with torch.no_grad():
        recomputed_eval = model(dict(features))["sentence_embedding"]
    assert attention.uninstall(model) and bert.config._attn_implementation == "sdpa"
    assert not attention.uninstall(model)
    with torch.no_grad():
        torch.testing.assert_close(model(dict(features))["sentence_embedding"], recomputed_eval, rtol=0, atol=0)


def test_recompute_attention_setting_trains_and_saves_a_plain_sdpa_model(tmp_path, tiny_model_dir, write_jsonl,
                                                                         one_thread, caplog):
    from embedtrain.api import train
    from embedtrain.models import attention

    rows = [{"anchor": f"question {i} about topic {i % 7}", "positive": f"answer {i} on topic {i % 7}"}
            for i in range(32)]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir)},
        "datasets": [{"name": "pairs", "path": str(write_jsonl(rows)), "format": "pairs"}],
        "loss": {"name": "mnrl"}, "speed": {"recompute_attention": True},
        "training": {"per_device_train_batch_size": 8, "max_steps": 2, "save_steps": 1000},
        "output_dir": str(tmp_path / "out")}), encoding="utf-8")
    with caplog.at_level("INFO", logger="embedtrain.train.throughput"):
        result = train(str(recipe))
    assert "recomputed in the backward pass" in caplog.text
    config = json.loads((result.final_dir / "config.json").read_text())
    assert attention.NAME not in json.dumps(config)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(result.final_dir), device="cpu")[0].auto_model.config._attn_implementation == "sdpa"


def test_recompute_attention_leaves_models_without_sdpa_alone(tiny_model_factory):
    from embedtrain.models import attention
    from embedtrain.models.resolve import load_model

    model = load_model(tiny_model_factory(), device="cpu")
    model[0].auto_model.config._attn_implementation = "eager"
    assert not attention.install(model) and model[0].auto_model.config._attn_implementation == "eager"


def test_recompute_attention_is_skipped_under_gradient_checkpointing(tiny_model_dir):
    """Whole layers are recomputed already: recomputing the attention core inside them would be done twice."""
    from embedtrain.models.resolve import load_model
    from embedtrain.schema import SpeedConfig
    from embedtrain.train.throughput import prepare_model, restore_model

    model = load_model(tiny_model_dir, device="cpu")
    prepare_model(model, SpeedConfig(recompute_attention=True, bucketing=False), gradient_checkpointing=True)
    assert model[0].auto_model.config._attn_implementation == "sdpa"
    prepare_model(model, SpeedConfig(recompute_attention=True, bucketing=False))
    assert model[0].auto_model.config._attn_implementation != "sdpa"
    restore_model(model)
    assert model[0].auto_model.config._attn_implementation == "sdpa"
