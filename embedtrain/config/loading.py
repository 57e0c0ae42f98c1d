"""Read a recipe YAML into a validated :class:`~embedtrain.config.recipe.Recipe`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from embedtrain.config.base import check_known_keys, load_config_file, parse_overrides
from embedtrain.config.recipe import Recipe

__all__ = ["load_recipe", "parse_overrides", "training_arg_names", "validate_training_args"]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe; raise :class:`RecipeError` naming file, line and field on any problem.

    ``overrides`` are ``dotted.key=value`` strings applied on top of the file (``training.max_steps=10``).
    """
    recipe = load_config_file(Recipe, path, overrides)
    validate_training_args(recipe)
    if recipe.eval is not None:  # unknown tasks / bad eval data fail now, not after training
        from embedtrain.evaluation.config import check_eval_section

        check_eval_section(recipe)
    return recipe


def training_arg_names() -> set[str]:
    """Field names accepted by ``SentenceTransformerTrainingArguments``."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    return {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}


def validate_training_args(recipe: Recipe) -> None:
    """Reject unknown keys under ``training:`` with a suggestion, before anything is built."""
    check_known_keys(recipe, "training", recipe.training, training_arg_names(), "training argument")
