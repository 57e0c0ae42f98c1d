"""Training end to end on a tiny random model: checkpoints, prompts, several datasets, batches, losses."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import pair_rows, scored_rows, write_recipe, write_rows
from sentence_transformers import SentenceTransformer

from embedtrain.api import train
from embedtrain.errors import CheckpointError, RecipeError
from embedtrain.losses import LOSSES, register_loss
from embedtrain.losses.mnrl import MultipleNegativesRankingLoss
from embedtrain.schema import load_recipe

RECORDED: list[dict] = []


class _Recording(torch.nn.Module):
    """Wraps a loss and records the token ids of every batch it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, features, labels):
        RECORDED.append({"n_columns": len(features),
                         "rows": [tuple(r.tolist()) for f in features for r in f["input_ids"]]})
        return self.inner(features, labels)


if "recording_mnrl" not in LOSSES:
    @register_loss("recording_mnrl", formats={"pairs", "triplets"}, description="test: records batches")
    def _recording_mnrl(model, ctx):
        return _Recording(MultipleNegativesRankingLoss(model))


def _recipe(tmp_path, model_dir, **extra):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(24))
    recipe = {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs",
                      "query_prompt": "query: ", "passage_prompt": "passage: "}],
        "loss": {"name": "mnrl", "params": {"temperature": 0.05}},
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "save_steps": 2,
                     "logging_steps": 1, "learning_rate": 1e-3},
        "output_dir": str(tmp_path / "out"),
        "seed": 1,
    }
    for key, value in extra.items():
        recipe[key] = value
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe))


def test_train_writes_loadable_checkpoint_with_prompts(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir)
    result = train(recipe)
    assert result.global_step == 3  # 24 rows / batch 8
    model = SentenceTransformer(str(result.final_dir), device="cpu")
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    assert model.prompts["pairs-query"] == "query: "
    saved = (result.final_dir / "embedtrain_recipe.yaml").read_text()
    assert "mnrl" in saved
    # The weights changed: training did something.
    before = SentenceTransformer(str(tiny_model_dir), device="cpu").encode(["hello"])
    assert not torch.allclose(torch.tensor(before), torch.tensor(model.encode(["hello"])))
    # encoding with the saved prompt name uses the prompt
    with_prompt = model.encode(["hello"], prompt_name="query")
    manual = model.encode(["query: hello"])
    assert torch.allclose(torch.tensor(with_prompt), torch.tensor(manual), atol=1e-5)


def test_several_datasets_one_dataset_per_batch_without_duplicates(tmp_path, tiny_model_dir):
    RECORDED.clear()
    rows = pair_rows(12) * 2  # every pair twice: a duplicate-free sampler must not batch both copies
    write_rows(tmp_path / "dups.jsonl", rows)
    write_rows(tmp_path / "trip.jsonl", [{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i}"}
                                         for i in range(16)])
    recipe = _recipe(tmp_path, tiny_model_dir,
                     datasets=[{"name": "dups", "path": "dups.jsonl", "format": "pairs"},
                               {"name": "trip", "path": "trip.jsonl", "format": "triplets"}],
                     loss={"name": "recording_mnrl"})
    train(recipe)
    assert {b["n_columns"] for b in RECORDED} == {2, 3}
    for batch in RECORDED:
        assert len(batch["rows"]) % batch["n_columns"] == 0  # all columns of one dataset: no mixing
        anchors = batch["rows"][: len(batch["rows"]) // batch["n_columns"]]
        assert len(set(anchors)) == len(anchors), "duplicate texts within one batch"


def test_per_dataset_loss_and_scored_pairs(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "sts.jsonl", scored_rows(16))
    recipe = _recipe(tmp_path, tiny_model_dir,
                     datasets=[{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"},
                               {"name": "sts", "path": "sts.jsonl", "format": "scored_pairs",
                                "loss": {"name": "cosent"}}])
    result = train(recipe)
    assert result.global_step == 5  # 3 pair batches + 2 sts batches


def test_incompatible_loss_and_format_rejected_before_training(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "sts.jsonl", scored_rows(4))
    recipe = _recipe(tmp_path, tiny_model_dir,
                     datasets=[{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}])
    with pytest.raises(RecipeError) as info:
        train(recipe)
    assert "cannot train on 'scored_pairs'" in str(info.value) and info.value.field == "loss"
    assert not (tmp_path / "out").exists()


def test_unknown_loss_and_param_suggest(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir, loss={"name": "mnlr"})
    with pytest.raises(RecipeError, match="Did you mean 'mnrl'"):
        train(recipe)
    recipe = _recipe(tmp_path, tiny_model_dir, loss={"name": "mnrl", "params": {"temprature": 0.1}})
    with pytest.raises(RecipeError) as info:
        train(recipe)
    assert "Did you mean 'temperature'" in str(info.value) and info.value.field == "loss.params.temprature"
    assert info.value.line is not None


def test_missing_model_path_names_recipe_line(tmp_path):
    recipe = _recipe(tmp_path, tmp_path / "no_such_model")
    with pytest.raises(CheckpointError) as info:
        train(recipe)
    assert info.value.field == "model.name_or_path" and info.value.line == 2


def test_missing_data_file_names_recipe_line(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir,
                     datasets=[{"name": "x", "path": "missing.jsonl", "format": "pairs"}])
    with pytest.raises(Exception) as info:
        train(recipe)
    assert "missing.jsonl" in str(info.value) and info.value.field == "datasets[0].path"


def test_existing_checkpoints_need_resume_or_overwrite(tmp_path, tiny_model_dir):
    recipe = _recipe(tmp_path, tiny_model_dir)
    train(recipe)
    with pytest.raises(RecipeError, match="--resume"):
        train(recipe)
    assert train(recipe, overwrite=True).global_step == 3


def test_sts_evaluators_before_and_after(tmp_path, tiny_model_dir):
    write_rows(tmp_path / "dev.jsonl", scored_rows(20))
    recipe = _recipe(tmp_path, tiny_model_dir, evaluators=[{"name": "dev", "path": "dev.jsonl"}])
    result = train(recipe)
    assert set(result.scores_before) == {"dev"} and set(result.scores_after) == {"dev"}
    assert -100 <= result.scores_after["dev"] <= 100
    assert result.scores_before["dev"] != result.scores_after["dev"]


def test_trainer_state_json_written(tmp_path, tiny_model_dir):
    result = train(_recipe(tmp_path, tiny_model_dir))
    state = json.loads((result.output_dir / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
