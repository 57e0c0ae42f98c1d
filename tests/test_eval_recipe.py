"""A recipe's ``eval:`` section: checked when the recipe loads, run on the final model after training."""

from __future__ import annotations

import json

import pytest
from eval_helpers import write_task_config
from helpers import pair_rows, write_recipe, write_rows

from embedtrain.api import train
from embedtrain.errors import DataError, RecipeError
from embedtrain.evaluation.results import load_summary
from embedtrain.evaluation.runner import evaluate_checkpoint
from embedtrain.schema import load_recipe


def _recipe_dict(tmp_path, model_dir, eval_section: dict) -> dict:
    write_rows(tmp_path / "pairs.jsonl", pair_rows(16))
    write_task_config(tmp_path)  # tiny_tasks.yaml + data/ next to the recipe
    return {
        "model": {"name_or_path": str(model_dir)},
        "datasets": [{"name": "pairs", "path": "pairs.jsonl", "format": "pairs"}],
        "loss": {"name": "mnrl"},
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 1e-3,
                     "save_strategy": "no"},
        "output_dir": str(tmp_path / "out"),
        "seed": 1,
        "eval": eval_section,
    }


def test_recipe_eval_section_runs_on_the_final_model(tmp_path, tiny_model_dir):
    recipe = load_recipe(write_recipe(tmp_path / "recipe.yaml", _recipe_dict(
        tmp_path, tiny_model_dir, {"tasks": ["TinySTS", "TinyRetrieval"], "task_config": ["tiny_tasks.yaml"],
                                   "dims": [16, 32], "batch_size": 8})))
    result = train(recipe)
    final = result.final_dir
    out = final / "eval"
    summary = load_summary(final)
    assert summary.checkpoint == str(final) and list(summary.scores) == ["TinySTS", "TinyRetrieval"]
    assert (out / "summary.md").is_file() and (out / "grid.png").is_file()
    assert [c["dim"] for c in json.loads((out / "grid.json").read_text())["scores"]["TinySTS"]] == [16, 32]
    # the scores are those of the trained weights (not of the starting model)
    again = evaluate_checkpoint(final, tasks=["TinySTS", "TinyRetrieval"],
                                task_configs=[tmp_path / "tiny_tasks.yaml"], output=tmp_path / "again",
                                show_progress=False)
    assert again.summary.fingerprint == summary.fingerprint
    assert {k: v.value for k, v in again.summary.scores.items()} == \
        pytest.approx({k: v.value for k, v in summary.scores.items()}, abs=1e-3)
    start = evaluate_checkpoint(tiny_model_dir, tasks=["TinySTS", "TinyRetrieval"],
                                task_configs=[tmp_path / "tiny_tasks.yaml"], output=tmp_path / "start",
                                show_progress=False)
    assert start.summary.fingerprint != summary.fingerprint


def test_task_adapter_recipe_runs_its_eval_section_too(tmp_path, tiny_model_dir):
    """Task-adapter training goes through the same run loop: its ``eval:`` section runs after training."""
    data = _recipe_dict(tmp_path, tiny_model_dir, {"tasks": ["TinySTS"], "task_config": ["tiny_tasks.yaml"],
                                                   "batch_size": 8})
    lora = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}
    data["tasks"] = [{"name": "text-matching", "lora": lora, "datasets": data.pop("datasets"), "loss": data.pop("loss")}]
    result = train(load_recipe(write_recipe(tmp_path / "recipe.yaml", data)))
    summary = load_summary(result.final_dir)
    assert list(summary.scores) == ["TinySTS"] and (result.final_dir / "eval" / "summary.md").is_file()


def test_recipe_eval_errors_fail_before_training(tmp_path, tiny_model_dir):
    from embedtrain.api import validate

    data = _recipe_dict(tmp_path, tiny_model_dir, {"tasks": ["TinySTs"], "task_config": ["tiny_tasks.yaml"]})
    path = write_recipe(tmp_path / "recipe.yaml", data)
    with pytest.raises(RecipeError) as err:
        validate(path)
    assert "recipe.yaml" in str(err.value) and "eval.tasks" in str(err.value)
    assert "Did you mean 'TinySTS'" in str(err.value)

    data["eval"] = {"tasks": ["TinySTS"], "task_config": ["missing.yaml"]}
    with pytest.raises(RecipeError, match=r"task config file not found.*|missing\.yaml"):
        validate(write_recipe(path, data))

    data["eval"] = {"tasks": ["TinySTS"], "task_config": ["tiny_tasks.yaml"]}
    with (tmp_path / "data" / "sts.jsonl").open("a") as fh:
        fh.write('{"s1": "a", "s2": "b"}\n')
    n = len((tmp_path / "data" / "sts.jsonl").read_text().splitlines())
    with pytest.raises(DataError, match=rf"sts\.jsonl:{n}.*sim"):
        validate(write_recipe(path, data))
    with pytest.raises(DataError, match=rf"sts\.jsonl:{n}.*sim"):
        train(write_recipe(path, data))
    assert not (tmp_path / "out").exists()  # nothing was trained
