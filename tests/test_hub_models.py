"""Hub model ids resolve through a local Hugging Face cache laid out as the hub writes it; no network is used."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import pair_rows, write_recipe, write_rows

from embedtrain.errors import CheckpointError
from embedtrain.models.hub_models import looks_like_hub_id
from embedtrain.models.resolve import load_model, resolve_model_path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_model(cache, repo_id, source_dir, commit=COMMIT, ref="main"):
    """Lay ``source_dir`` out as ``huggingface_hub`` caches a snapshot: models--org--name/{refs,snapshots}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source_dir, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model_dir):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache_model(cache, "testorg/tiny-embedder", tiny_model_dir)
    return cache


def test_hub_ids_are_told_from_paths():
    assert looks_like_hub_id("BAAI/bge-small-en-v1.5") and looks_like_hub_id("org/name@v1.0")
    for path in ("./org/name", "/abs/path", "~/models/x", "../x/y", "a/b/c", "all-MiniLM-L6-v2"):
        assert not looks_like_hub_id(path), path


def test_hub_id_resolves_to_the_cached_snapshot_and_loads(hub_cache):
    path = resolve_model_path("testorg/tiny-embedder")
    assert path == hub_cache / "models--testorg--tiny-embedder" / "snapshots" / COMMIT
    assert resolve_model_path(f"testorg/tiny-embedder@{COMMIT}") == path  # a pinned revision
    model = load_model("testorg/tiny-embedder", device="cpu")
    assert model.encode(["a sentence"]).shape == (1, 32)
    assert resolve_model_path("all-MiniLM-L6-v2").is_dir()  # packaged names keep working


def test_local_folder_wins_over_a_hub_id(hub_cache, tmp_path, tiny_model_dir, monkeypatch):
    local = tmp_path / "testorg" / "tiny-embedder"
    shutil.copytree(tiny_model_dir, local)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("testorg/tiny-embedder") == local.resolve()


def test_missing_model_offline_is_one_line(hub_cache):
    with pytest.raises(CheckpointError) as info:
        resolve_model_path("BAAI/bge-small-en-v1.5", field="model.name_or_path")
    message = str(info.value)
    assert "\n" not in message and "HF_HUB_OFFLINE=1" in message and "not in the Hugging Face cache" in message
    assert "BAAI/bge-small-en-v1.5" in message and info.value.field == "model.name_or_path"


def test_missing_model_without_network_is_one_line(hub_cache, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    calls = []

    def no_network(repo_id, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        if kwargs.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(CheckpointError) as info:
        resolve_model_path("BAAI/bge-small-en-v1.5")
    assert calls == [True, False]  # the cache first, then a download attempt
    assert "\n" not in str(info.value) and "cannot be downloaded" in str(info.value)


def test_recipe_guide_and_cross_encoder_take_hub_ids(hub_cache, tmp_path, tiny_model_dir):
    from sentence_transformers import CrossEncoder

    from embedtrain.api import validate
    from embedtrain.mining.rescore import load_cross_encoder

    write_rows(tmp_path / "pairs.jsonl", pair_rows(8))
    recipe = write_recipe(tmp_path / "r.yaml", {
        "model": {"name_or_path": "testorg/tiny-embedder"},
        "datasets": [{"name": "p", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "gist", "params": {"guide": "testorg/tiny-embedder"}},
        "output_dir": str(tmp_path / "out")})
    report = validate(recipe)
    assert "8 rows" in report.lines[0]

    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    ce_dir = tmp_path / "ce"
    tok = AutoTokenizer.from_pretrained(str(resolve_model_path("all-MiniLM-L6-v2")))
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32, num_labels=1)
                                  ).save_pretrained(ce_dir)
    tok.save_pretrained(ce_dir)
    CrossEncoder(str(ce_dir), num_labels=1, device="cpu").save(str(ce_dir))
    _cache_model(hub_cache, "testorg/tiny-reranker", ce_dir)
    assert load_cross_encoder("testorg/tiny-reranker").predict([("a", "b")]).shape == (1,)


def test_remote_code_guard_applies_to_hub_snapshots(hub_cache, tiny_model_dir, tmp_path):
    code_dir = tmp_path / "with-code"
    shutil.copytree(tiny_model_dir, code_dir)
    config = json.loads((code_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (code_dir / "config.json").write_text(json.dumps(config))
    _cache_model(hub_cache, "testorg/needs-code", code_dir)
    with pytest.raises(CheckpointError, match="asks to run its own Python code"):
        load_model("testorg/needs-code", device="cpu")
