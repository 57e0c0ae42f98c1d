"""``embedtrain export``: smaller standalone checkpoints with identical embeddings; speed report; errors."""

from __future__ import annotations

import json

import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedtrain.cli.app import run_app
from embedtrain.errors import CheckpointError
from embedtrain.export import export_small_model, load_speed_sentences, measure_encode_speed
from embedtrain.models.resolve import load_model
from embedtrain.models.truncate import num_layers, truncated_copy

SENTENCES = ["a cat sits on the mat", "the stock market fell sharply today", "hello"]


@pytest.fixture(scope="module")
def tiny4(tiny_model_factory):
    return tiny_model_factory(num_layers=4, hidden_size=32, normalize=True)


def test_export_round_trip_gives_identical_embeddings(tmp_path, tiny4):
    result = export_small_model(tiny4, tmp_path / "small", layers=2, dim=16)
    exported = SentenceTransformer(str(tmp_path / "small"), device="cpu")  # plain ST, no embedtrain code
    assert num_layers(exported) == 2 and exported[0].auto_model.config.num_hidden_layers == 2
    assert exported.get_embedding_dimension() == 16
    in_memory = truncated_copy(load_model(tiny4), layers=2, dim=16)
    got = exported.encode(SENTENCES, convert_to_tensor=True)
    assert got.shape == (3, 16)
    torch.testing.assert_close(got, in_memory.encode(SENTENCES, convert_to_tensor=True), rtol=0, atol=0)
    assert result.params_exported < result.params_full and (result.full_layers, result.full_dim) == (4, 32)
    info = json.loads((tmp_path / "small" / "embedtrain_export.json").read_text())
    assert info["layers"] == 2 and info["dim"] == 16
    assert not (tmp_path / "small.tmp").exists()


def test_export_defaults_keep_full_size(tmp_path, tiny4):
    result = export_small_model(tiny4, tmp_path / "same", dim=8)
    assert result.layers == 4 and result.dim == 8


@pytest.mark.parametrize(("kwargs", "message", "field"), [
    ({"layers": 5}, "--layers 5 is outside 1..4", "--layers"),
    ({"layers": 0}, "--layers 0 is outside", "--layers"),
    ({"dim": 64}, "--dim 64 is outside 1..32", "--dim"),
])
def test_export_rejects_sizes_the_model_does_not_have(tmp_path, tiny4, kwargs, message, field):
    with pytest.raises(CheckpointError, match=message) as info:
        export_small_model(tiny4, tmp_path / "bad", **kwargs)
    assert info.value.field == field and not (tmp_path / "bad").exists()


def test_export_refuses_to_overwrite_without_flag(tmp_path, tiny4):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("keep")
    with pytest.raises(CheckpointError, match="--overwrite"):
        export_small_model(tiny4, tmp_path / "busy", layers=2)
    export_small_model(tiny4, tmp_path / "busy", layers=2, overwrite=True)
    assert not (tmp_path / "busy" / "x.txt").exists()


def test_export_cli_prints_sizes_and_speed(tmp_path, tiny4, write_jsonl, capsys):
    sentences = write_jsonl([{"sentence1": s, "sentence2": s + " too"} for s in SENTENCES * 4], "s.jsonl")
    run_app(["export", str(tiny4), "--layers", "1", "--dim", "8", str(tmp_path / "cli"), "--sentences",
             str(sentences), "--num-sentences", "12", "--batch-size", "4"])
    printed = capsys.readouterr().out
    assert "encode sentences/s" in printed and "exported model" in printed
    assert SentenceTransformer(str(tmp_path / "cli"), device="cpu").encode(["x"]).shape == (1, 8)
    with pytest.raises(SystemExit) as info:
        run_app(["export", str(tiny4), "--layers", "9", str(tmp_path / "cli2"), "--no-speed"])
    assert info.value.code == 2


def test_speed_helpers(tiny4, write_jsonl):
    path = write_jsonl([{"text": f"sentence {i}"} for i in range(10)] + [{"text": "sentence 1"}], "t.jsonl")
    texts = load_speed_sentences(path, limit=100)
    assert len(texts) == 10  # duplicates dropped
    speed = measure_encode_speed(load_model(tiny4), texts, batch_size=4, repeats=1)
    assert speed.sentences_per_second > 0 and speed.num_sentences == 10
    with pytest.raises(ValueError):
        measure_encode_speed(load_model(tiny4), [])


def test_export_warns_when_the_model_was_not_trained_to_be_cut(tmp_path, tiny4):
    import shutil

    import yaml

    plain = shutil.copytree(tiny4, tmp_path / "plain")
    (plain / "embedtrain_recipe.yaml").write_text(yaml.safe_dump({"loss": {"name": "mnrl"}, "datasets": []}))
    result = export_small_model(plain, tmp_path / "cut", layers=2, dim=16)
    assert "was not trained to be cut" in result.warning and "no Matryoshka-family loss" in result.warning
    assert export_small_model(plain, tmp_path / "full").warning is None  # nothing cut, nothing to warn about
    starbucks = shutil.copytree(tiny4, tmp_path / "sb")
    (starbucks / "embedtrain_recipe.yaml").write_text(yaml.safe_dump(
        {"loss": {"name": "starbucks", "inner": {"name": "mnrl"}}, "datasets": []}))
    assert export_small_model(starbucks, tmp_path / "sb_cut", layers=2).warning is None
    assert "no embedtrain recipe" in export_small_model(tiny4, tmp_path / "packaged", dim=16).warning
