"""Starbucks / 2DMSE recipes train end to end (GradCache inner loss, hard negatives) through ``train``."""

from __future__ import annotations

import pytest
import torch
from helpers import write_recipe, write_rows
from sentence_transformers import SentenceTransformer

from embedtrain.api import train
from embedtrain.errors import RecipeError
from embedtrain.schema import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def hard_negative_rows(n: int) -> list[dict]:
    return [{"query": f"what is item {i} made of", "positive": f"item {i} is made of material {i * 7 % 13}",
             "negatives": [f"item {i + 1} is blue", f"the colour of thing {i} is red"]} for i in range(n)]


def recipe_for(tmp_path, model_dir, loss):
    write_rows(tmp_path / "hn.jsonl", hard_negative_rows(16))
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "hn", "path": "hn.jsonl", "format": "hard_negatives"}],
        "loss": loss,
        "training": {"per_device_train_batch_size": 8, "max_steps": 2, "save_steps": 2, "logging_steps": 1,
                     "learning_rate": 1e-3},
        "output_dir": str(tmp_path / "out"),
    }))


@pytest.mark.parametrize("name,params", [("starbucks", {"kl_weight": 0.5}), ("matryoshka2d", {"kl_weight": 0.5}),
                                         ("matryoshka", {"dims": [32, 16, 8]})])
def test_recipe_trains_with_cached_mnrl_and_hard_negatives(tmp_path, tiny_model_factory, name, params):
    model_dir = tiny_model_factory(num_layers=4, hidden_size=32)
    recipe = recipe_for(tmp_path, model_dir, {"name": name, "params": params,
                                              "inner": {"name": "cached_mnrl", "params": {"mini_batch_size": 4}}})
    result = train(recipe)
    assert result.global_step == 2
    trained = SentenceTransformer(str(result.final_dir), device="cpu")
    start = SentenceTransformer(str(model_dir), device="cpu")
    assert not torch.allclose(torch.tensor(start.encode(["hello"])), torch.tensor(trained.encode(["hello"])))
    assert "forward" not in trained.__dict__


def test_recipe_pair_errors_name_the_loss_line(tmp_path, tiny_model_factory):
    model_dir = tiny_model_factory(num_layers=4, hidden_size=32)
    recipe = recipe_for(tmp_path, model_dir, {"name": "starbucks", "params": {"pairs": [[2, 16], [6, 32]]},
                                              "inner": {"name": "mnrl"}})
    with pytest.raises(RecipeError, match="layer 6 is outside 1..4") as info:
        train(recipe)
    lines = (tmp_path / "recipe.yaml").read_text().splitlines()
    assert lines[info.value.line - 1].strip().startswith("pairs:") and info.value.field == "loss.params.pairs"


def test_wrapper_without_inner_is_rejected_before_training(tmp_path, tiny_model_factory):
    model_dir = tiny_model_factory(num_layers=4, hidden_size=32)
    recipe = recipe_for(tmp_path, model_dir, {"name": "starbucks"})
    with pytest.raises(RecipeError, match="wraps another one"):
        train(recipe)
