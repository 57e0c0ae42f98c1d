"""Task adapters default to jina-embeddings-v3's LoRA: rank 4, alpha 1, no dropout, every linear layer and
every embedding matrix. Embedding LoRA goes through the whole task-adapter path: training, save/load,
export (merge) and soups."""

from __future__ import annotations

import numpy as np
import torch
from helpers import pair_rows, write_recipe, write_rows
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from torch import nn

from embedtrain.adapters.checkpoint import attach_tasks
from embedtrain.adapters.export import export_task
from embedtrain.api import train
from embedtrain.models import load_model
from embedtrain.schema import load_recipe
from embedtrain.schema.tasks import LoraSpec, TaskConfig

TEXTS = ["a cat sits on the mat", "the weather is lovely today", "stock prices fell sharply"]


def test_default_lora_is_jina_v3s_on_every_linear_and_embedding_module(tiny_model_dir):
    spec = LoraSpec()
    assert (spec.r, spec.alpha, spec.dropout, spec.target_modules) == (4, 1.0, 0.0, None)
    model = load_model(tiny_model_dir, device="cpu")
    wanted = {name for name, mod in model[0].auto_model.named_modules()
              if isinstance(mod, (nn.Linear, nn.Embedding)) and "pooler" not in name}
    module = attach_tasks(model, [TaskConfig(name="a"), TaskConfig(name="b")])
    for adapter in ("a", "b"):
        adapted = {name for name, mod in module.model.named_modules()
                   if adapter in (getattr(mod, "lora_A", None) or {}) or
                   adapter in (getattr(mod, "lora_embedding_A", None) or {})}
        assert adapted == wanted, adapter  # every linear layer and embedding matrix, not the pooler
        config = module.model.peft_config[adapter]
        assert config.r == 4 and config.lora_alpha == 1 and config.lora_dropout == 0.0
    assert {"embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings",
            "encoder.layer.0.attention.self.query", "encoder.layer.1.output.dense"} <= wanted


def test_embedding_lora_trains_saves_loads_and_exports(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(24))
    recipe = load_recipe(write_recipe(tmp_path / "recipe.yaml", {
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": [{"name": "retrieval", "datasets": [{"name": "qa", "path": "pairs.jsonl", "format": "pairs"}],
                   "loss": {"name": "mnrl"}}, {"name": "other"}],
        "training": {"per_device_train_batch_size": 8, "max_steps": 3, "logging_steps": 1, "learning_rate": 5e-2,
                     "save_steps": 3, "report_to": "none"},
        "output_dir": str(tmp_path / "out"), "seed": 1,
    }))
    final = train(recipe).final_dir
    weights = load_file(str(final / "adapters" / "retrieval" / "adapter_model.safetensors"))
    emb = {k: v for k, v in weights.items() if "lora_embedding" in k}
    assert emb and any("word_embeddings" in k for k in emb)
    # peft starts embedding LoRA with A = 0: a non-zero A means the embedding adapter trained
    assert any(float(v.abs().sum()) > 0 for k, v in emb.items() if "lora_embedding_A" in k)
    model = load_model(final, device="cpu")
    again = load_model(final, device="cpu")
    np.testing.assert_array_equal(model.encode(TEXTS, task="retrieval"), again.encode(TEXTS, task="retrieval"))
    assert not np.allclose(model.encode(TEXTS, task="retrieval"), model.encode(TEXTS))
    out = export_task(final, "retrieval", tmp_path / "export")
    plain = SentenceTransformer(str(out), local_files_only=True)
    np.testing.assert_allclose(plain.encode(TEXTS), model.encode(TEXTS, task="retrieval"), atol=1e-5)


def test_soup_of_embedding_lora_adapters_is_exact(tmp_path, tiny_model_dir):
    from embedtrain.soup import make_soup

    paths = []
    for seed in (0, 1):
        model = load_model(tiny_model_dir, device="cpu")
        module = attach_tasks(model, [TaskConfig(name="t")])
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in module.model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        path = tmp_path / f"m{seed}"
        model.save(str(path))
        paths.append(path)
    make_soup(paths, tmp_path / "soup", method="uniform")
    soup = load_model(tmp_path / "soup", device="cpu")
    merged = [SentenceTransformer(str(export_task(p, "t", tmp_path / f"x{i}")), local_files_only=True)
              for i, p in enumerate(paths)]
    # the soup's adapter is the exact mean of the two adapters' weight deltas, embeddings included
    expected = {}
    for name, w in merged[0][0].auto_model.state_dict().items():
        expected[name] = (w + merged[1][0].auto_model.state_dict()[name]) / 2
    soup_plain = SentenceTransformer(str(export_task(tmp_path / "soup", "t", tmp_path / "xs")), local_files_only=True)
    for name, w in soup_plain[0].auto_model.state_dict().items():
        torch.testing.assert_close(w, expected[name], rtol=1e-5, atol=1e-6)
    assert soup.encode(TEXTS, task="t").shape == (3, 32)
