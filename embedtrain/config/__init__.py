"""Recipe schema and loading."""

from embedtrain.config.loading import load_recipe
from embedtrain.config.recipe import DatasetConfig, EvaluatorConfig, LossConfig, ModelConfig, Recipe

__all__ = ["DatasetConfig", "EvaluatorConfig", "LossConfig", "ModelConfig", "Recipe", "load_recipe"]
