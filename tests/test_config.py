"""Recipe loading: valid recipes, and every class of bad input names file, line and field."""

from __future__ import annotations

import pytest
from helpers import pair_rows, write_recipe, write_rows

from embedtrain.errors import RecipeError
from embedtrain.schema import load_recipe

BASE = """\
model:
  name_or_path: all-MiniLM-L6-v2
datasets:
  - name: pairs
    path: pairs.jsonl
    format: pairs
loss:
  name: mnrl
  params:
    scale: 20
training:
  per_device_train_batch_size: 8
output_dir: out
"""


@pytest.fixture
def recipe_dir(tmp_path):
    write_rows(tmp_path / "pairs.jsonl", pair_rows(10))
    return tmp_path


def test_valid_recipe_loads_and_resolves_paths(recipe_dir):
    recipe = load_recipe(write_recipe(recipe_dir / "r.yaml", BASE))
    assert recipe.datasets[0].format == "pairs"
    assert recipe.resolve_path(recipe.datasets[0].path) == recipe_dir / "pairs.jsonl"
    assert recipe.line_of("loss", "params", "scale") == 10


def test_overrides_apply_yaml_values(recipe_dir):
    recipe = load_recipe(write_recipe(recipe_dir / "r.yaml", BASE),
                         ["training.max_steps=7", "loss.params.scale=30.5", "seed=3"])
    assert recipe.training["max_steps"] == 7
    assert recipe.loss.params["scale"] == 30.5
    assert recipe.seed == 3


def test_malformed_yaml_names_line(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE.replace("  name: mnrl", "  name: [mnrl"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "malformed YAML" in str(info.value)
    assert info.value.file == str(path) and info.value.line is not None and info.value.line >= 8


def test_unknown_top_level_key_suggests(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE + "sed: 3\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert "unknown key 'sed'" in msg and "Did you mean 'seed'" in msg
    assert info.value.line == 14 and info.value.field == "sed"


def test_unknown_nested_key_suggests(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE.replace("    format: pairs", "    format: pairs\n    colums: {}"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "Did you mean 'columns'" in str(info.value)
    assert info.value.field == "datasets[0].colums" and info.value.line == 7


def test_unknown_training_argument_suggests(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE.replace("per_device_train_batch_size", "per_device_train_bach_size"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "Did you mean 'per_device_train_batch_size'" in str(info.value)
    assert info.value.line == 12 and info.value.field == "training.per_device_train_bach_size"


def test_wrong_type_names_field_and_line(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE + "seed: not-a-number\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.field == "seed" and info.value.line == 14


def test_bad_format_value(recipe_dir):
    path = write_recipe(recipe_dir / "r.yaml", BASE.replace("format: pairs", "format: quadruples"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.field == "datasets[0].format" and info.value.line == 6


def test_missing_required_section(recipe_dir):
    text = BASE.replace("loss:\n  name: mnrl\n  params:\n    scale: 20\n", "")
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(recipe_dir / "r.yaml", text))
    assert info.value.field == "loss" and "missing" in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_duplicate_dataset_names_rejected(recipe_dir):
    text = BASE.replace("datasets:\n", "datasets:\n  - {name: pairs, path: pairs.jsonl, format: pairs}\n")
    with pytest.raises(RecipeError, match="used twice"):
        load_recipe(write_recipe(recipe_dir / "r.yaml", text))


def test_document_is_accepted_for_the_passage_prompt(recipe_dir):
    text = BASE + "prompts: {query: 'q: ', document: 'd: '}\n"
    recipe = load_recipe(write_recipe(recipe_dir / "r.yaml", text))
    assert recipe.prompts.passage == "d: "
