"""Task recipes: validation with file/line/field errors, and one training run of several adapters."""

from __future__ import annotations

import pytest
import torch
from helpers import pair_rows, scored_rows, write_recipe, write_rows
from safetensors.torch import load_file

from embedtrain.api import train
from embedtrain.errors import DataError, RecipeError
from embedtrain.models import load_model
from embedtrain.schema import load_recipe
from embedtrain.train.tasks import prepare_tasks, router_mapping

LORA = {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}


def _task_recipe(tmp_path, model_dir, **changes) -> dict:
    write_rows(tmp_path / "pairs.jsonl", pair_rows(24))
    write_rows(tmp_path / "sts.jsonl", scored_rows(24))
    recipe = {
        "model": {"name_or_path": str(model_dir)},
        "tasks": [
            {"name": "retrieval.query", "prompt": "query: ", "aliases": ["query"],
             "passage_task": "retrieval.passage", "lora": LORA,
             "datasets": [{"name": "qa", "path": "pairs.jsonl", "format": "pairs"}], "loss": {"name": "mnrl"}},
            {"name": "retrieval.passage", "prompt": "passage: ", "aliases": ["document"], "lora": LORA},
            {"name": "text-matching", "lora": LORA,
             "datasets": [{"name": "sts", "path": "sts.jsonl", "format": "scored_pairs"}],
             "loss": {"name": "cosent"}, "evaluators": [{"name": "sts-check", "path": "sts.jsonl"}]},
            {"name": "classification", "lora": LORA},
        ],
        "training": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "logging_steps": 1,
                     "learning_rate": 5e-3, "save_steps": 3, "report_to": "none"},
        "output_dir": str(tmp_path / "out"),
        "seed": 3,
    }
    recipe.update(changes)
    return recipe


def _load(tmp_path, recipe):
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", recipe))


def test_router_mapping_sends_passage_columns_to_the_passage_task(tmp_path, tiny_model_dir):
    recipe = _load(tmp_path, _task_recipe(tmp_path, tiny_model_dir))
    prepared = prepare_tasks(recipe)
    assert [p.config.name for p in prepared] == ["qa", "sts"]
    assert router_mapping(recipe, prepared) == {
        "qa": {"anchor": "retrieval.query", "positive": "retrieval.passage"},
        "sts": {"sentence1": "text-matching", "sentence2": "text-matching"},
    }


def test_training_changes_only_the_adapters_that_get_data(tmp_path, tiny_model_dir):
    recipe = _load(tmp_path, _task_recipe(tmp_path, tiny_model_dir))
    result = train(recipe)
    final = result.final_dir
    base = load_file(str(final / "model.safetensors"))
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert all(torch.equal(base[k], original[k]) for k in original)  # the base is frozen

    def lora_b_norm(adapter: str) -> float:
        weights = load_file(str(final / "adapters" / adapter / "adapter_model.safetensors"))
        return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)

    for adapter in ("retrieval_query", "retrieval_passage", "text-matching"):
        assert lora_b_norm(adapter) > 0, adapter  # trained (LoRA B starts at zero)
    assert lora_b_norm("classification") == 0.0  # no data -> untouched
    assert "text-matching/sts-check" in result.scores_after
    assert (final / "embedtrain_recipe.yaml").is_file()

    model = load_model(final, device="cpu")
    texts = ["what is item 3 made of"]
    assert not torch.allclose(torch.tensor(model.encode(texts, task="query")),
                              torch.tensor(model.encode(texts, task="document")))
    checkpoint = load_model(result.output_dir / "checkpoint-3", device="cpu")  # mid-run checkpoints load too
    assert type(checkpoint[0]).__name__ == "TaskAdapterTransformer"


def test_validate_cli_lists_task_datasets(tmp_path, tiny_model_dir, capsys):
    from embedtrain.cli.app import run_app

    path = write_recipe(tmp_path / "recipe.yaml", _task_recipe(tmp_path, tiny_model_dir))
    run_app(["validate", str(path)])
    printed = capsys.readouterr().out
    assert "qa: 24 rows" in printed and "sts: 24 rows" in printed and "recipe OK" in printed


def test_task_dataset_errors_name_the_task_location(tmp_path, tiny_model_dir):
    recipe = _task_recipe(tmp_path, tiny_model_dir)
    recipe["tasks"][2]["datasets"][0]["path"] = "missing.jsonl"
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    with pytest.raises(DataError) as err:
        prepare_tasks(load_recipe(path))
    lines = path.read_text().splitlines()
    assert err.value.field == "tasks[2].datasets[0].path"
    assert "missing.jsonl" in lines[err.value.line - 1]

    recipe = _task_recipe(tmp_path, tiny_model_dir)
    recipe["tasks"][2]["loss"] = {"name": "mnrl"}  # cannot train on scored pairs
    with pytest.raises(RecipeError) as err:
        prepare_tasks(_load(tmp_path, recipe))
    assert err.value.field == "tasks[2].loss" and "scored_pairs" in str(err.value)

    recipe = _task_recipe(tmp_path, tiny_model_dir)
    del recipe["tasks"][2]["loss"]
    with pytest.raises(RecipeError, match="no loss for this dataset") as err:
        prepare_tasks(_load(tmp_path, recipe))
    assert err.value.field == "tasks[2].datasets[0]"


@pytest.mark.parametrize("change, message", [
    (lambda r: r["tasks"][0].update(passage_task="retrieval.doc"), "passage_task 'retrieval.doc' is not a task"),
    (lambda r: r["tasks"][1].update(aliases=["query"]), "alias 'query' is already"),
    (lambda r: r["tasks"][3].update(lora={"r": 4, "alpha": 8}, adapter="text-matching"), "share adapter"),
    (lambda r: r["tasks"][0].update(lora={"alpah": 4}), "unknown key 'alpah'. Did you mean 'alpha'"),
    (lambda r: r.update(tasks=[]), "at least 1 item"),
])
def test_task_section_validation(tmp_path, tiny_model_dir, change, message):
    recipe = _task_recipe(tmp_path, tiny_model_dir)
    change(recipe)
    with pytest.raises(RecipeError, match=message) as err:
        _load(tmp_path, recipe)
    assert err.value.line is not None


def test_recipes_without_tasks_still_need_datasets_and_loss(tmp_path, tiny_model_dir):
    base = {"model": {"name_or_path": str(tiny_model_dir)}, "output_dir": str(tmp_path / "o")}
    with pytest.raises(RecipeError, match="at least one dataset is required"):
        _load(tmp_path, {**base, "loss": {"name": "mnrl"}})
    write_rows(tmp_path / "pairs.jsonl", pair_rows(4))
    with pytest.raises(RecipeError, match="loss.*required field is missing"):
        _load(tmp_path, {**base, "datasets": [{"name": "a", "path": "pairs.jsonl", "format": "pairs"}]})
    recipe = _task_recipe(tmp_path, tiny_model_dir, datasets=[{"name": "a", "path": "pairs.jsonl", "format": "pairs"}])
    with pytest.raises(RecipeError, match="move these datasets under a task"):
        prepare_tasks(_load(tmp_path, recipe))
